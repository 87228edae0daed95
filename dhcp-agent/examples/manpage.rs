//! Writes the Debian package's man pages into the directory given as the only argument:
//! `dhcp-agent.8` and one page per subcommand (`dhcp-agent-run.8`, ...), in section 8 (system
//! administration). They are rendered from the clap definitions, so they say what `--help`
//! says; the main page adds the capabilities (from `system.rs`), the events' journal fields
//! and MESSAGE_IDs (from `events.rs`) and files the service uses.
//! `cargo xtask dist` runs it; an example because only packaging needs clap_mangen.
use std::{fs, path::PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_mangen::Man;
use dhcp_agent::{cli::Cli, events, system};

const SECTION: &str = "8";

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: manpage OUT_DIR")?,
    );
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build(); // names subcommands `dhcp-agent-run` etc., as their pages are called
    for sub in cli.get_subcommands() {
        Man::new(sub.clone()).section(SECTION).generate_to(&out)?;
    }
    let man = Man::new(cli).section(SECTION);
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(extra_sections().as_bytes());
    let path = out.join(man.get_filename());
    fs::write(&path, page).with_context(|| format!("writing {}", path.display()))
}

/// CAPABILITIES, EVENTS (the journal's MESSAGE_IDs), FILES and SEE ALSO, in roff.
fn extra_sections() -> String {
    let mut roff = String::from(".SH CAPABILITIES\n");
    roff.push_str(
        "\\fBwatch\\fR and \\fBrun\\fR need exactly these capabilities to load and attach \
         their kernel programs (root has them); a missing one is named at start:\n",
    );
    for need in system::START_UP {
        roff.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}.\n",
            need.capability, need.purpose
        ));
    }
    let kept: Vec<String> = system::KEPT_AFTER_ATTACH
        .iter()
        .map(|c| format!("\\fB{c}\\fR"))
        .collect();
    roff.push_str(&format!(
        ".PP\nOnce attached, the agent keeps {} only, drops every other capability from all \
         its sets and sets no_new_privs. Repairs (\\fB--remediate\\fR) use plain UDP sockets \
         and need nothing more. \\fBrelease\\fR, \\fBleases\\fR and \\fBanalyze\\fR need none.\n",
        kept.join(" and ")
    ));
    roff.push_str(
        ".SH EVENTS\n\
         Under systemd (\\fBrun --events auto\\fR, the default, as the unit starts it) each event \
         is a journal entry of its own: \\fBMESSAGE\\fR its text line, one \\fBDHCP_\\fR\\fIFIELD\\fR \
         per field of its JSON (\\fBjournalctl -u dhcp-agent -o json DHCP_OUTCOME=dropped\\fR), \
         \\fBDHCP_HOST\\fR the name the hosts file gives the client, \\fBPRIORITY\\fR by kind and \
         outcome, and a \\fBMESSAGE_ID\\fR per kind:\n",
    );
    for (kind, id) in events::MESSAGE_IDS {
        roff.push_str(&format!(".TP\n\\fB{kind}\\fR\n{id}\n"));
    }
    roff.push_str(
        ".PP\nElsewhere (by hand, in a pipe) events are lines on stdout, JSON with \\fB--json\\fR; \
         so is an event the journal does not take (journald restarting), with a note on stderr.\n",
    );
    roff.push_str(
        ".SH FILES\n\
         .TP\n\\fI/etc/dhcp-agent/config.toml\\fR\n\
         Settings of \\fBrun\\fR as the systemd unit starts it (\\fB--config\\fR); refused if \
         anyone but root or the agent's user could change it.\n\
         .TP\n\\fI/usr/lib/systemd/system/dhcp-agent.service\\fR\n\
         The service: a dynamic user with the capabilities above, a read-only system.\n\
         .TP\n\\fI/var/lib/dhcp-agent/state.json\\fR\n\
         Pending and flagged releases of the service (\\fBleases --state-file\\fR).\n\
         .TP\n\\fI/var/lib/misc/dnsmasq.leases\\fR\n\
         dnsmasq's lease file, read and followed.\n\
         .SH SEE ALSO\n\
         \\fBdhcp-agent-run\\fR(8), \\fBdhcp-agent-watch\\fR(8), \\fBdhcp-agent-release\\fR(8), \
         \\fBdhcp-agent-leases\\fR(8), \\fBdhcp-agent-analyze\\fR(8), \\fBdnsmasq\\fR(8), \
         \\fBcapabilities\\fR(7), \\fBsystemd.exec\\fR(5)\n",
    );
    roff
}
