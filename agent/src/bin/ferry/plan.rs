// SPDX-License-Identifier: MIT
//! `ferry plan`: what a sync would do, what the destination cannot hold,
//! and how long it would take, before the first byte.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Args;
use ferry_engine::dry_run::{self, Hints, MigrationPlan, Tally};
use ferry_engine::Options;

use crate::options::{Flags, OptionArgs};
use crate::sync::open_locations;
use crate::{EXIT_ERROR, EXIT_USAGE};

/// Plan a sync from SOURCE into DEST without changing anything.
///
/// Both trees are scanned and compared as `ferry sync` with the same
/// options would: files and bytes to transfer, metadata-only updates and
/// deletions, by top-level directory; every entry DEST cannot hold as it
/// is; and an estimate of the time, from the round trips and rates
/// measured on both sides (probes are written at DEST's top, under
/// temporary names, and removed: files of up to 32 MiB, and up to 4,096
/// small files in a temporary directory).
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The directory to copy from.
    pub source: PathBuf,
    /// The directory to copy into (it must exist).
    pub dest: PathBuf,
    #[command(flatten)]
    pub options: OptionArgs,
    /// DEST's largest file in bytes, for the fidelity check (EFS: 52673613135872).
    #[arg(long, value_name = "BYTES")]
    pub max_file_size: Option<u64>,
    /// The plan as JSON.
    #[arg(long)]
    pub json: bool,
}

fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{}/s", size(r as u64)))
}

/// The plan as a table, its problems, what was measured and the estimate.
pub fn print(plan: &MigrationPlan) {
    println!("plan: {} -> {}", plan.source, plan.destination);
    println!(
        "{:<24} {:>10} {:>10} {:>11} {:>9} {:>9} {:>10} {:>8}",
        "top-level", "listed", "transfer", "bytes", "metadata", "delete", "unchanged", "skipped"
    );
    let row = |name: &str, t: &Tally| {
        println!(
            "{:<24} {:>10} {:>10} {:>11} {:>9} {:>9} {:>10} {:>8}",
            name,
            t.files_listed,
            t.files_to_transfer,
            size(t.bytes_to_transfer),
            t.metadata_only,
            t.files_to_delete,
            t.unchanged,
            t.skipped
        )
    };
    for (name, t) in &plan.by_top_level {
        row(name, t);
    }
    row("total", &plan.total);
    let problems: u64 = plan.issue_counts.values().sum();
    if problems == 0 {
        println!("fidelity: the destination can hold every entry as it is");
    } else {
        println!("fidelity: {problems} entries the destination cannot hold as they are:");
        for i in plan.issues.iter().take(50) {
            let problem = serde_json::to_value(i.problem).unwrap_or_default();
            println!(
                "  {} {}: {}",
                problem.as_str().unwrap_or(""),
                i.path,
                i.detail
            );
        }
        if problems > 50 {
            println!("  … and {} more (--json lists 10,000)", problems - 50);
        }
    }
    for u in &plan.unreadable {
        println!("unreadable: {u}");
    }
    let m = &plan.measured;
    println!(
        "measured: scan {:.2} s; round trip {:.2} ms at the source, {:.2} ms at the destination; \
         large files: reading {}, writing {}; new small files: {}",
        m.scan_seconds,
        m.source_round_trip_ms,
        m.destination_round_trip_ms,
        rate(m.source_read_bytes_per_second),
        rate(m.destination_write_bytes_per_second),
        m.destination_files_per_second
            .map_or("-".into(), |r| format!("{r:.0}/s")),
    );
    let e = &plan.estimate;
    println!(
        "estimate: {:.2} s ({} bound; {}), of which verifying {:.2} s",
        e.seconds,
        e.bound.to_lowercase(),
        if e.basis == "MEASURED" {
            "from what planning measured"
        } else {
            "from the last execution's rates"
        },
        e.verify_seconds
    );
}

pub fn run(args: PlanArgs) -> ExitCode {
    let opts = args.options.options();
    if let Err(e) = opts.validate() {
        eprintln!("ferry plan: {}", e.message(&Flags));
        return ExitCode::from(EXIT_USAGE);
    }
    plan_between(
        &args.source,
        &args.dest,
        &opts,
        args.max_file_size,
        args.json,
    )
}

/// Plans a sync from `source` into `dest` with `opts` and prints the plan.
pub fn plan_between(
    source: &Path,
    dest: &Path,
    opts: &Options,
    max_file_size: Option<u64>,
    json: bool,
) -> ExitCode {
    let (src, dst) = match open_locations(source, dest, false) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("ferry plan: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let hints = Hints {
        history: None,
        file_size_max: max_file_size,
    };
    match dry_run::plan(&src, &dst, opts, hints, &AtomicBool::new(false)) {
        Ok(plan) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&plan).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(plan) => {
            print(&plan);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry plan: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
