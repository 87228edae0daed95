//! A real Prometheus server (Debian's package) inside a lab namespace, scraping the agent there
//! and evaluating the project's alerting rules; and plain HTTP GETs from inside a namespace.
use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{Netns, netns, wait_for};

/// `GET url` from inside namespace `ns`: the status and the body (also for error statuses).
pub fn http_get(ns: &str, url: &str, query: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
    let url = url.to_owned();
    netns::inside(ns, || -> anyhow::Result<(u16, String)> {
        let mut request = ureq::get(&url).timeout(Duration::from_secs(5));
        for (name, value) in query {
            request = request.query(name, value);
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(err) => return Err(err).with_context(|| format!("GET {url}")),
        };
        let status = response.status();
        Ok((status, response.into_string()?))
    })?
}

pub struct Prometheus {
    ns: String,
    pub addr: String,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus in `ns` on 127.0.0.1:`port`, scraping `target` every second and
    /// evaluating `rule_files` every second; waits until it is ready.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        port: u16,
        target: &str,
        rule_files: &[&Path],
    ) -> anyhow::Result<Prometheus> {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\n\
             scrape_configs:\n  - job_name: dhcp-agent\n    static_configs:\n      - targets: ['{target}']\n",
            rules.join("\n")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let addr = format!("127.0.0.1:{port}");
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package prometheus)")?;
        let prometheus = Prometheus {
            ns: ns.name().to_owned(),
            addr,
            dir,
            child,
        };
        wait_for(Duration::from_secs(30), || {
            prometheus
                .get("/-/ready", &[])
                .is_ok_and(|(status, _)| status == 200)
        })
        .with_context(|| format!("prometheus did not get ready: {}", prometheus.log()))?;
        Ok(prometheus)
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
        http_get(&self.ns, &format!("http://{}{path}", self.addr), query)
    }

    fn api(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let (status, body) = self.get(path, query)?;
        let value: Value =
            serde_json::from_str(&body).with_context(|| format!("{path}: not JSON: {body}"))?;
        if status != 200 || value["status"] != "success" {
            bail!("{path} {query:?}: HTTP {status}: {body}");
        }
        Ok(value["data"].clone())
    }

    /// An instant query: each series' labels and value.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let data = self.api("/api/v1/query", &[("query", expr)])?;
        let mut out = Vec::new();
        for series in data["result"].as_array().into_iter().flatten() {
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no value in {series}"))?;
            out.push((series["metric"].clone(), value));
        }
        Ok(out)
    }

    /// The value of a query that yields one series, if it yields any.
    pub fn value(&self, expr: &str) -> anyhow::Result<Option<f64>> {
        Ok(self.query(expr)?.first().map(|(_, v)| *v))
    }

    /// Active alerts: name and state (`pending` or `firing`).
    pub fn alerts(&self) -> anyhow::Result<Vec<(String, String)>> {
        let data = self.api("/api/v1/alerts", &[])?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    }

    /// The rule groups as Prometheus loaded them (health and last error of each rule).
    pub fn rules(&self) -> anyhow::Result<Value> {
        self.api("/api/v1/rules", &[])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
