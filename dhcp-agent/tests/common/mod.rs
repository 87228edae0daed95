//! Shared pieces of the integration tests: the agent as a child process in the lab.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use dhcp_lab::{Lab, Netns, ROUTER_IFACE, v6::AgentLab, wait_for};
use serde_json::Value;

/// The agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_dhcp-agent");

/// A `dhcp-agent` running in a namespace, its output collected as it comes.
pub struct Agent {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Agent {
    /// Starts `dhcp-agent ARGS` in `ns` and waits until it reports that it is watching.
    pub fn start(ns: &Netns, args: &[&str]) -> Agent {
        Agent::start_under(ns, &[], args)
    }

    /// Starts `LAUNCHER... dhcp-agent ARGS` in `ns`, where the launcher (`setpriv ...`) execs
    /// the agent, so the child's pid is the agent's; waits until it reports that it is watching.
    pub fn start_under(ns: &Netns, launcher: &[String], args: &[&str]) -> Agent {
        let mut command = match launcher.split_first() {
            Some((program, rest)) => {
                let mut command = ns.command(program);
                command.args(rest).arg(AGENT);
                command
            }
            None => ns.command(AGENT),
        };
        let mut child = command
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dhcp-agent");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let agent = Agent {
            child,
            stdout,
            stderr,
        };
        let ready = wait_for(Duration::from_secs(20), || {
            agent.stderr_text().contains("watching") || agent.stderr_text().contains("dhcp-agent:")
        });
        assert!(
            ready.is_ok() && agent.stderr_text().contains("watching"),
            "agent did not start: {}",
            agent.stderr_text()
        );
        agent
    }

    /// The agent's process id (a launcher execs it: same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Parsed JSON lines so far.
    pub fn records(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Waits until a record satisfies `pred`; returns it.
    pub fn wait_record(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        let _ = wait_for(Duration::from_secs(15), || {
            found = self.records().into_iter().find(|r| pred(r));
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {what} seen; records:\n{}\nstderr:\n{}",
                self.lines().join("\n"),
                self.stderr_text()
            )
        })
    }

    /// Waits until the agent's stderr has `text`.
    pub fn wait_stderr(&self, text: &str) {
        if wait_for(Duration::from_secs(15), || {
            self.stderr_text().contains(text)
        })
        .is_err()
        {
            panic!("no {text:?} in stderr:\n{}", self.stderr_text());
        }
    }

    /// SIGTERM, then waits for a clean exit; returns stderr.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        thread::sleep(Duration::from_millis(100)); // let the reader threads drain
        let stderr = self.stderr_text();
        assert!(status.success(), "agent exited with {status}: {stderr}");
        stderr
    }
}

impl Agent {
    /// SIGKILL, as the OOM killer or a crash ends it: nothing runs after; returns stderr.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        thread::sleep(Duration::from_millis(100)); // let the reader threads drain
        self.stderr_text()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field `key` of a record as a string ("" when null or absent).
pub fn s<'a>(record: &'a Value, key: &str) -> &'a str {
    record.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `dhcp-agent watch --json` on the lab's router, over its guest interface and `lo`.
pub fn start_watch(lab: &Lab, extra: &[&str]) -> Agent {
    let mut args = vec!["watch", "--json", "--iface", ROUTER_IFACE, "--iface", "lo"];
    args.extend_from_slice(extra);
    Agent::start(&lab.router, &args)
}

/// `dhcp-agent run --json` on the lab's router, over its guest interface and `lo`, with the
/// lab's lease file, its server's configuration and a state file in the lab's directory.
pub fn start_run(lab: &impl AgentLab, extra: &[&str]) -> Agent {
    let args = run_args(lab, &lab.dir().join("state.json"), extra);
    Agent::start(
        lab.router(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// The command line of [`start_run`], with the state file at `state`.
pub fn run_args(lab: &impl AgentLab, state: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["run".to_owned()];
    args.extend(lab.agent_run_options());
    args.extend([
        "--state-file".to_owned(),
        state.to_str().unwrap().to_owned(),
    ]);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// The capabilities the README documents for `watch` and `run`, as setpriv names them.
pub const DOCUMENTED_CAPS: [&str; 3] = ["bpf", "perfmon", "net_admin"];

/// A `setpriv` command line that execs its argument with exactly `caps` (setpriv names:
/// `bpf`, `net_admin`, ...) in every capability set that passes them on: as root (the
/// bounding set limits what root's exec gets), or as `nobody` with `caps` ambient, which is
/// how systemd's AmbientCapabilities= starts a service under its own user.
pub fn setpriv_with(caps: &[&str], as_nobody: bool) -> Vec<String> {
    let list = |base: &str| {
        std::iter::once(base.to_owned())
            .chain(caps.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = vec!["setpriv".to_owned()];
    if as_nobody {
        args.extend(["--reuid=65534", "--regid=65534", "--clear-groups"].map(str::to_owned));
        args.push(format!("--inh-caps={}", list("-all")));
        args.push(format!("--ambient-caps={}", list("-all")));
    } else {
        args.push("--inh-caps=-all".to_owned());
    }
    args.push(format!("--bounding-set={}", list("-all")));
    args
}

/// Where `run` serves metrics by default, inside the lab's router namespace.
pub const METRICS_URL: &str = "http://127.0.0.1:9967/metrics";

/// One scrape of the agent's metrics in the lab's router namespace.
pub fn scrape(lab: &Lab) -> String {
    let (status, body) =
        dhcp_lab::prometheus::http_get(lab.router.name(), METRICS_URL, &[]).expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `name{labels...}` (all given labels must match) in a scrape.
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        if !(rest.is_empty() || rest.starts_with('{')) {
            return None; // a longer name with the same prefix
        }
        labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

/// An expected sample: its name, some of its labels, and the range its value must be in.
pub type Want<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    std::ops::RangeInclusive<f64>,
);

/// Waits until every expected sample has a value in its range; fails with the whole scrape.
pub fn wait_samples(lab: &Lab, expected: &[Want]) -> String {
    let mut last = String::new();
    let good = |text: &str, (name, labels, range): &Want| {
        sample(text, name, labels).is_some_and(|v| range.contains(&v))
    };
    let done = wait_for(Duration::from_secs(20), || {
        last = scrape(lab);
        expected.iter().all(|want| good(&last, want))
    });
    if done.is_err() {
        let wrong: Vec<String> = expected
            .iter()
            .filter(|want| !good(&last, want))
            .map(|(name, labels, range)| {
                format!(
                    "{name}{labels:?}: want {range:?}, got {:?}",
                    sample(&last, name, labels)
                )
            })
            .collect();
        panic!("{}\nscrape:\n{last}", wrong.join("\n"));
    }
    last
}

/// A client message as the VM's interface would send it.
pub fn from_vm(spec: &dhcp_lab::frames::Dhcpv4Spec, src_mac: [u8; 6]) -> Vec<u8> {
    dhcp_lab::frames::client_broadcast(spec, src_mac).expect("frame")
}

/// One scrape of the agent's metrics at the default address ([`METRICS_URL`]) inside `ns`
/// (each lab's router namespace has its own loopback, so agents of different labs never
/// collide on the port).
pub fn scrape_in(ns: &Netns) -> String {
    let (status, body) =
        dhcp_lab::prometheus::http_get(ns.name(), METRICS_URL, &[]).expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the metric of the agent in `ns` has a value in `range`; fails with the scrape.
pub fn wait_metric_in(
    ns: &Netns,
    name: &str,
    labels: &[(&str, &str)],
    range: std::ops::RangeInclusive<f64>,
) {
    let mut last = String::new();
    let reached = wait_for(Duration::from_secs(10), || {
        last = scrape_in(ns);
        sample(&last, name, labels).is_some_and(|v| range.contains(&v))
    });
    assert!(
        reached.is_ok(),
        "{name}{labels:?}: want {range:?}, got {:?}\n{last}",
        sample(&last, name, labels)
    );
}

/// [`wait_metric_in`] for one value.
pub fn wait_metric(ns: &Netns, name: &str, labels: &[(&str, &str)], value: f64) {
    wait_metric_in(ns, name, labels, value..=value);
}
