// SPDX-License-Identifier: MIT
//! `ferry sync`: one execution between two directories.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use ferry_engine::location::local::LocalLocation;
use ferry_engine::report::{Fanout, Observer, Phase, ReportWriter};
use ferry_engine::Execution;

use crate::options::{Flags, OptionArgs};
use crate::progress::{ErrorPrinter, JsonEvents, ProgressBar};
use crate::{EXIT_ERROR, EXIT_USAGE};

/// Copy what changed from SOURCE into DEST, then verify.
///
/// The contents of SOURCE are synced into DEST (as `rsync -a SOURCE/ DEST/`
/// would). Owners, permissions, times, symlinks, hard links, sparse files and
/// empty directories are kept. Values and defaults are AWS DataSync's.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The directory to copy from.
    pub source: PathBuf,
    /// The directory to copy into (created if its parent exists).
    pub dest: PathBuf,
    #[command(flatten)]
    pub options: OptionArgs,
    /// Write the JSON task report here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Newline-delimited JSON events on stdout instead of the progress bar.
    #[arg(long)]
    pub json: bool,
}

/// rsync flags people type from habit, and what to use instead.
const RSYNC_HABITS: &[(&str, &str)] = &[
    ("-a", "ferry keeps permissions, owners, times, symlinks, hard links and sparse files by default: drop -a"),
    ("--archive", "ferry keeps permissions, owners, times, symlinks, hard links and sparse files by default: drop --archive"),
    ("-r", "ferry always copies the whole tree: drop -r"),
    ("--recursive", "ferry always copies the whole tree: drop --recursive"),
    ("--delete", "to remove destination files that are gone from the source, use --preserve-deleted-files remove"),
    ("-H", "hard links are kept by default: drop -H"),
    ("-S", "sparse files keep their holes by default: drop -S"),
    ("--numeric-ids", "owners are copied as numeric ids by default (--uid int-value --gid int-value): drop --numeric-ids"),
    ("--progress", "progress shows on a terminal by default; --json gives machine-readable events"),
    ("-P", "progress shows on a terminal by default; --json gives machine-readable events"),
    ("-v", "ferry reports per-file results in --report FILE and progress with --json"),
    ("--checksum", "every run verifies content with SHA-256 (--verify-mode point-in-time-consistent); to copy everything use --transfer-mode all"),
    ("-c", "every run verifies content with SHA-256 (--verify-mode point-in-time-consistent); to copy everything use --transfer-mode all"),
    ("--bwlimit", "use --bytes-per-second N"),
];

/// A helpful error for rsync flags, instead of a wall of usage.
pub fn rsync_habit(args: &[OsString]) -> Option<String> {
    if args.get(1).and_then(|a| a.to_str()) != Some("sync") {
        return None;
    }
    args.iter().skip(2).find_map(|arg| {
        let arg = arg.to_str()?;
        let flag = arg.split('=').next()?;
        // Combined short flags such as -avH: report the first one we know.
        let candidates: Vec<String> = if flag.starts_with("--") {
            vec![flag.to_string()]
        } else if let Some(short) = flag.strip_prefix('-') {
            short.chars().map(|c| format!("-{c}")).collect()
        } else {
            Vec::new()
        };
        candidates.iter().find_map(|c| {
            RSYNC_HABITS.iter().find(|(f, _)| f == c).map(|(f, hint)| {
                format!("error: ferry sync does not take rsync's {f} ({arg})\n  hint: {hint}")
            })
        })
    })
}

/// Checks the two directories and opens them; creates DEST if needed and
/// `create` (else a missing DEST is an error).
pub fn open_locations(
    source: &Path,
    dest: &Path,
    create: bool,
) -> Result<(LocalLocation, LocalLocation), String> {
    let src = source
        .canonicalize()
        .map_err(|e| format!("the source {} cannot be used: {e}", source.display()))?;
    if !src.is_dir() {
        return Err(format!(
            "the source {} is not a directory",
            source.display()
        ));
    }
    // Resolve DEST without creating it: its parent must exist.
    let dst = match dest.canonicalize() {
        Ok(d) => d,
        Err(_) => {
            let name = dest
                .file_name()
                .ok_or_else(|| format!("the destination {} has no name", dest.display()))?;
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            parent
                .canonicalize()
                .map_err(|e| {
                    format!(
                        "the destination's parent {} cannot be used: {e}",
                        parent.display()
                    )
                })?
                .join(name)
        }
    };
    if dst == src {
        return Err(format!(
            "the source and the destination are the same directory ({})",
            src.display()
        ));
    }
    if dst.starts_with(&src) {
        return Err(format!(
            "the destination {} is inside the source {}: the sync would copy into itself",
            dst.display(),
            src.display()
        ));
    }
    if src.starts_with(&dst) {
        return Err(format!(
            "the source {} is inside the destination {}: a sync would overwrite or delete its own source",
            src.display(),
            dst.display()
        ));
    }
    if dst.exists() && !dst.is_dir() {
        return Err(format!(
            "the destination {} is not a directory",
            dst.display()
        ));
    }
    if !dst.exists() && !create {
        return Err(format!(
            "the destination {} does not exist: make it first (a plan changes nothing)",
            dst.display()
        ));
    }
    if !dst.exists() {
        std::fs::create_dir(&dst)
            .map_err(|e| format!("cannot create the destination {}: {e}", dst.display()))?;
    }
    let src = LocalLocation::open(&src)
        .map_err(|e| format!("cannot open the source {}: {e}", src.display()))?;
    let dst = LocalLocation::open(&dst)
        .map_err(|e| format!("cannot open the destination {}: {e}", dst.display()))?;
    Ok((src, dst))
}

pub fn run(args: SyncArgs) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("ferry sync: {msg}");
        ExitCode::from(EXIT_USAGE)
    };
    let opts = args.options.options();
    if let Err(e) = opts.validate() {
        return usage(e.message(&Flags));
    }
    if opts.dry_run {
        return crate::plan::plan_between(&args.source, &args.dest, &opts, None, args.json);
    }
    if opts.task_report_config.destination.is_some() {
        return usage("--report-s3-bucket-arn is for tasks (their agent uploads the report); ferry sync writes it to --report".into());
    }
    let report = match &args.report {
        Some(path) => match ReportWriter::create(path) {
            Ok(r) => Some(Arc::new(r.with_config(opts.task_report_config.clone()))),
            Err(e) => return usage(format!("cannot write the report {}: {e}", path.display())),
        },
        None => None,
    };
    let (src, dst) = match open_locations(&args.source, &args.dest, true) {
        Ok(pair) => pair,
        Err(msg) => return usage(msg),
    };
    // Files are created with their final modes: no umask in the way.
    rustix::process::umask(rustix::fs::Mode::empty());

    let mut observers: Vec<Arc<dyn Observer>> = Vec::new();
    let json = args.json.then(|| Arc::new(JsonEvents));
    match &json {
        Some(j) => observers.push(j.clone()),
        None => observers.push(Arc::new(ErrorPrinter)),
    }
    if let Some(r) = &report {
        observers.push(r.clone());
    }
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal ends the process at once; temporary files are
        // cleaned up by the next run.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, cancel.clone());
        let _ = signal_hook::flag::register(signal, cancel.clone());
    }
    let execution = match Execution::new(src, dst, opts, Arc::new(Fanout(observers)), cancel) {
        Ok(e) => e,
        Err(e) => return usage(e.to_string()),
    };
    let bar = (!args.json && std::io::stderr().is_terminal()).then(ProgressBar::new);
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| crate::progress::follow(&execution, &done, bar.as_ref(), json.as_deref()));
        let result = execution.run();
        done.store(true, std::sync::atomic::Ordering::Release);
        result
    });
    let summary = match result {
        Ok(s) => s,
        Err(e) => return usage(e.to_string()),
    };
    if let Some(bar) = &bar {
        bar.finish(&summary);
    }
    if let Some(j) = &json {
        j.summary(&summary);
    }
    if let Some(r) = &report {
        if let Err(e) = r.finish(&summary) {
            eprintln!("ferry sync: cannot write the report: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    }
    if summary.status == Phase::Success {
        ExitCode::SUCCESS
    } else {
        if !args.json {
            eprintln!(
                "ferry sync: ERROR: {}",
                summary
                    .error_detail
                    .as_deref()
                    .unwrap_or("the execution failed")
            );
        }
        ExitCode::from(EXIT_ERROR)
    }
}
