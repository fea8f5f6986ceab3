// SPDX-License-Identifier: MIT
//! What `ferry sync` shows while it runs: a progress bar on a terminal,
//! newline-delimited JSON events with `--json`, errors on stderr otherwise.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_engine::counters::CounterSnapshot;
use ferry_engine::location::Location;
use ferry_engine::report::{Observer, Outcome, Phase, Record};
use ferry_engine::{Execution, Summary};
use indicatif::{HumanBytes, ProgressStyle};
use serde_json::json;

/// Prints failures on stderr as they happen.
pub struct ErrorPrinter;

impl Observer for ErrorPrinter {
    fn wants_records(&self) -> bool {
        true
    }

    fn record(&self, r: Record) {
        if r.outcome == Outcome::Failed {
            eprintln!(
                "ferry sync: {} {}: {}",
                r.phase,
                r.path,
                r.reason.as_deref().unwrap_or("failed")
            );
        }
    }
}

/// `--json`: one JSON object a line on stdout.
#[derive(Default)]
pub struct JsonEvents;

impl JsonEvents {
    fn emit(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &value);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    pub fn progress(&self, phase: Phase, counters: &CounterSnapshot, elapsed: Duration) {
        self.emit(json!({
            "Event": "Progress",
            "Phase": phase,
            "ElapsedMs": elapsed.as_millis() as u64,
            "Counters": counters,
        }));
    }

    pub fn summary(&self, summary: &Summary) {
        let mut value = serde_json::to_value(summary).unwrap_or_default();
        value["Event"] = json!("Summary");
        self.emit(value);
    }
}

impl Observer for JsonEvents {
    fn phase(&self, phase: Phase, counters: &CounterSnapshot) {
        self.emit(json!({ "Event": "Phase", "Phase": phase, "Counters": counters }));
    }

    fn wants_records(&self) -> bool {
        true
    }

    fn record(&self, r: Record) {
        if matches!(r.outcome, Outcome::Failed | Outcome::ChangedAtSource) {
            let mut value = serde_json::to_value(&r).unwrap_or_default();
            value["Event"] = json!(if r.outcome == Outcome::Failed {
                "Failed"
            } else {
                "ChangedAtSource"
            });
            self.emit(value);
        }
    }
}

/// The terminal progress bar.
pub struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        ProgressBar(bar)
    }

    fn update(&self, phase: Phase, c: &CounterSnapshot, rate: f64) {
        let files = match phase {
            Phase::Verifying => format!("{} verified", c.files_verified),
            _ => format!(
                "{}/{} files",
                c.files_transferred, c.estimated_files_to_transfer
            ),
        };
        self.0.set_message(format!(
            "{phase:<12} {files}  {}/{}  {}/s  {} listed{}",
            HumanBytes(c.bytes_transferred),
            HumanBytes(c.estimated_bytes_to_transfer),
            HumanBytes(rate as u64),
            c.files_listed_source,
            match c.files_failed() {
                0 => String::new(),
                n => format!("  {n} failed"),
            }
        ));
        self.0.tick();
    }

    pub fn finish(&self, s: &Summary) {
        let c = &s.counters;
        self.0.finish_and_clear();
        eprintln!(
            "{}: {} transferred ({}), {} unchanged, {} deleted, {} skipped, {} verified, {} failed in {:.1} s",
            s.status,
            c.files_transferred,
            HumanBytes(c.bytes_transferred),
            c.files_unchanged,
            c.files_deleted,
            c.files_skipped,
            c.files_verified,
            c.files_failed(),
            s.total_duration as f64 / 1000.0,
        );
    }
}

/// Polls the execution until `done`, feeding the bar or the JSON stream.
pub fn follow<S: Location, D: Location>(
    execution: &Execution<S, D>,
    done: &AtomicBool,
    bar: Option<&ProgressBar>,
    json: Option<&JsonEvents>,
) {
    if bar.is_none() && json.is_none() {
        return;
    }
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut next_event = Instant::now() + Duration::from_secs(1);
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        let (phase, counters) = execution.progress();
        if let Some(bar) = bar {
            let now = Instant::now();
            let dt = now.duration_since(last.0).as_secs_f64();
            let rate = (counters.bytes_transferred.saturating_sub(last.1)) as f64 / dt.max(1e-3);
            last = (now, counters.bytes_transferred);
            bar.update(phase, &counters, rate);
        }
        if let Some(json) = json {
            if Instant::now() >= next_event {
                json.progress(phase, &counters, start.elapsed());
                next_event += Duration::from_secs(1);
            }
        }
    }
}
