// SPDX-License-Identifier: MIT
//! What an execution tells the world: phase changes and one record per entry
//! that was transferred, verified, deleted, skipped or failed.
//!
//! [`ReportWriter`] spools records to a temporary file while the execution
//! runs (memory stays flat whatever the tree's size) and writes the JSON task
//! report at the end.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::counters::CounterSnapshot;
use crate::location::Kind;
use crate::options::{ReportKind, TaskReportConfig};

/// The states of an execution, as DataSync names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Queued,
    Launching,
    Preparing,
    Transferring,
    Verifying,
    Success,
    Error,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        f.write_str(text.as_str().unwrap_or("?"))
    }
}

/// What happened to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Transferred,
    Verified,
    Deleted,
    Skipped,
    Failed,
    /// Changed at the source while the execution ran; the next run copies it.
    ChangedAtSource,
}

/// One record of the task report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Path from the root of the location, `/`-rooted; bytes that are not
    /// UTF-8 are shown as U+FFFD here and kept exactly in `path_hex`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_hex: Option<String>,
    pub kind: Kind,
    pub outcome: Outcome,
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
}

impl Record {
    pub fn new(path: &[u8], kind: Kind, outcome: Outcome, phase: Phase) -> Record {
        let (path, path_hex) = match std::str::from_utf8(path) {
            Ok(s) => (s.to_string(), None),
            Err(_) => (
                String::from_utf8_lossy(path).into_owned(),
                Some(path.iter().map(|b| format!("{b:02x}")).collect()),
            ),
        };
        Record {
            path,
            path_hex,
            kind,
            outcome,
            phase,
            reason: None,
            errno: None,
            bytes: None,
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Record {
        self.reason = Some(reason.into());
        self
    }

    pub fn error(mut self, what: &str, err: &io::Error) -> Record {
        self.errno = err.raw_os_error();
        self.reason = Some(format!("{what}: {err}"));
        self
    }

    pub fn bytes(mut self, bytes: u64) -> Record {
        self.bytes = Some(bytes);
        self
    }
}

/// Receives what an execution does. Called from many threads.
pub trait Observer: Send + Sync {
    fn phase(&self, _phase: Phase, _counters: &CounterSnapshot) {}
    /// Whether per-entry records are wanted at all (building them costs).
    fn wants_records(&self) -> bool {
        false
    }
    fn record(&self, _record: Record) {}
}

/// An observer that wants nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Several observers as one.
pub struct Fanout(pub Vec<std::sync::Arc<dyn Observer>>);

impl Observer for Fanout {
    fn phase(&self, phase: Phase, counters: &CounterSnapshot) {
        self.0.iter().for_each(|o| o.phase(phase, counters));
    }
    fn wants_records(&self) -> bool {
        self.0.iter().any(|o| o.wants_records())
    }
    fn record(&self, record: Record) {
        for o in &self.0 {
            if o.wants_records() {
                o.record(record.clone());
            }
        }
    }
}

/// Spools records and writes the JSON task report.
pub struct ReportWriter {
    target: PathBuf,
    spool: Mutex<BufWriter<File>>,
    error: Mutex<Option<io::Error>>,
    config: TaskReportConfig,
}

impl ReportWriter {
    /// Prepares a report at `target`; the file is written by [`Self::finish`].
    pub fn create(target: &Path) -> io::Result<ReportWriter> {
        // Fail early on an unwritable target, before anything is copied.
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let spool = tempfile::tempfile_in(&parent)?;
        Ok(ReportWriter {
            target: target.to_path_buf(),
            spool: Mutex::new(BufWriter::new(spool)),
            error: Mutex::new(None),
            config: TaskReportConfig::default(),
        })
    }

    /// Keeps only what `config` asks for (every entry by default).
    pub fn with_config(mut self, config: TaskReportConfig) -> ReportWriter {
        self.config = config;
        self
    }

    /// Whether the report keeps `record`: a failure whenever it has
    /// entries, a success as its kind's report level says.
    fn keeps(&self, record: &Record) -> bool {
        let kind = match record.outcome {
            Outcome::Transferred => ReportKind::Transferred,
            Outcome::Verified => ReportKind::Verified,
            Outcome::Deleted => ReportKind::Deleted,
            Outcome::Skipped => ReportKind::Skipped,
            Outcome::Failed | Outcome::ChangedAtSource => return self.config.has_entries(),
        };
        self.config.keeps_successes(kind)
    }

    /// Writes `{"Summary": summary, "Entries": [records...]}` atomically
    /// (the summary alone for SUMMARY_ONLY).
    pub fn finish<T: Serialize>(&self, summary: &T) -> io::Result<()> {
        if let Some(e) = self.error.lock().unwrap().take() {
            return Err(e);
        }
        let mut spool = self.spool.lock().unwrap();
        spool.flush()?;
        let file = spool.get_mut();
        file.rewind()?;
        let records = BufReader::new(file.try_clone()?);

        let tmp = self.target.with_extension("partial");
        // 0600 whatever the umask (the agent runs with 0); made anew, never
        // opened through a link left at that name.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?
        };
        let mut out = BufWriter::new(file);
        out.write_all(b"{\"Summary\":")?;
        serde_json::to_writer(&mut out, summary)?;
        if self.config.has_entries() {
            out.write_all(b",\n\"Entries\":[")?;
            for (i, line) in records.lines().enumerate() {
                out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
                out.write_all(line?.as_bytes())?;
            }
            out.write_all(b"\n]")?;
        }
        out.write_all(b"}\n")?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &self.target)
    }
}

impl Observer for ReportWriter {
    fn wants_records(&self) -> bool {
        self.config.has_entries()
    }

    fn record(&self, record: Record) {
        if !self.keeps(&record) {
            return;
        }
        let mut spool = self.spool.lock().unwrap();
        let result = serde_json::to_writer(&mut *spool, &record)
            .map_err(io::Error::from)
            .and_then(|_| spool.write_all(b"\n"));
        if let Err(e) = result {
            self.error.lock().unwrap().get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{ReportLevel, ReportOverride};

    /// The outcomes a report written under `config` keeps, and whether it
    /// has entries at all.
    fn kept(config: TaskReportConfig) -> Option<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.json");
        let w = ReportWriter::create(&target).unwrap().with_config(config);
        for outcome in [
            Outcome::Transferred,
            Outcome::Verified,
            Outcome::Deleted,
            Outcome::Skipped,
            Outcome::Failed,
        ] {
            if w.wants_records() {
                w.record(Record::new(b"/f", Kind::File, outcome, Phase::Transferring));
            }
        }
        w.finish(&serde_json::json!({"Status": "SUCCESS"})).unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
        assert_eq!(report["Summary"]["Status"], "SUCCESS");
        let entries = report.get("Entries")?.as_array().unwrap();
        Some(
            entries
                .iter()
                .map(|e| e["outcome"].as_str().unwrap().to_string())
                .collect(),
        )
    }

    #[test]
    fn a_report_keeps_what_its_levels_say() {
        assert_eq!(
            kept(TaskReportConfig::default()).unwrap(),
            ["transferred", "verified", "deleted", "skipped", "failed"]
        );
        let mut errors_only = TaskReportConfig {
            report_level: ReportLevel::ErrorsOnly,
            ..Default::default()
        };
        assert_eq!(kept(errors_only.clone()).unwrap(), ["failed"]);
        errors_only.overrides.verified = Some(ReportOverride {
            report_level: ReportLevel::SuccessesAndErrors,
        });
        assert_eq!(kept(errors_only).unwrap(), ["verified", "failed"]);
        let summary_only = TaskReportConfig {
            output_type: crate::options::OutputType::SummaryOnly,
            ..Default::default()
        };
        assert_eq!(kept(summary_only), None, "the summary alone");
    }
}
