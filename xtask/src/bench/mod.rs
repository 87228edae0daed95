//! `cargo xtask bench`: every performance figure of the README, measured on this machine in one
//! run.
//!
//! Each benchmark module returns [`Figure`]s: a median over repeats, the spread (min..max), the
//! unit, how it was measured and the target it is held against. Comparisons (our hook against an
//! empty program, our analysis against tshark, forwarding with and without the observer) are
//! measured side by side in the same run and reported as ratios, because these machines are
//! noisy. In-process micro-benchmarks run under Criterion (`dhcp-agent/benches`); the rest drive
//! the release `dhcp-agent` binary from outside, as an operator would.
//!
//! `--quick` runs every benchmark briefly (the test suite does, so the benchmark code cannot
//! rot); it checks that results are sane (events counted, non-zero rates) and never asserts a
//! timing. The full run writes `bench/results.json`, `bench/results.md` and the README section
//! between the `bench:begin` / `bench:end` markers.
mod analyze;
mod footprint;
mod forwarding;
mod latency;
mod micro;
pub mod process;
mod storm;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Run each benchmark briefly and only check the results are sane (what the tests do).
    #[arg(long)]
    pub quick: bool,
    /// Run only these benchmarks (hooks, pipeline, leases, forwarding, storm, analyze,
    /// footprint, latency); all when not given.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where to write results.json and results.md (default: `bench/` in the repository for a
    /// full run, the target directory for --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the scratch directory (generated captures and lease files), e.g. for profiling.
    #[arg(long)]
    pub keep: bool,
}

/// What every benchmark gets.
pub struct Ctx {
    pub quick: bool,
    /// The release `dhcp-agent` binary.
    pub agent: PathBuf,
    /// Scratch space, removed at the end.
    pub scratch: PathBuf,
}

impl Ctx {
    /// `full` in a full run, `quick` under --quick.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A target a figure is held against.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Target {
    /// The value must stay at or below this.
    AtMost(f64),
    /// The value must reach at least this.
    AtLeast(f64),
}

impl Target {
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(limit) => value <= limit,
            Target::AtLeast(floor) => value >= floor,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Target::AtMost(limit) => format!("≤ {} {unit}", number(limit)),
            Target::AtLeast(floor) => format!("≥ {} {unit}", number(floor)),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Which benchmark (section of the table), e.g. "hook cost".
    pub group: String,
    /// What was measured, e.g. "XDP, non-DHCP TCP frame, over the empty program".
    pub name: String,
    /// The median over `samples` repeats.
    pub value: f64,
    pub unit: String,
    /// Smallest and largest of the repeats.
    pub min: f64,
    pub max: f64,
    pub samples: usize,
    pub target: Option<Target>,
    /// How it was measured, in a sentence.
    pub method: String,
}

impl Figure {
    /// A figure from repeated measurements (median, min, max).
    pub fn from_samples(
        group: &str,
        name: impl Into<String>,
        unit: &str,
        samples: &[f64],
        method: impl Into<String>,
    ) -> Figure {
        let (median, min, max) = summarize(samples);
        Figure {
            group: group.into(),
            name: name.into(),
            value: median,
            unit: unit.into(),
            min,
            max,
            samples: samples.len(),
            target: None,
            method: method.into(),
        }
    }

    pub fn target(mut self, target: Target) -> Figure {
        self.target = Some(target);
        self
    }

    /// Whether the target is met (`None` without a target).
    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| t.met(self.value))
    }
}

/// Median, min and max of `samples` (zeros when empty).
pub fn summarize(samples: &[f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

/// Fails with `what` unless `ok`: the quick mode's sanity checks (and the full run's).
pub fn sane(ok: bool, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    anyhow::ensure!(ok, "benchmark result not sane: {}", what());
    Ok(())
}

/// A benchmark: what it measures, as figures.
type Benchmark = fn(&Ctx) -> anyhow::Result<Vec<Figure>>;

/// Every benchmark, in the order of the issue's list.
const BENCHMARKS: &[(&str, Benchmark)] = &[
    ("hooks", micro::hooks),
    ("forwarding", forwarding::run),
    ("storm", storm::run),
    ("pipeline", micro::pipeline),
    ("analyze", analyze::run),
    ("leases", micro::leases),
    ("footprint", footprint::run),
    ("latency", latency::run),
];

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "the benchmarks load BPF programs and create network namespaces: run as root"
    );
    for name in &args.only {
        anyhow::ensure!(
            BENCHMARKS.iter().any(|(known, _)| known == name),
            "unknown benchmark {name:?}; known: {}",
            BENCHMARKS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    crate::cargo(&["build", "--release", "--package", "dhcp-agent"])?;
    // Per process: two benchmark runs at once must not remove each other's files.
    let scratch = crate::target_dir().join(format!("bench-scratch-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let ctx = Ctx {
        quick: args.quick,
        agent: crate::target_dir().join("release/dhcp-agent"),
        scratch: scratch.clone(),
    };
    let figures = run_all(&ctx, &args.only);
    if args.keep {
        eprintln!("bench: kept {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let report = Report::new(figures?);
    println!("{}", report.text());
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            crate::target_dir().join("bench-quick")
        } else {
            repo_root().join("bench")
        }
    });
    report.write(&out)?;
    if !args.quick && args.only.is_empty() && args.out.is_none() {
        report.update_readme(&repo_root().join("README.md"))?;
    }
    Ok(())
}

/// Runs the benchmarks `only` names (all when empty), in order.
fn run_all(ctx: &Ctx, only: &[String]) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (name, bench) in BENCHMARKS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("bench: {name}");
        let started = std::time::Instant::now();
        let found = bench(ctx).with_context(|| format!("benchmark {name}"))?;
        sane(!found.is_empty(), || format!("{name} produced no figure"))?;
        for figure in &found {
            sane(figure.value.is_finite() && figure.samples > 0, || {
                format!("{name}: {} = {}", figure.name, figure.value)
            })?;
        }
        eprintln!("bench: {name} done in {:.1?}", started.elapsed());
        figures.extend(found);
    }
    Ok(figures)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The figures of one run and the machine they came from.
#[derive(Serialize)]
struct Report {
    machine: Machine,
    quick: bool,
    figures: Vec<Figure>,
}

#[derive(Serialize)]
struct Machine {
    kernel: String,
    cpu: String,
    cores: usize,
    memory_gib: f64,
    date: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").parse::<f64>().ok())
            .unwrap_or(0.0);
        let output = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            kernel: output("uname", &["-r"]),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            date: output("date", &["-u", "+%Y-%m-%d"]),
        }
    }

    fn text(&self) -> String {
        format!(
            "{}, {} cores, {} GiB, Linux {}, {}",
            self.cpu, self.cores, self.memory_gib, self.kernel, self.date
        )
    }
}

impl Report {
    fn new(figures: Vec<Figure>) -> Report {
        Report {
            machine: Machine::read(),
            quick: false,
            figures,
        }
    }

    /// The table for the terminal.
    fn text(&self) -> String {
        let mut out = format!("Machine: {}\n", self.machine.text());
        let mut group = "";
        for f in &self.figures {
            if f.group != group {
                group = &f.group;
                let _ = writeln!(out, "\n{group}");
            }
            let verdict = match f.met() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            let _ = writeln!(
                out,
                "  {:<58} {:>14} {:<10} [{} .. {}] n={} {} {}",
                f.name,
                number(f.value),
                f.unit,
                number(f.min),
                number(f.max),
                f.samples,
                f.target.map(|t| t.text(&f.unit)).unwrap_or_default(),
                verdict
            );
        }
        out
    }

    /// The Markdown table the README embeds.
    fn markdown(&self) -> String {
        let mut out = format!(
            "Measured on: {} (`cargo xtask bench`).\n\n\
             | Benchmark | Figure | Median | Spread (min..max, n) | Target | Method |\n\
             |---|---|---|---|---|---|\n",
            self.machine.text()
        );
        for f in &self.figures {
            let target = match (f.target, f.met()) {
                (Some(t), Some(true)) => format!("{} ✔", t.text(&f.unit)),
                (Some(t), _) => format!("{} **missed**", t.text(&f.unit)),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {}..{} (n={}) | {} | {} |",
                f.group,
                f.name,
                number(f.value),
                f.unit,
                number(f.min),
                number(f.max),
                f.samples,
                target,
                f.method.replace('|', "\\|")
            );
        }
        out
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = dir.join("results.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        let md = dir.join("results.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        eprintln!("bench: wrote {} and {}", json.display(), md.display());
        Ok(())
    }

    /// Replaces the README's text between `<!-- bench:begin -->` and `<!-- bench:end -->`.
    fn update_readme(&self, readme: &Path) -> anyhow::Result<()> {
        const BEGIN: &str = "<!-- bench:begin -->";
        const END: &str = "<!-- bench:end -->";
        let text = std::fs::read_to_string(readme)
            .with_context(|| format!("reading {}", readme.display()))?;
        let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
            eprintln!(
                "bench: {} has no {BEGIN} .. {END} section; left as is",
                readme.display()
            );
            return Ok(());
        };
        anyhow::ensure!(begin < end, "{END} before {BEGIN} in {}", readme.display());
        let updated = format!(
            "{}{BEGIN}\n{}{}",
            &text[..begin],
            self.markdown(),
            &text[end..]
        );
        std::fs::write(readme, updated).with_context(|| format!("writing {}", readme.display()))?;
        eprintln!("bench: updated {}", readme.display());
        Ok(())
    }
}

/// A number as people read it: 3 significant digits, thousands apart.
pub fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    let rounded = format!("{value:.decimals$}");
    let (int, frac) = rounded.split_once('.').unwrap_or((&rounded, ""));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// Reads a Prometheus text exposition into (series, value) pairs: `name{labels} value`.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name` whose labels contain all of `labels` (each as
/// `key="value"`).
pub fn metric_sum(metrics: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(0.01234), "0.0123");
        assert_eq!(number(-2500.0), "-2,500");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn summaries_are_median_min_max() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn metric_sums_filter_by_labels() {
        let m = parse_metrics(
            "# HELP x\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\",b=\"3\"} 4\nxy{a=\"1\"} 100\nx 5\n",
        );
        assert_eq!(metric_sum(&m, "x", &["a=\"1\""]), 7.0);
        assert_eq!(metric_sum(&m, "x", &[]), 12.0);
    }

    #[test]
    fn targets() {
        assert!(Target::AtMost(2.0).met(2.0));
        assert!(!Target::AtLeast(0.98).met(0.5));
    }
}
