//! Which interfaces the agent attaches to. `--iface` values are exact names or glob patterns
//! (`*`, `?`), and `!PATTERN` excludes; without any value that includes, a default set
//! applies: every interface that is up, or on a router whose dnsmasq configuration the agent
//! reads, every interface dnsmasq serves ([`ServedLinks`]); `lo` is in either (`dhcp_release`'s
//! RELEASEs cross only it). Nothing here touches the system: the links are handed in
//! ([`super::iface::links`] lists them), so every rule is unit-tested.
//!
//! The order of the values does not matter: an interface is selected when it matches an
//! include (or there are only excludes and the default set holds it) and no exclude.
use std::{fmt, net::Ipv4Addr};

use dhcp_engine::dnsmasq_conf::{ServedBy, ServedLinks};
use thiserror::Error;

/// The longest interface name Linux takes (IFNAMSIZ less the NUL).
const MAX_NAME_BYTES: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectionError {
    #[error("empty interface name or pattern")]
    Empty,
    #[error("interface pattern {pattern:?}: {reason}")]
    Invalid {
        pattern: String,
        reason: &'static str,
    },
}

/// An interface name or a glob pattern over names: `*` matches any run of characters
/// (none too), `?` exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Checks `text` against what an interface name can be (Linux's `dev_valid_name`: at most
    /// 15 bytes, no `/`, `:` or white space, not `.` or `..`), so a typo is an error at start
    /// rather than a pattern that never matches.
    pub fn parse(text: &str) -> Result<Pattern, SelectionError> {
        let invalid = |reason| SelectionError::Invalid {
            pattern: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(SelectionError::Empty);
        }
        if text
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(invalid("no interface name has a '/', ':' or white space"));
        }
        if text.contains('[') {
            return Err(invalid(
                "character classes ([...]) are not supported; use '*' and '?'",
            ));
        }
        if text == "." || text == ".." {
            return Err(invalid("not an interface name"));
        }
        if text.bytes().filter(|&b| b != b'*').count() > MAX_NAME_BYTES {
            return Err(invalid("longer than an interface name can be (15 bytes)"));
        }
        Ok(Pattern(text.to_owned()))
    }

    /// A plain name, no wildcard.
    pub fn is_exact(&self) -> bool {
        !self.0.contains(['*', '?'])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` and `?` over bytes; on a mismatch after a `*`, that `*` takes one more byte (the
/// classic linear-backtracking match: only the last `*` is ever revisited).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One `--iface` value as clap checks it: the value itself, once it parses.
pub fn parse_iface_arg(text: &str) -> Result<String, String> {
    let pattern = text.strip_prefix('!').unwrap_or(text);
    match Pattern::parse(pattern) {
        Ok(_) => Ok(text.to_owned()),
        Err(SelectionError::Empty) if text.starts_with('!') => {
            Err("'!' needs an interface name or pattern after it".into())
        }
        Err(err) => Err(err.to_string()),
    }
}

/// The `--iface` values, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl Selection {
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Selection, SelectionError> {
        let mut selection = Selection::default();
        for value in values {
            let value = value.as_ref();
            match value.strip_prefix('!') {
                Some(rest) => {
                    selection
                        .exclude
                        .push(Pattern::parse(rest).map_err(|e| match e {
                            SelectionError::Empty => SelectionError::Invalid {
                                pattern: value.to_owned(),
                                reason: "'!' needs an interface name or pattern after it",
                            },
                            other => other,
                        })?)
                }
                None => selection.include.push(Pattern::parse(value)?),
            }
        }
        Ok(selection)
    }

    /// Whether any value includes (else the default set applies, less the excludes).
    pub fn has_includes(&self) -> bool {
        !self.include.is_empty()
    }

    /// The first include matching `name`.
    pub fn included_by(&self, name: &str) -> Option<&Pattern> {
        self.include.iter().find(|p| p.matches(name))
    }

    pub fn excludes(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| p.matches(name))
    }

    /// The includes that are plain names: each must exist at start (a typo stops the agent),
    /// and is watched while it is gone (`dhcp_interface_attached 0`) and re-attached when back.
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.include
            .iter()
            .filter(|p| p.is_exact())
            .map(Pattern::as_str)
    }
}

/// An interface as [`Selector::wants`] looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub loopback: bool,
    /// Its IPv4 addresses with their prefix lengths.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

/// The interfaces attached when no `--iface` value includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultSet {
    /// Every interface that is up (`watch`, and `run` without a dnsmasq configuration).
    Up,
    /// Every interface dnsmasq serves (`run --dnsmasq-conf` or `--dnsmasq-pid-file`); `None`
    /// until its configuration is read (a dnsmasq not started yet), and meanwhile every
    /// interface that is up.
    Served(Option<ServedLinks>),
}

/// Why an interface is selected, for the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Matches this `--iface` value.
    Named(String),
    /// The loopback device of the default set.
    Loopback,
    /// Up, in the default set of every interface up.
    Up,
    /// Served by dnsmasq.
    Served(ServedBy),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Named(pattern) => write!(f, "matches --iface {pattern}"),
            Why::Loopback => write!(f, "loopback, where dhcp_release's RELEASEs travel"),
            Why::Up => write!(f, "up"),
            Why::Served(by) => write!(f, "served: {by}"),
        }
    }
}

/// The selection and the default set it falls back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    selection: Selection,
    default: DefaultSet,
}

impl Selector {
    pub fn new(selection: Selection, default: DefaultSet) -> Selector {
        Selector { selection, default }
    }

    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// dnsmasq's configuration was read (again): what it serves now. Only a served default
    /// takes it.
    pub fn set_served(&mut self, served: Option<ServedLinks>) {
        if let DefaultSet::Served(current) = &mut self.default {
            *current = served;
        }
    }

    /// Whether `link` is to be attached, and why.
    pub fn wants(&self, link: &Link) -> Option<Why> {
        if self.selection.excludes(&link.name) {
            return None;
        }
        if self.selection.has_includes() {
            return self
                .selection
                .included_by(&link.name)
                .map(|p| Why::Named(p.to_string()));
        }
        if link.loopback {
            return Some(Why::Loopback);
        }
        match &self.default {
            DefaultSet::Served(Some(served)) => {
                served.serves(&link.name, &link.ipv4).map(Why::Served)
            }
            DefaultSet::Up | DefaultSet::Served(None) => link.up.then_some(Why::Up),
        }
    }

    /// Whether `name` is named exactly by an include (see [`Selection::exact_names`]).
    pub fn by_name(&self, name: &str) -> bool {
        self.selection.exact_names().any(|n| n == name)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |patterns: &[Pattern]| {
            patterns
                .iter()
                .map(Pattern::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.selection.has_includes() {
            write!(f, "interfaces matching {}", list(&self.selection.include))?;
        } else {
            match &self.default {
                DefaultSet::Up => write!(f, "every interface that is up, and lo")?,
                DefaultSet::Served(Some(_)) => write!(f, "every interface dnsmasq serves, and lo")?,
                DefaultSet::Served(None) => write!(
                    f,
                    "every interface that is up, and lo, until dnsmasq's configuration is read \
                     (then every interface it serves)"
                )?,
            }
        }
        if !self.selection.exclude.is_empty() {
            write!(f, ", except {}", list(&self.selection.exclude))?;
        }
        write!(f, "; interfaces coming and going are followed")
    }
}

#[cfg(test)]
mod tests {
    use dhcp_engine::dnsmasq_conf::{DnsmasqConfig, MemoryFiles};

    use super::*;

    fn link(name: &str, up: bool, ipv4: &[(Ipv4Addr, u8)]) -> Link {
        Link {
            name: name.into(),
            index: 1,
            up,
            loopback: name == "lo",
            ipv4: ipv4.to_vec(),
        }
    }

    /// The names of `links` that `values` over `default` select.
    fn selected<'a>(values: &[&str], default: DefaultSet, links: &'a [Link]) -> Vec<&'a str> {
        let selector = Selector::new(Selection::parse(values).unwrap(), default);
        links
            .iter()
            .filter(|l| selector.wants(l).is_some())
            .map(|l| l.name.as_str())
            .collect()
    }

    fn router() -> Vec<Link> {
        let a = |c| (Ipv4Addr::new(172, 29, c, 1), 24);
        vec![
            link("lo", true, &[(Ipv4Addr::LOCALHOST, 8)]),
            link("eth0", true, &[(Ipv4Addr::new(169, 254, 0, 9), 16)]),
            link("eth1", false, &[]),
            link("eth2", true, &[a(102)]),
            link("eth3", true, &[a(103)]),
            link("eth10", true, &[a(110)]),
            link("veth7", true, &[]),
        ]
    }

    #[test]
    fn globs_match_names() {
        for (pattern, name, matches) in [
            ("eth*", "eth3", true),
            ("eth*", "eth", true),
            ("eth*", "veth3", false),
            ("eth?", "eth3", true),
            ("eth?", "eth10", false),
            ("*0", "eth10", true),
            ("e*h*1", "eth1", true),
            ("e*h*1", "eth12", false),
            ("*", "lo", true),
            ("eth2", "eth2", true),
            ("eth2", "eth20", false),
            ("tap*-??", "tap00007120-00", true),
        ] {
            let p = Pattern::parse(pattern).unwrap();
            assert_eq!(p.matches(name), matches, "{pattern} {name}");
        }
    }

    #[test]
    fn bad_values_are_clear_errors() {
        assert_eq!(Selection::parse(&[""]), Err(SelectionError::Empty));
        for (value, reason) in [
            ("!", "'!' needs"),
            ("eth 0", "white space"),
            ("eth0:1", "':'"),
            ("a/b", "'/'"),
            ("eth[0-3]", "character classes"),
            ("..", "not an interface name"),
            ("a-very-long-interface-name", "15 bytes"),
        ] {
            let err = Selection::parse(&[value]).unwrap_err().to_string();
            assert!(err.contains(reason), "{value}: {err}");
            let err = parse_iface_arg(value).unwrap_err();
            assert!(err.contains(reason), "{value}: {err}");
        }
        assert_eq!(parse_iface_arg("!eth0").as_deref(), Ok("!eth0"));
        assert_eq!(parse_iface_arg("eth*").as_deref(), Ok("eth*"));
        // 15 bytes is an interface name; a '*' takes no room.
        assert!(Pattern::parse("tap00007120-00*").is_ok());
    }

    #[test]
    fn includes_and_excludes_do_not_depend_on_order() {
        let links = router();
        let one = selected(&["eth*", "!eth0", "!eth1"], DefaultSet::Up, &links);
        let other = selected(&["!eth1", "!eth0", "eth*"], DefaultSet::Up, &links);
        assert_eq!(one, ["eth2", "eth3", "eth10"]);
        assert_eq!(one, other);
        // An exclude wins over an exact include, whatever the order.
        assert_eq!(
            selected(&["eth2", "!eth*"], DefaultSet::Up, &links),
            Vec::<&str>::new()
        );
        // Explicit includes: lo only when selected, down interfaces too when named.
        assert_eq!(
            selected(&["eth1", "lo"], DefaultSet::Up, &links),
            ["lo", "eth1"]
        );
    }

    #[test]
    fn the_default_is_every_interface_up_and_lo_less_the_excludes() {
        let links = router();
        assert_eq!(
            selected(&[], DefaultSet::Up, &links),
            ["lo", "eth0", "eth2", "eth3", "eth10", "veth7"]
        );
        assert_eq!(
            selected(&["!veth*", "!eth0"], DefaultSet::Up, &links),
            ["lo", "eth2", "eth3", "eth10"]
        );
        // lo goes only when excluded by name.
        assert_eq!(
            selected(&["!lo"], DefaultSet::Up, &links),
            ["eth0", "eth2", "eth3", "eth10", "veth7"]
        );
    }

    /// A CloudStack VPC router: two tiers in cloud.conf (eth2, eth3), eth10 not (yet) a tier,
    /// dnsmasq excepting lo (which stays: dhcp_release's RELEASEs cross it).
    #[test]
    fn on_a_router_the_default_is_what_dnsmasq_serves_and_lo() {
        let text = "except-interface=lo\n\
                    dhcp-range=set:interface-eth2-0,172.29.102.1,static\n\
                    dhcp-range=set:interface-eth3-0,172.29.103.1,static\n\
                    listen-address=127.0.0.1,172.29.102.1,172.29.103.1\n";
        let files = MemoryFiles::default().with("/etc/dnsmasq.conf", text);
        let config = DnsmasqConfig::load("/etc/dnsmasq.conf".as_ref(), &files).unwrap();
        let served = DefaultSet::Served(Some(config.served_links()));
        let links = router();
        assert_eq!(
            selected(&[], served.clone(), &links),
            ["lo", "eth2", "eth3"]
        );
        assert_eq!(selected(&["!eth3"], served.clone(), &links), ["lo", "eth2"]);
        // Patterns replace the default.
        assert_eq!(
            selected(&["eth1*"], served.clone(), &links),
            ["eth1", "eth10"]
        );
        // Until the configuration is read: every interface up.
        assert_eq!(
            selected(&[], DefaultSet::Served(None), &links),
            selected(&[], DefaultSet::Up, &links)
        );
        // The configuration read again with eth10's tier: it is served now.
        let mut selector = Selector::new(Selection::default(), DefaultSet::Served(None));
        let eth10 = &links[5];
        let text = format!("{text}dhcp-range=set:interface-eth10-0,172.29.110.1,static\n");
        let files = MemoryFiles::default().with("/etc/dnsmasq.conf", text);
        let config = DnsmasqConfig::load("/etc/dnsmasq.conf".as_ref(), &files).unwrap();
        selector.set_served(Some(config.served_links()));
        assert_eq!(
            selector.wants(eth10).map(|w| w.to_string()).as_deref(),
            Some("served: holds 172.29.110.1/24, in dnsmasq's dhcp-range starting at 172.29.110.1")
        );
        assert!(selector.wants(&links[1]).is_none(), "eth0 is not served");
    }

    #[test]
    fn exact_names_are_watched_by_name() {
        let selector = Selector::new(
            Selection::parse(&["eth2", "eth*", "!eth0", "lo"]).unwrap(),
            DefaultSet::Up,
        );
        assert!(selector.by_name("eth2") && selector.by_name("lo"));
        assert!(!selector.by_name("eth3"), "matched by a pattern only");
        assert_eq!(
            selector.to_string(),
            "interfaces matching eth2, eth*, lo, except eth0; interfaces coming and going are followed"
        );
    }
}
