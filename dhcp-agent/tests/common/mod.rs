//! Shared pieces of the integration tests: the agent as a child process in the lab.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use dhcp_lab::{Lab, Netns, ROUTER_IFACE, wait_for};
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
        let mut child = ns
            .command(AGENT)
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
/// lab's lease file, dnsmasq configuration and a state file in the lab's directory.
pub fn start_run(lab: &Lab, extra: &[&str]) -> Agent {
    let leases = lab.lease_file();
    let conf = lab.dir.join("dnsmasq.conf");
    let state = lab.dir.join("state.json");
    let mut args = vec![
        "run",
        "--json",
        "--iface",
        ROUTER_IFACE,
        "--iface",
        "lo",
        "--grace",
        "1s",
        "--leases",
        leases.to_str().unwrap(),
        "--dnsmasq-conf",
        conf.to_str().unwrap(),
        "--state-file",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Agent::start(&lab.router, &args)
}
