//! The in-process micro-benchmarks: `cargo bench` runs dhcp-agent's Criterion benches
//! (`dhcp-agent/benches/{hooks,pipeline,leases}.rs`, whose docs say what each measures and name
//! the benchmark ids read here), and the figures are read back from what Criterion writes under
//! `<target>/criterion/<group>/<id>/new/`: the median from `estimates.json`, the spread from
//! the per-sample iteration counts and times of `sample.json`.
//!
//! Each bench also writes a small JSON report (`DHCP_BENCH_REPORT`) of what it did (events
//! counted, events lost, leases parsed), which the sanity checks read; timings are never
//! asserted.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use serde_json::Value;

use super::{Ctx, Figure, Target, number, sane};

pub fn hooks(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let report = run_bench(ctx, "hooks")?;
    for hook in ["xdp_ingress", "tc_egress"] {
        let (runs, events, lost) = (
            count(&report, &[hook, "dhcp_runs"]),
            count(&report, &[hook, "events"]),
            count(&report, &[hook, "lost"]),
        );
        sane(lost == 0, || format!("{hook}: {lost} events lost"))?;
        sane(runs > 0 && events == runs, || {
            format!("{hook}: {events} events for {runs} DHCP runs")
        })?;
    }
    let results = Results::read("hooks")?;
    let mut figures = Vec::new();
    for (prefix, label) in [("xdp", "XDP"), ("tc", "TC")] {
        let empty = results.get(&format!("{prefix}/empty"))?;
        let samples = empty.per_iteration.len();
        let kernel = "BPF_PROG_TEST_RUN, kernel-timed per run (whole ns, as the kernel reports)";
        let timing = format!("{kernel}, Criterion median of {samples} samples");
        let empty_program = format!(
            "`r0 = {}; exit`",
            if prefix == "xdp" {
                "XDP_PASS"
            } else {
                "TC_ACT_UNSPEC"
            }
        );
        figures.push(
            Figure::from_samples(
                "hook cost",
                format!("{label}, empty pass-through program"),
                "ns/packet",
                &empty.per_iteration,
                format!("{timing} of the 2-instruction program {empty_program}"),
            )
            .with_median(empty.median),
        );
        for (id, frame) in [
            ("tcp", "non-DHCP TCP frame"),
            ("udp", "non-DHCP UDP frame (DNS)"),
            ("vlan", "non-DHCP 802.1Q-tagged frame"),
        ] {
            let ours = results.get(&format!("{prefix}/{id}"))?;
            sane(ours.median > 0.0 && empty.median > 0.0, || {
                format!("{prefix}/{id}: zero time")
            })?;
            // Our samples less the empty program's median: the median is the difference of the
            // two medians, the spread is ours.
            let over: Vec<f64> = ours
                .per_iteration
                .iter()
                .map(|ns| ns - empty.median)
                .collect();
            figures.push(
                Figure::from_samples(
                    "hook cost",
                    format!("{label}, {frame}, over the empty program"),
                    "ns",
                    &over,
                    format!(
                        "{kernel}, Criterion medians of {samples} samples: ours minus \
                         {empty_program} of the same type in the same run (spread: our samples)"
                    ),
                )
                .with_median(ours.median - empty.median)
                .target(Target::AtMost(2.0)),
            );
        }
        let dhcp = results.get(&format!("{prefix}/dhcp"))?;
        figures.push(
            Figure::from_samples(
                "hook cost",
                format!("{label}, DHCPv4 DISCOVER (emits a ring-buffer event)"),
                "ns/packet",
                &dhcp.per_iteration,
                format!(
                    "{timing}, in batches of 1,000 runs with the ring buffer drained between \
                     them and no event lost"
                ),
            )
            .with_median(dhcp.median)
            .target(Target::AtMost(150.0)),
        );
    }
    Ok(figures)
}

pub fn pipeline(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let report = run_bench(ctx, "pipeline")?;
    let results = Results::read("pipeline")?;
    let run = results.get("decode_correlate")?;
    let events = run
        .elements
        .context("pipeline: no throughput in benchmark.json")?;
    let (reported, releases) = (count(&report, &["events"]), count(&report, &["releases"]));
    sane(events > 0 && reported == events, || {
        format!("pipeline: {reported} events handled, {events} expected")
    })?;
    sane(releases > 0, || "pipeline: no RELEASE correlated".into())?;
    sane(run.median > 0.0, || "pipeline: zero time".into())?;
    let per_second = |ns: f64| events as f64 / (ns / 1e9);
    let method = format!(
        "Criterion, {} samples: the daemon's per-event work (Pipeline::on_batch: decode, \
         metrics, exchange tracking, server identity, release correlation against a \
         {}-lease table) on {} recorded events ({} RELEASEs), one thread",
        run.per_iteration.len(),
        number(count(&report, &["leases"]) as f64),
        number(events as f64),
        number(releases as f64)
    );
    let rates: Vec<f64> = run.per_iteration.iter().map(|&ns| per_second(ns)).collect();
    let per_event: Vec<f64> = run
        .per_iteration
        .iter()
        .map(|&ns| ns / events as f64)
        .collect();
    Ok(vec![
        Figure::from_samples(
            "pipeline",
            "decode + correlate, events/s per core",
            "events/s",
            &rates,
            method.clone(),
        )
        .with_median(per_second(run.median))
        .target(Target::AtLeast(1_000_000.0)),
        Figure::from_samples(
            "pipeline",
            "decode + correlate, time per event",
            "ns/event",
            &per_event,
            method,
        )
        .with_median(run.median / events as f64),
    ])
}

pub fn leases(ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    let report = run_bench(ctx, "leases")?;
    let leases = count(&report, &["leases"]);
    let (changed, honored) = (count(&report, &["changed"]), count(&report, &["honored"]));
    sane(leases > 0 && honored > 0, || {
        format!("leases: {leases} leases parsed, {honored} releases settled")
    })?;
    let results = Results::read("leases")?;
    let mut figures = Vec::new();
    for (id, name, method, target) in [
        (
            "parse",
            format!("parse {} leases (read + parse)", number(leases as f64)),
            format!(
                "Criterion: follow::read_table of a {}-lease dnsmasq file (page cache)",
                number(leases as f64)
            ),
            None,
        ),
        (
            "parse_diff",
            format!("parse + diff {} leases", number(leases as f64)),
            format!(
                "Criterion: a reload as the daemon does it (read_table, Outstanding::refresh, \
                 Correlator::on_table against the previous table) with {} of {} leases changed",
                number(changed as f64),
                number(leases as f64)
            ),
            Some(Target::AtMost(30.0)),
        ),
        (
            "reconcile",
            "reconcile 2,100 leases with 2,100 host lines".to_owned(),
            "Criterion: Reconciler::reconcile of a CloudStack VPC router at dhcp-lease-max \
             (static-only range; 100 orphans blocking 100 declared hosts), as every reload of \
             the lease or host files does"
                .to_owned(),
            // A 500 MHz router's share of a reload: far below the debounce of the files.
            Some(Target::AtMost(5.0)),
        ),
    ] {
        let run = results.get(id)?;
        sane(run.median > 0.0, || format!("leases/{id}: zero time"))?;
        let ms: Vec<f64> = run.per_iteration.iter().map(|ns| ns / 1e6).collect();
        let mut figure = Figure::from_samples(
            "lease table",
            name,
            "ms",
            &ms,
            format!("{method}, median over {} samples", ms.len()),
        )
        .with_median(run.median / 1e6);
        if let Some(target) = target {
            figure = figure.target(target);
        }
        figures.push(figure);
    }
    Ok(figures)
}

impl Figure {
    /// Sets the figure's value to Criterion's median estimate (the samples give the spread).
    fn with_median(mut self, median: f64) -> Figure {
        self.value = median;
        self
    }
}

/// Where Criterion writes (`CRITERION_HOME`, set for the benches run here).
fn criterion_home() -> PathBuf {
    crate::target_dir().join("criterion")
}

/// Runs `cargo bench --bench <bench>` (Criterion's defaults, or briefly under --quick) and
/// returns the report the bench wrote. Earlier results of its group are removed first, so only
/// this run's are read.
fn run_bench(ctx: &Ctx, bench: &str) -> anyhow::Result<Value> {
    let group = criterion_home().join(bench);
    if group.exists() {
        std::fs::remove_dir_all(&group)
            .with_context(|| format!("removing old results in {}", group.display()))?;
    }
    let report = ctx.scratch.join(format!("{bench}-report.json"));
    let _ = std::fs::remove_file(&report);
    let mut args = vec!["bench", "--package", "dhcp-agent", "--bench", bench, "--"];
    if ctx.quick {
        args.extend([
            "--warm-up-time",
            "0.2",
            "--measurement-time",
            "0.5",
            "--sample-size",
            "10",
        ]);
    }
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(&args)
        .env("CRITERION_HOME", criterion_home())
        .env("DHCP_BENCH_REPORT", &report)
        .status()
        .context("running cargo bench")?;
    anyhow::ensure!(
        status.success(),
        "cargo {} failed ({status})",
        args.join(" ")
    );
    read_json(&report)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The number at `path` in a bench's report (0 when missing).
fn count(report: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(report, |v, key| v.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// One Criterion benchmark's results.
struct Run {
    /// Median time per iteration, ns (Criterion's estimate).
    median: f64,
    /// Time per iteration of each sample, ns.
    per_iteration: Vec<f64>,
    /// `Throughput::Elements` per iteration, when the bench declared it.
    elements: Option<u64>,
}

/// The results of one benchmark group, by benchmark id (`<function>` within the group).
struct Results {
    group: String,
    runs: Vec<(String, Run)>,
}

impl Results {
    /// Reads every `<group>/<dir>/new/` Criterion wrote; ids come from `benchmark.json` (the
    /// directory names are the ids made filename-safe: `xdp/tcp` is `xdp_tcp`).
    fn read(group: &str) -> anyhow::Result<Results> {
        let dir = criterion_home().join(group);
        let mut runs = Vec::new();
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let new = entry?.path().join("new");
            if !new.join("benchmark.json").exists() {
                continue;
            }
            let benchmark = read_json(&new.join("benchmark.json"))?;
            let estimates = read_json(&new.join("estimates.json"))?;
            let sample = read_json(&new.join("sample.json"))?;
            let id = benchmark
                .get("function_id")
                .and_then(Value::as_str)
                .with_context(|| format!("no function_id in {}", new.display()))?
                .to_string();
            let median = estimates
                .pointer("/median/point_estimate")
                .and_then(Value::as_f64)
                .with_context(|| format!("no median in {}", new.display()))?;
            let numbers = |key: &str| -> Vec<f64> {
                sample
                    .get(key)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default()
            };
            let (iters, times) = (numbers("iters"), numbers("times"));
            anyhow::ensure!(
                !iters.is_empty() && iters.len() == times.len(),
                "{}: {} iteration counts for {} times",
                new.display(),
                iters.len(),
                times.len()
            );
            let per_iteration = times.iter().zip(&iters).map(|(t, n)| t / n).collect();
            let elements = benchmark
                .pointer("/throughput/Elements")
                .and_then(Value::as_u64);
            runs.push((
                id,
                Run {
                    median,
                    per_iteration,
                    elements,
                },
            ));
        }
        Ok(Results {
            group: group.to_string(),
            runs,
        })
    }

    fn get(&self, id: &str) -> anyhow::Result<&Run> {
        self.runs
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, run)| run)
            .with_context(|| {
                format!(
                    "no Criterion results for {}/{id} under {}",
                    self.group,
                    criterion_home().display()
                )
            })
    }
}
