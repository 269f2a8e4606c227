//! The queue benchmark: drives the real release daemon from outside, as users and other
//! services do (raw SQL inserts, HTTP requests, SIGTERM), and measures dispatch latency,
//! enqueue rates and drain rates against fixed targets.
//!
//! Run it with `make bench` (it builds the release binary and starts a throwaway
//! PostgreSQL; `JCT_BENCH_BIN=path` measures another build). `JCT_BENCH_QUICK=1` runs one
//! repetition with a tenth of each load, for
//! trying the harness out. Progress goes to stderr; stdout gets the machine line and a
//! markdown table of medians and repetitions; `target/bench/results.json` gets every number.
//!
//! Each scenario repetition gets an empty store (a new PostgreSQL database or SQLite
//! file), a daemon of its own and fresh directories, and starts after `sync` has written the
//! page cache out (see [`settle`]). Scratch directories are deleted only
//! at the very end, in the background (see [`Bench::discard_scratch`]). The exit status
//! is non-zero only when a scenario could not run: a missed target is a result, not a
//! failure.
//!
//! Modules (in `benches/queue/`): `setup` (the environment and loads), `scenarios` (the
//! measurements), `daemon` (the child process), `pg`/`sqlite`/`http` (the bench's side of
//! each interface), `report` (table and JSON), `support` (errors, statistics, waiting).

#[path = "queue/daemon.rs"]
mod daemon;
#[path = "queue/http.rs"]
mod http;
#[path = "queue/pg.rs"]
mod pg;
#[path = "queue/report.rs"]
mod report;
#[path = "queue/scenarios.rs"]
mod scenarios;
#[path = "queue/setup.rs"]
mod setup;
#[path = "queue/sqlite.rs"]
mod sqlite;
#[path = "queue/support.rs"]
mod support;

use std::process::ExitCode;
use std::time::Instant;

use report::{Report, ScenarioResult};
use scenarios::{Sample, Scenario};
use setup::{machine_info, Bench};
use support::{progress, Result};

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and must not start
    // a ten-minute benchmark.
    if !std::env::args().skip(1).any(|arg| arg == "--bench") {
        println!("run with make bench");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: at least one scenario could not run (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every scenario and reports; `Ok(false)` when one of them could not run.
async fn run() -> Result<bool> {
    let bench = Bench::from_env().await?;
    bench.warn_about_leftovers();
    let outcome = tokio::select! {
        report = measure(&bench) => Ok(report),
        // Dropping `measure` drops its daemons, which kills them: none outlives the bench.
        signal = interrupted() => Err(format!("interrupted by {signal}; no results written")),
    };
    match bench.discard_scratch() {
        Ok(note) => progress!("{note}"),
        Err(e) => progress!("warning: {e}"),
    }
    let report = outcome?;

    println!("{}\n", report.machine_line());
    print!("{}", report.table());
    let problems = report.problems();
    if !problems.is_empty() {
        println!("\nProblems:\n\n{problems}");
    }
    let results_path = bench.out_dir.join("results.json");
    report.write_json(&results_path)?;
    progress!("wrote {}", results_path.display());
    Ok(report.all_ran())
}

/// Every scenario in turn, each in all its repetitions.
async fn measure(bench: &Bench) -> Report {
    let started = Instant::now();
    let mut report = Report {
        results: Vec::new(),
        machine: machine_info(bench).await,
        loads: bench.loads.to_json(),
        repetitions: bench.repetitions,
        quick: bench.quick,
    };
    progress!("{}", report.machine_line());
    progress!("scratch directories under {}", bench.tmp_root().display());
    // `JCT_BENCH_ONLY=key,key` runs just those scenarios (trying one out; the README's table
    // comes from a full run).
    let only: Option<Vec<String>> =
        std::env::var("JCT_BENCH_ONLY").ok().map(|v| v.split(',').map(|k| k.trim().to_string()).collect());
    for scenario in Scenario::ALL {
        if only.as_ref().is_some_and(|keys| !keys.iter().any(|k| k == scenario.key())) {
            continue;
        }
        report.results.push(run_scenario(bench, scenario).await);
    }
    progress!("all scenarios done in {:.0} s", started.elapsed().as_secs_f64());
    let baseline = report.results.iter().find(|r| r.scenario == Scenario::DrainNoTrace).and_then(|r| r.median_rate());
    for r in &mut report.results {
        r.baseline = baseline;
    }
    report
}

/// Resolves on SIGINT or SIGTERM (with-postgres.sh passes both on), naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// All repetitions of one scenario; the first failure ends it, since the next
/// repetitions would most likely fail the same way, after the same timeout.
async fn run_scenario(bench: &Bench, scenario: Scenario) -> ScenarioResult {
    let mut result = ScenarioResult::new(scenario);
    for rep in 1..=bench.repetitions {
        progress!("{} (repetition {rep} of {})", scenario.key(), bench.repetitions);
        settle().await;
        let started = Instant::now();
        match scenario.run(bench).await {
            Ok(measured) => {
                progress!("  {} ({:.1} s)", describe(measured.sample), started.elapsed().as_secs_f64());
                if measured.errors > 0 {
                    progress!("  !!! {} FAILED REQUESTS in this repetition !!!", measured.errors);
                }
                for problem in &measured.problems {
                    progress!("  problem: {problem}");
                }
                result.add(measured);
            }
            Err(e) => {
                progress!("  !!! {} could not run: {e}", scenario.key());
                result.failure = Some(e.to_string());
                break;
            }
        }
    }
    result
}

/// Writes the dirty page cache out before a repetition starts. A drain with traces leaves
/// hundreds of thousands of small files for the kernel to write back, and that writeback
/// (measured: over a third of both cores) would otherwise be charged to whichever
/// repetition runs next.
async fn settle() {
    let started = Instant::now();
    let synced = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await;
    match synced {
        Ok(Ok(status)) if status.success() => {
            let waited = started.elapsed().as_secs_f64();
            if waited >= 1.0 {
                progress!("  flushed the page cache first ({waited:.1} s)");
            }
        }
        other => progress!("  `sync` failed ({other:?}); measuring anyway"),
    }
}

fn describe(sample: Sample) -> String {
    match sample {
        Sample::Rate(rate) => format!("{rate:.0} tasks/s"),
        Sample::Latency { p50, p99 } => format!("p50 {p50:.3} ms, p99 {p99:.3} ms"),
        Sample::Percent(percent) => format!("{percent:.1}%"),
    }
}
