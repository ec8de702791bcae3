//! The benchmark keeps working: `scripts/bench.sh --smoke` (one
//! repetition at tiny sizes against direct Redis, HAProxy and asynq-guard)
//! runs to its end and its report has every row, each with numbers.
//!
//! No figure is judged: on a shared CI machine timings say nothing, and
//! the goals in the report are only reported. The script installs what it
//! lacks (haproxy, redis-tools) through `scripts/install-deps.sh`, so this
//! test does not skip. It builds the release binary into the target
//! directory `tests/deploy.rs` uses, so that one release build serves both
//! (cargo's lock on that directory orders the two).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The release build is the slow part on a cold cache; the smoke run
/// itself takes a minute or two.
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// Each row of the report and what the cells after its label hold: `f` a
/// figure, `r` a ratio (a figure, or `n/a` when its denominator is zero,
/// which a smoke run's CPU times can be: they are counted in clock ticks).
fn expected_rows() -> Vec<(String, &'static str)> {
    let mut rows = Vec::new();
    // Throughput and latency: direct, HAProxy, asynq-guard and both ratios.
    for what in [
        "1 conn",
        "50 conns",
        "50 conns, pipeline 16",
        "50 conns, 64 KiB values",
        "1,000 conns",
    ] {
        for cmd in ["GET", "SET"] {
            rows.push((format!("redis-benchmark {cmd}, {what} (req/s)"), "fffrr"));
        }
    }
    for cmd in ["GET", "SET"] {
        for p in ["p50", "p99"] {
            rows.push((format!("redis-benchmark {cmd}, 1 conn, {p} (µs)"), "fffrr"));
            // Added latency: three differences.
            rows.push((format!("{cmd} {p} added"), "fff"));
        }
    }
    for label in [
        "asynq enqueue, 16 goroutines (tasks/s)",
        "asynq enqueue, p50 (µs)",
        "asynq enqueue, p99 (µs)",
        "asynq batch enqueue, pipelines of 100 (tasks/s)",
        "asynq batch enqueue, p50 per batch (µs)",
        "asynq batch enqueue, p99 per batch (µs)",
        "asynq drain, Concurrency 10 (tasks/s)",
        "asynq drain, Concurrency 50 (tasks/s)",
        "asynq enqueue to handler, p50 (µs)",
        "asynq enqueue to handler, p99 (µs)",
    ] {
        rows.push((label.to_string(), "fffrr"));
    }
    // CPU per operation: HAProxy, asynq-guard, their ratio, Redis three times.
    for label in [
        "redis-benchmark GET+SET, 1 conn",
        "redis-benchmark GET+SET, 50 conns",
        "redis-benchmark GET+SET, pipeline 16",
        "redis-benchmark GET+SET, 64 KiB values",
        "redis-benchmark GET+SET, 1,000 conns",
        "asynq enqueue",
        "asynq batch enqueue",
        "asynq drain, Concurrency 10",
        "asynq drain, Concurrency 50",
        "asynq enqueue to handler",
    ] {
        rows.push((label.to_string(), "ffrfff"));
    }
    // Memory: Redis, HAProxy, asynq-guard, ratio.
    for label in [
        "idle, no connections (MiB)",
        "1,000 idle connections open (MiB)",
        "all idle connections open (MiB)",
        "peak over the whole run, VmHWM (MiB)",
        "per idle connection (KiB)",
    ] {
        rows.push((label.to_string(), "fffr"));
    }
    rows
}

/// Whether a cell starts with a figure: `-1,234.5 (…)` or `0.97`.
fn is_figure(cell: &str) -> bool {
    let first = cell.split_whitespace().next().unwrap_or("");
    let plain: String = first.chars().filter(|c| *c != ',').collect();
    plain.parse::<f64>().is_ok_and(f64::is_finite)
}

#[test]
fn smoke_run_reports_every_row() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join(format!("bench-smoke-{}", std::process::id()));
    let log = tmp.join(format!("bench-smoke-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).expect("create the log");
    // Its own process group, so that a run past the limit is stopped
    // whole (redis-server, haproxy and the proxy included).
    let mut child = Command::new(root.join("scripts/bench.sh"))
        .arg("--smoke")
        .env("CARGO_TARGET_DIR", tmp.join("deploy-release"))
        .env("BENCH_OUT", &out)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .expect("start scripts/bench.sh");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for scripts/bench.sh") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "scripts/bench.sh --smoke did not finish within {LIMIT:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "scripts/bench.sh --smoke: {status}; log:\n{log_text}"
    );

    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md is written");
    assert!(
        log_text.contains("## Throughput and latency"),
        "the report is printed too"
    );
    for (label, kinds) in expected_rows() {
        let prefix = format!("| {label} |");
        let line = report
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no row {label:?} in the report:\n{report}"));
        let cells: Vec<&str> = line[prefix.len()..].split('|').map(str::trim).collect();
        assert!(cells.len() >= kinds.len(), "row {label:?} is short\n{line}");
        for (i, (cell, kind)) in cells.iter().zip(kinds.chars()).enumerate() {
            assert!(
                is_figure(cell) || (kind == 'r' && *cell == "n/a"),
                "row {label:?}, cell {}: {cell:?} is no figure\n{line}",
                i + 1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&log);
}
