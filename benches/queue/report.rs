//! The results: medians over repetitions, the markdown table, results.json.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::scenarios::{Measured, Sample, Scenario, Target};
use crate::support::{median, Context, Result};

/// Every repetition of one scenario, or why it could not run.
#[derive(Debug)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub reps: Vec<Sample>,
    /// Failed requests summed over the repetitions.
    pub errors: u64,
    pub problems: Vec<String>,
    /// Set when a repetition failed; the later ones are skipped.
    pub failure: Option<String>,
    /// The median of `drain_no_trace_per_s` in the same run, for targets that are a share
    /// of it (set once every scenario ran).
    pub baseline: Option<f64>,
}

/// One number of a scenario: the rate, or one of the two latency percentiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    Rate,
    P50,
    P99,
    Percent,
}

impl Metric {
    fn of(self, sample: Sample) -> f64 {
        match (self, sample) {
            (Metric::Rate, Sample::Rate(rate)) => rate,
            (Metric::P50, Sample::Latency { p50, .. }) => p50,
            (Metric::P99, Sample::Latency { p99, .. }) => p99,
            (Metric::Percent, Sample::Percent(percent)) => percent,
            _ => f64::NAN,
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Metric::Rate => format!("{value:.0}/s"),
            Metric::P50 | Metric::P99 => format!("{value:.3} ms"),
            Metric::Percent => format!("{value:.1}%"),
        }
    }

    /// The bound this metric is held to, if any, and whether it is a floor.
    fn bound(self, target: Target) -> Option<(f64, bool)> {
        match (self, target) {
            (Metric::Rate, Target::AtLeast(min)) => Some((min, true)),
            (Metric::P50, Target::AtMost { p50, .. }) => Some((p50, false)),
            (Metric::P99, Target::AtMost { p99, .. }) => p99.map(|max| (max, false)),
            (Metric::Percent, Target::AtMostPercent(max)) => Some((max, false)),
            // Resolved against the baseline by `ScenarioResult::bound`.
            (Metric::Rate, Target::AtLeastShareOfDrain(_)) => None,
            _ => None,
        }
    }
}

impl ScenarioResult {
    pub fn new(scenario: Scenario) -> Self {
        ScenarioResult { scenario, reps: Vec::new(), errors: 0, problems: Vec::new(), failure: None, baseline: None }
    }

    pub fn add(&mut self, measured: Measured) {
        self.reps.push(measured.sample);
        self.errors += measured.errors;
        self.problems.extend(measured.problems);
    }

    fn metrics(&self) -> &'static [Metric] {
        match self.scenario.target() {
            Target::AtLeast(_) | Target::AtLeastShareOfDrain(_) => &[Metric::Rate],
            Target::AtMost { .. } => &[Metric::P50, Metric::P99],
            Target::AtMostPercent(_) => &[Metric::Percent],
            Target::None if matches!(self.reps.first(), Some(Sample::Rate(_))) => &[Metric::Rate],
            Target::None => &[Metric::P50, Metric::P99],
        }
    }

    fn values(&self, metric: Metric) -> Vec<f64> {
        self.reps.iter().map(|&s| metric.of(s)).collect()
    }

    /// The median rate, for the scenarios whose targets are a share of it.
    pub fn median_rate(&self) -> Option<f64> {
        self.median(Metric::Rate)
    }

    /// The median of a metric; none when the scenario failed, so a partial run is never
    /// mistaken for a result.
    fn median(&self, metric: Metric) -> Option<f64> {
        if self.failure.is_some() {
            return None;
        }
        median(&self.values(metric))
    }

    /// Whether the median meets the metric's target: `None` without a target or a median.
    /// Failed requests fail the target whatever the number.
    fn met(&self, metric: Metric) -> Option<bool> {
        let (bound, is_floor) = self.bound(metric)?;
        let value = self.median(metric)?;
        let within = if is_floor { value >= bound } else { value <= bound };
        Some(within && self.errors == 0)
    }

    /// The bound a metric is held to in this run, if any, and whether it is a floor.
    fn bound(&self, metric: Metric) -> Option<(f64, bool)> {
        match (metric, self.scenario.target()) {
            (Metric::Rate, Target::AtLeastShareOfDrain(share)) => self.baseline.map(|b| (b * share, true)),
            (m, target) => m.bound(target),
        }
    }

    /// The scenario met every target it has (`None`: no target, or it failed).
    fn met_all(&self) -> Option<bool> {
        let verdicts: Vec<bool> = self.metrics().iter().filter_map(|&m| self.met(m)).collect();
        (!verdicts.is_empty()).then(|| verdicts.iter().all(|&v| v))
    }
}

/// All results of one bench run, with the context needed to read them.
pub struct Report {
    pub results: Vec<ScenarioResult>,
    pub machine: Value,
    pub loads: Value,
    pub repetitions: usize,
    pub quick: bool,
}

/// The table shows this many repetition columns (the full run's count).
const REP_COLUMNS: usize = 3;

impl Report {
    pub fn all_ran(&self) -> bool {
        self.results.iter().all(|r| r.failure.is_none())
    }

    pub fn machine_line(&self) -> String {
        let m = &self.machine;
        let quick = if self.quick {
            format!(" · QUICK RUN ({} repetition(s), a tenth of each load)", self.repetitions)
        } else {
            String::new()
        };
        format!(
            "machine: {} cores ({}) · {} · PostgreSQL {} · {}{quick}",
            text(&m["nproc"]),
            text(&m["cpu"]),
            text(&m["uname"]),
            text(&m["postgres"]),
            text(&m["date"]),
        )
    }

    pub fn table(&self) -> String {
        let mut out = String::from("| scenario | median | rep1 | rep2 | rep3 | target | met? |\n");
        out.push_str("|---|---:|---:|---:|---:|---|---|\n");
        for result in &self.results {
            for &metric in result.metrics() {
                out.push_str(&table_row(result, metric));
            }
        }
        out
    }

    /// Everything that went wrong, one bullet each, for below the table.
    pub fn problems(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let key = r.scenario.key();
            if let Some(failure) = &r.failure {
                let _ = writeln!(out, "- **{key} FAILED**: {failure}");
            }
            if r.errors > 0 {
                let _ = writeln!(out, "- **{key}: {} FAILED REQUESTS** (non-201 or no answer)", r.errors);
            }
            for problem in &r.problems {
                let _ = writeln!(out, "- {key}: {problem}");
            }
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&self.to_json()).context("serializing results")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Top-level keys are the scenario keys with their medians (`null` when the scenario
    /// failed), so that `results["drain_per_s"]` is the number; the sections beside them
    /// hold the repetitions, targets, verdicts, problems and the machine.
    fn to_json(&self) -> Value {
        let mut root = Map::new();
        let (mut reps, mut targets, mut met) = (Map::new(), Map::new(), Map::new());
        let (mut errors, mut problems, mut failed) = (Map::new(), Map::new(), Map::new());
        for r in &self.results {
            let key = r.scenario.key().to_string();
            let metrics = r.metrics();
            root.insert(key.clone(), sample_json(metrics, |m| r.median(m)));
            let samples = r.reps.iter().map(|&s| sample_json(metrics, |m| Some(m.of(s))));
            reps.insert(key.clone(), samples.collect());
            targets.insert(key.clone(), target_json(r.scenario.target()));
            met.insert(key.clone(), json!(r.met_all()));
            errors.insert(key.clone(), json!(r.errors));
            problems.insert(key.clone(), json!(r.problems));
            if let Some(failure) = &r.failure {
                failed.insert(key, json!(failure));
            }
        }
        root.insert("reps".into(), Value::Object(reps));
        root.insert("targets".into(), Value::Object(targets));
        root.insert("met".into(), Value::Object(met));
        root.insert("errors".into(), Value::Object(errors));
        root.insert("problems".into(), Value::Object(problems));
        root.insert("failed".into(), Value::Object(failed));
        root.insert("machine".into(), self.machine.clone());
        root.insert("loads".into(), self.loads.clone());
        root.insert("repetitions".into(), json!(self.repetitions));
        root.insert("quick".into(), json!(self.quick));
        Value::Object(root)
    }
}

fn table_row(result: &ScenarioResult, metric: Metric) -> String {
    let label = match metric {
        Metric::Rate | Metric::Percent => result.scenario.key().to_string(),
        Metric::P50 => format!("{} p50", result.scenario.key()),
        Metric::P99 => format!("{} p99", result.scenario.key()),
    };
    let median = match (&result.failure, result.median(metric)) {
        (Some(_), _) => "FAILED".to_string(),
        (None, Some(v)) => metric.format(v),
        (None, None) => "—".to_string(),
    };
    let reps: Vec<String> = (0..REP_COLUMNS)
        .map(|i| result.reps.get(i).map_or("—".to_string(), |&s| metric.format(metric.of(s))))
        .collect();
    let target = match result.bound(metric) {
        Some((bound, true)) => format!("≥ {}", metric.format(bound)),
        Some((bound, false)) => format!("≤ {}", metric.format(bound)),
        None => "—".to_string(),
    };
    let met = match (&result.failure, result.met(metric)) {
        (Some(_), _) => "FAILED".to_string(),
        (None, Some(true)) => "yes".to_string(),
        (None, Some(false)) if result.errors > 0 => format!("**NO** ({} errors)", result.errors),
        (None, Some(false)) => "**NO**".to_string(),
        (None, None) => "—".to_string(),
    };
    format!("| {label} | {median} | {} | {target} | {met} |\n", reps.join(" | "))
}

/// A rate as a number, latencies as `{"p50": …, "p99": …}`; `null` where a value is missing.
fn sample_json(metrics: &[Metric], value: impl Fn(Metric) -> Option<f64>) -> Value {
    match metrics {
        [Metric::Rate] => json!(value(Metric::Rate)),
        [Metric::Percent] => json!(value(Metric::Percent)),
        _ => json!({ "p50": value(Metric::P50), "p99": value(Metric::P99) }),
    }
}

fn target_json(target: Target) -> Value {
    match target {
        Target::None => Value::Null,
        Target::AtLeast(min) => json!({ "min": min }),
        Target::AtMost { p50, p99 } => json!({ "p50_max": p50, "p99_max": p99 }),
        Target::AtMostPercent(max) => json!({ "max_percent": max }),
        Target::AtLeastShareOfDrain(share) => json!({ "min_share_of_drain_no_trace": share }),
    }
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}
