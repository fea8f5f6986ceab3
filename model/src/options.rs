// SPDX-License-Identifier: MIT
//! Task options, with AWS DataSync's names and values.
//!
//! Every value has DataSync's spelling (`POINT_IN_TIME_CONSISTENT`): in JSON
//! (reports, the agent's API), in [`FromStr`] and in [`Display`], so a
//! DataSync user feels at home. [`OptionValue`] lists an option's values, so
//! a front end can offer them in its own spelling (the `ferry` command line
//! takes `point-in-time-consistent`); [`OptionsError::message`] names options
//! and values the front end's way too.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::filter::{FilterError, Filters};

/// What every option with a fixed set of values offers.
pub trait OptionValue:
    Copy + Eq + fmt::Debug + fmt::Display + FromStr<Err = UnknownValue> + Send + Sync + 'static
{
    /// Every value, in the order a list of them shows them.
    const VALUES: &'static [Self];
    /// DataSync's name of the value (`POINT_IN_TIME_CONSISTENT`), as JSON has it.
    fn name(self) -> &'static str;
    /// What the value does, in one line; empty where the option says it all.
    fn description(self) -> &'static str;
}

/// A name that is not one of an option's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {}", .expected.join(", "))]
pub struct UnknownValue {
    pub value: String,
    /// DataSync's names of the values there are.
    pub expected: Vec<&'static str>,
}

fn parse_value<T: OptionValue>(name: &str) -> Result<T, UnknownValue> {
    T::VALUES
        .iter()
        .copied()
        .find(|v| v.name() == name)
        .ok_or_else(|| UnknownValue {
            value: name.to_string(),
            expected: T::VALUES.iter().map(|v| v.name()).collect(),
        })
}

macro_rules! option_enum {
    ($(#[$doc:meta])* $name:ident {
        $($(#[doc = $vdoc:literal])* $variant:ident = $text:literal),+ $(,)?
    } default $default:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($(#[doc = $vdoc])* $variant),+ }
        impl Default for $name {
            fn default() -> Self { $name::$default }
        }
        impl OptionValue for $name {
            const VALUES: &'static [Self] = &[$($name::$variant),+];
            fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn description(self) -> &'static str {
                match self { $($name::$variant => concat!("" $(, $vdoc)*).trim_start()),+ }
            }
        }
        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(name: &str) -> Result<Self, UnknownValue> {
                parse_value(name)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

option_enum!(
    /// What the VERIFYING phase checks.
    VerifyMode {
        /// Rescan both sides at the end and compare every entry, content included.
        PointInTimeConsistent = "POINT_IN_TIME_CONSISTENT",
        /// Check only what this execution transferred.
        OnlyFilesTransferred = "ONLY_FILES_TRANSFERRED",
        /// No verification.
        None = "NONE",
    } default PointInTimeConsistent
);
option_enum!(
    /// Whether destination data that differs is overwritten.
    OverwriteMode { Always = "ALWAYS", Never = "NEVER" } default Always
);
option_enum!(
    /// Transfer only what differs, or everything.
    TransferMode { Changed = "CHANGED", All = "ALL" } default Changed
);
option_enum!(
    /// Whether destination entries missing at the source are kept.
    PreserveDeletedFiles { Preserve = "PRESERVE", Remove = "REMOVE" } default Preserve
);
option_enum!(
    /// Whether FIFOs, sockets and device nodes are copied.
    PreserveDevices { None = "NONE", Preserve = "PRESERVE" } default None
);
option_enum!(
    /// Whether permission bits are copied.
    PosixPermissions { Preserve = "PRESERVE", None = "NONE" } default Preserve
);
option_enum!(
    /// Whether numeric owner (or group) ids are copied.
    IdMode { IntValue = "INT_VALUE", None = "NONE" } default IntValue
);
option_enum!(
    /// Whether access times are copied (as far as the file systems allow).
    Atime { BestEffort = "BEST_EFFORT", None = "NONE" } default BestEffort
);
option_enum!(
    /// Whether modification times are copied.
    Mtime { Preserve = "PRESERVE", None = "NONE" } default Preserve
);

option_enum!(
    /// Whether a start waits behind the agent's other executions.
    TaskQueueing {
        /// Queued behind the executions ahead of it: they run in series.
        Enabled = "ENABLED",
        /// Refused while the agent has another execution queued or running.
        Disabled = "DISABLED",
    } default Enabled
);
option_enum!(
    /// What an execution logs of its files (its states are always logged).
    LogLevel {
        /// No line for any file.
        Off = "OFF",
        /// A line for each file that failed.
        Basic = "BASIC",
        /// A line for each file transferred, verified, deleted or failed.
        Transfer = "TRANSFER",
    } default Basic
);

option_enum!(
    /// What the task report holds (DataSync's TaskReportConfig).
    OutputType {
        /// The execution's summary only.
        SummaryOnly = "SUMMARY_ONLY",
        /// The summary and the entries the report levels keep.
        Standard = "STANDARD",
    } default Standard
);
option_enum!(
    /// Which entries of a kind a STANDARD report keeps.
    ReportLevel {
        /// Those that failed.
        ErrorsOnly = "ERRORS_ONLY",
        /// Every one.
        SuccessesAndErrors = "SUCCESSES_AND_ERRORS",
    } default SuccessesAndErrors
);

/// A report level for one kind of entry, over the report's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReportOverride {
    pub report_level: ReportLevel,
}

/// DataSync's per-kind report levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct ReportOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transferred: Option<ReportOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<ReportOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<ReportOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<ReportOverride>,
}

/// What an execution's task report holds, and where it is uploaded
/// besides the data partition of the machine that runs the execution
/// (DataSync's TaskReportConfig).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct TaskReportConfig {
    pub output_type: OutputType,
    pub report_level: ReportLevel,
    pub overrides: ReportOverrides,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<ReportDestination>,
}

/// Where a task report is uploaded (DataSync's ReportDestination).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportDestination {
    #[serde(rename = "S3")]
    pub s3: ReportDestinationS3,
}

/// A bucket, a folder in it, and the role that may write there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReportDestinationS3 {
    /// `arn:aws:s3:::BUCKET`.
    pub s3_bucket_arn: String,
    /// A folder in the bucket (`reports/nightly`); the report's key is
    /// `SUBDIRECTORY/TASK-ID/EXECUTION-ID.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdirectory: Option<String>,
    /// A role assumed for the upload; without it, the machine's own
    /// credentials write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_access_role_arn: Option<String>,
}

impl ReportDestinationS3 {
    /// The bucket's name from the ARN (in any partition), or why it is not
    /// one S3 takes.
    pub fn bucket(&self) -> Result<&str, String> {
        let arn = &self.s3_bucket_arn;
        let name = arn
            .strip_prefix("arn:")
            .and_then(|r| r.split_once(":s3:::"))
            .filter(|(partition, _)| partition.starts_with("aws"))
            .map(|(_, name)| name)
            .ok_or_else(|| format!("{arn:?} is not an S3 bucket ARN (arn:aws:s3:::BUCKET)"))?;
        let b = name.as_bytes();
        let ok = (3..=63).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric();
        if ok {
            Ok(name)
        } else {
            Err(format!(
                "{name:?} is not a bucket name: 3 to 63 lowercase letters, digits, dots and hyphens"
            ))
        }
    }

    /// The object key of one execution's report.
    pub fn key(&self, task_id: &str, execution_id: &str) -> String {
        let mut key = self
            .subdirectory
            .as_deref()
            .map(|s| s.trim_end_matches('/').to_string())
            .unwrap_or_default();
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(&format!("{task_id}/{execution_id}.json"));
        key
    }

    /// The ARN, folder and role, or what is wrong with them.
    pub fn check(&self) -> Result<(), String> {
        self.bucket()?;
        if let Some(dir) = &self.subdirectory {
            let ok = !dir.is_empty()
                && dir.len() <= 512
                && !dir.starts_with('/')
                && !dir.chars().any(char::is_control)
                && dir
                    .trim_end_matches('/')
                    .split('/')
                    .all(|p| !p.is_empty() && p != "." && p != "..");
            if !ok {
                return Err(format!(
                    "Subdirectory {dir:?} is not a folder in a bucket: give names joined by /, without . or .. and not starting with /"
                ));
            }
        }
        if let Some(role) = &self.bucket_access_role_arn {
            let ok = role.starts_with("arn:aws")
                && role.contains(":iam::")
                && role.contains(":role/")
                && !role.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(format!(
                    "BucketAccessRoleArn {role:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                ));
            }
        }
        Ok(())
    }
}

/// The kinds of entries a report level is given for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Transferred,
    Verified,
    Deleted,
    Skipped,
}

impl TaskReportConfig {
    /// Whether the report keeps entries at all.
    pub fn has_entries(&self) -> bool {
        self.output_type == OutputType::Standard
    }

    /// Whether it keeps an entry of `kind` that succeeded (those that
    /// failed are kept whenever entries are).
    pub fn keeps_successes(&self, kind: ReportKind) -> bool {
        let o = &self.overrides;
        let over = match kind {
            ReportKind::Transferred => o.transferred,
            ReportKind::Verified => o.verified,
            ReportKind::Deleted => o.deleted,
            ReportKind::Skipped => o.skipped,
        };
        let level = over.map_or(self.report_level, |o| o.report_level);
        self.has_entries() && level == ReportLevel::SuccessesAndErrors
    }
}

/// Everything that shapes one execution.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Options {
    pub verify_mode: VerifyMode,
    pub overwrite_mode: OverwriteMode,
    pub transfer_mode: TransferMode,
    pub preserve_deleted_files: PreserveDeletedFiles,
    pub preserve_devices: PreserveDevices,
    pub posix_permissions: PosixPermissions,
    pub uid: IdMode,
    pub gid: IdMode,
    pub atime: Atime,
    pub mtime: Mtime,
    /// Bytes per second for the whole execution; -1 is unlimited.
    pub bytes_per_second: i64,
    /// DataSync SIMPLE_PATTERN filters, each `|`-separated.
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    /// Operations in flight; `None` lets the engine choose.
    pub parallel: Option<usize>,
    pub task_queueing: TaskQueueing,
    pub log_level: LogLevel,
    /// A manifest (DataSync's): an absolute path, on the machine that runs
    /// the execution, to a CSV of paths relative to the source; only those
    /// are transferred and verified.
    pub manifest: Option<String>,
    /// What the task report holds (DataSync's TaskReportConfig, carried
    /// with the options so a start can override it).
    pub task_report_config: TaskReportConfig,
    /// Ferry's: plan the run instead (PREPARING alone, nothing changed):
    /// the report is the migration plan, and its estimate is shown beside
    /// the next execution's time. A start sets it (`OverrideOptions`).
    pub dry_run: bool,
}

/// An option value or combination the engine refuses.
///
/// Its [`Display`](fmt::Display) names options and values as the API does
/// (`Atime BEST_EFFORT needs Mtime PRESERVE …`); [`OptionsError::message`]
/// names them a front end's way.
#[derive(Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// `Atime` `BEST_EFFORT` with `Mtime` `NONE`.
    AtimeNeedsMtime,
    /// `PreserveDeletedFiles` `REMOVE` with `TransferMode` `ALL`.
    RemoveWithTransferAll,
    /// A `BytesPerSecond` that is neither -1 nor positive.
    BadBandwidth(i64),
    /// A `Parallel` out of 1 to [`MAX_PARALLEL`].
    BadParallel(usize),
    /// A `Manifest` that is not an absolute path.
    ManifestNotAbsolute(String),
    /// A `Manifest` with `Includes` or with `PreserveDeletedFiles` `REMOVE`.
    ManifestWith(&'static str),
    /// A task report's S3 destination S3 would refuse.
    ReportDestination(String),
    Filter(FilterError),
}

/// How a message names options and their values.
pub trait Naming {
    /// The option the API calls `option` (`Atime`, `BytesPerSecond`).
    fn option(&self, option: &str) -> String;
    /// The value DataSync calls `value` (`BEST_EFFORT`) of `option`.
    fn value(&self, option: &str, value: &str) -> String;
}

/// The API's names: the task's options (`Atime`) and DataSync's values
/// (`BEST_EFFORT`), as the JSON of a task has them.
pub struct ApiNames;

impl Naming for ApiNames {
    fn option(&self, option: &str) -> String {
        option.to_string()
    }
    fn value(&self, _option: &str, value: &str) -> String {
        value.to_string()
    }
}

impl OptionsError {
    /// The message, with options and values named by `names`.
    pub fn message(&self, names: &dyn Naming) -> String {
        let set = |option: &str, value: &str| {
            format!("{} {}", names.option(option), names.value(option, value))
        };
        match self {
            OptionsError::AtimeNeedsMtime => format!(
                "{} needs {} (DataSync couples them): use {}, or keep {}",
                set("Atime", Atime::BestEffort.name()),
                set("Mtime", Mtime::Preserve.name()),
                set("Atime", Atime::None.name()),
                set("Mtime", Mtime::Preserve.name()),
            ),
            OptionsError::RemoveWithTransferAll => format!(
                "{} cannot go with {}: a transfer of everything does not compare the destination, so it cannot know what to delete",
                set("PreserveDeletedFiles", PreserveDeletedFiles::Remove.name()),
                set("TransferMode", TransferMode::All.name()),
            ),
            OptionsError::BadBandwidth(n) => format!(
                "{} {n} is not valid: give -1 (unlimited) or a positive number of bytes",
                names.option("BytesPerSecond")
            ),
            OptionsError::BadParallel(n) => format!(
                "{} {n} is not valid: give a number from 1 to {MAX_PARALLEL}",
                names.option("Parallel")
            ),
            OptionsError::ManifestNotAbsolute(p) => format!(
                "{} {p:?} is not an absolute path: give the manifest's full path on the machine that runs the execution",
                names.option("Manifest")
            ),
            OptionsError::ManifestWith("Includes") => format!(
                "{} cannot go with {}: the manifest names what is transferred",
                names.option("Manifest"),
                names.option("Includes")
            ),
            OptionsError::ManifestWith(_) => format!(
                "{} cannot go with {}: a manifest names some files, so what it does not name is not gone from the source",
                names.option("Manifest"),
                set("PreserveDeletedFiles", PreserveDeletedFiles::Remove.name()),
            ),
            OptionsError::ReportDestination(why) => format!(
                "{}: {why}",
                names.option("TaskReportConfig")
            ),
            OptionsError::Filter(e) => e.to_string(),
        }
    }
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(&ApiNames))
    }
}

impl std::error::Error for OptionsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OptionsError::Filter(e) => e.source(),
            _ => None,
        }
    }
}

impl From<FilterError> for OptionsError {
    fn from(e: FilterError) -> Self {
        OptionsError::Filter(e)
    }
}

/// More threads than this buy nothing but memory.
pub const MAX_PARALLEL: usize = 1024;

impl Options {
    pub fn new() -> Self {
        Options {
            bytes_per_second: -1,
            ..Default::default()
        }
    }

    /// Checks values and combinations; returns the parsed filters.
    pub fn validate(&self) -> Result<Filters, OptionsError> {
        if self.atime == Atime::BestEffort && self.mtime == Mtime::None {
            return Err(OptionsError::AtimeNeedsMtime);
        }
        if self.preserve_deleted_files == PreserveDeletedFiles::Remove
            && self.transfer_mode == TransferMode::All
        {
            return Err(OptionsError::RemoveWithTransferAll);
        }
        if self.bytes_per_second == 0 || self.bytes_per_second < -1 {
            return Err(OptionsError::BadBandwidth(self.bytes_per_second));
        }
        if let Some(n) = self.parallel {
            if n == 0 || n > MAX_PARALLEL {
                return Err(OptionsError::BadParallel(n));
            }
        }
        if let Some(m) = &self.manifest {
            if !m.starts_with('/') {
                return Err(OptionsError::ManifestNotAbsolute(m.clone()));
            }
            if !self.includes.is_empty() {
                return Err(OptionsError::ManifestWith("Includes"));
            }
            if self.preserve_deleted_files == PreserveDeletedFiles::Remove {
                return Err(OptionsError::ManifestWith("PreserveDeletedFiles"));
            }
        }
        if let Some(d) = &self.task_report_config.destination {
            d.s3.check().map_err(OptionsError::ReportDestination)?;
        }
        Ok(Filters::parse(&self.includes, &self.excludes)?)
    }

    /// These options with `changes` (DataSync's names and values, as a
    /// task's JSON has them: `{"VerifyMode": "NONE"}`), checked; the
    /// message names the option.
    pub fn with(
        &self,
        changes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Options, String> {
        let mut value = serde_json::to_value(self).expect("options serialize");
        let known = value.as_object_mut().expect("options are an object");
        for (key, v) in changes {
            if !known.contains_key(key) {
                let names: Vec<&str> = known.keys().map(String::as_str).collect();
                return Err(format!(
                    "unknown option {key}: the options are {}",
                    names.join(", ")
                ));
            }
            known.insert(key.clone(), v.clone());
        }
        let options: Options =
            serde_json::from_value(value).map_err(|e| format!("options: {e}"))?;
        options.validate().map_err(|e| e.to_string())?;
        Ok(options)
    }

    /// The bandwidth limit, if any.
    pub fn bandwidth_limit(&self) -> Option<u64> {
        u64::try_from(self.bytes_per_second).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_destination_names_a_bucket_a_folder_and_a_role_s3_takes() {
        let s3 = |arn: &str, dir: Option<&str>, role: Option<&str>| ReportDestinationS3 {
            s3_bucket_arn: arn.into(),
            subdirectory: dir.map(str::to_string),
            bucket_access_role_arn: role.map(str::to_string),
        };
        let ok = s3(
            "arn:aws:s3:::my-reports",
            Some("nightly/"),
            Some("arn:aws:iam::123456789012:role/r"),
        );
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.bucket(), Ok("my-reports"));
        assert_eq!(ok.key("task-1", "exec-2"), "nightly/task-1/exec-2.json");
        assert_eq!(
            s3("arn:aws:s3:::b.c.d", None, None).key("t", "e"),
            "t/e.json"
        );
        assert_eq!(
            s3("arn:aws-us-gov:s3:::a.b.c", None, None).bucket(),
            Ok("a.b.c")
        );
        let err = |d: ReportDestinationS3| d.check().unwrap_err();
        assert!(err(s3("my-reports", None, None)).contains("not an S3 bucket ARN"));
        assert!(err(s3("arn:aws:s3:::Upper", None, None)).contains("not a bucket name"));
        assert!(err(s3("arn:aws:s3:::ab", None, None)).contains("not a bucket name"));
        assert!(err(s3("arn:aws:s3:::b/../x", None, None)).contains("not a bucket name"));
        assert!(err(s3("arn:aws:s3:::bkt", Some("../x"), None)).starts_with("Subdirectory"));
        assert!(err(s3("arn:aws:s3:::bkt", Some("/abs"), None)).starts_with("Subdirectory"));
        assert!(err(s3("arn:aws:s3:::bkt", None, Some("admin"))).starts_with("BucketAccessRoleArn"));
        // In the options, the message names the option.
        let opts = Options {
            task_report_config: TaskReportConfig {
                destination: Some(ReportDestination {
                    s3: s3("bucket", None, None),
                }),
                ..TaskReportConfig::default()
            },
            ..Options::new()
        };
        assert!(opts
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("TaskReportConfig: "));
    }

    #[test]
    fn defaults_are_datasyncs() {
        let o = Options::new();
        assert_eq!(o.verify_mode, VerifyMode::PointInTimeConsistent);
        assert_eq!(o.overwrite_mode, OverwriteMode::Always);
        assert_eq!(o.transfer_mode, TransferMode::Changed);
        assert_eq!(o.preserve_deleted_files, PreserveDeletedFiles::Preserve);
        assert_eq!(o.preserve_devices, PreserveDevices::None);
        assert_eq!(o.posix_permissions, PosixPermissions::Preserve);
        assert_eq!(o.uid, IdMode::IntValue);
        assert_eq!(o.atime, Atime::BestEffort);
        assert_eq!(o.mtime, Mtime::Preserve);
        assert_eq!(o.bytes_per_second, -1);
        assert_eq!(o.task_queueing, TaskQueueing::Enabled);
        assert_eq!(o.log_level, LogLevel::Basic);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn refuses_bad_combinations() {
        let mut o = Options::new();
        o.mtime = Mtime::None;
        assert_eq!(o.validate().unwrap_err(), OptionsError::AtimeNeedsMtime);
        o.atime = Atime::None;
        assert!(o.validate().is_ok());

        let mut o = Options::new();
        o.preserve_deleted_files = PreserveDeletedFiles::Remove;
        o.transfer_mode = TransferMode::All;
        assert_eq!(
            o.validate().unwrap_err(),
            OptionsError::RemoveWithTransferAll
        );

        let mut o = Options::new();
        o.bytes_per_second = 0;
        assert_eq!(o.validate().unwrap_err(), OptionsError::BadBandwidth(0));
        o.bytes_per_second = -5;
        assert!(o.validate().is_err());
        o.bytes_per_second = 1;
        assert!(o.validate().is_ok());

        let mut o = Options::new();
        o.parallel = Some(0);
        assert_eq!(o.validate().unwrap_err(), OptionsError::BadParallel(0));

        let mut o = Options::new();
        o.manifest = Some("list.csv".into());
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not an absolute path"));
        o.manifest = Some("/data/list.csv".into());
        assert!(o.validate().is_ok());
        o.includes = vec!["/a".into()];
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cannot go with Includes"));
        o.includes.clear();
        o.preserve_deleted_files = PreserveDeletedFiles::Remove;
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cannot go with PreserveDeletedFiles REMOVE"));
    }

    #[test]
    fn a_task_report_keeps_what_its_levels_say() {
        let all = TaskReportConfig::default();
        assert!(all.keeps_successes(ReportKind::Verified));
        let config: TaskReportConfig = serde_json::from_value(serde_json::json!({
            "ReportLevel": "ERRORS_ONLY",
            "Overrides": {"Deleted": {"ReportLevel": "SUCCESSES_AND_ERRORS"}}
        }))
        .unwrap();
        assert!(config.has_entries());
        assert!(!config.keeps_successes(ReportKind::Transferred));
        assert!(config.keeps_successes(ReportKind::Deleted));
        let summary: TaskReportConfig =
            serde_json::from_value(serde_json::json!({"OutputType": "SUMMARY_ONLY"})).unwrap();
        assert!(!summary.has_entries());
        assert!(!summary.keeps_successes(ReportKind::Deleted));
        // DataSync's spelling only.
        let e =
            serde_json::from_value::<TaskReportConfig>(serde_json::json!({"Level": "ERRORS_ONLY"}));
        assert!(e.is_err());
    }

    #[test]
    fn json_uses_datasync_spelling() {
        let o = Options::new();
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["VerifyMode"], "POINT_IN_TIME_CONSISTENT");
        assert_eq!(v["PreserveDeletedFiles"], "PRESERVE");
        assert_eq!(v["Uid"], "INT_VALUE");
        let back: Options = serde_json::from_value(v).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn changes_are_checked_and_named() {
        let change = |json: &str| Options::new().with(&serde_json::from_str(json).unwrap());
        let o = change(r#"{"VerifyMode": "NONE", "Parallel": 4}"#).unwrap();
        assert_eq!((o.verify_mode, o.parallel), (VerifyMode::None, Some(4)));
        let e = change(r#"{"VerifyMod": "NONE"}"#).unwrap_err();
        assert!(
            e.starts_with("unknown option VerifyMod: the options are Atime, "),
            "{e}"
        );
        let e = change(r#"{"VerifyMode": "SOMETIMES"}"#).unwrap_err();
        assert!(e.starts_with("options: unknown variant `SOMETIMES`"), "{e}");
        let e = change(r#"{"Mtime": "NONE"}"#).unwrap_err();
        assert!(
            e.starts_with("Atime BEST_EFFORT needs Mtime PRESERVE"),
            "{e}"
        );
        let e = change(r#"{"Excludes": ["a||b"]}"#).unwrap_err();
        assert!(e.contains("empty pattern"), "{e}");
    }

    /// Every value of `T`: its name is serde's, `FromStr` and `Display` agree.
    fn names_agree<T: OptionValue + Serialize + for<'de> Deserialize<'de>>() {
        for &v in T::VALUES {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name(), "{v:?}");
            assert_eq!(v.to_string(), v.name());
            assert_eq!(v.name().parse::<T>().unwrap(), v);
        }
        let err = "sometimes".parse::<T>().unwrap_err();
        let names: Vec<_> = T::VALUES.iter().map(|v| v.name()).collect();
        assert_eq!(err.expected, names);
        assert!(err.to_string().contains("\"sometimes\""), "{err}");
    }

    #[test]
    fn value_names_are_datasyncs() {
        names_agree::<VerifyMode>();
        names_agree::<OverwriteMode>();
        names_agree::<TransferMode>();
        names_agree::<PreserveDeletedFiles>();
        names_agree::<PreserveDevices>();
        names_agree::<PosixPermissions>();
        names_agree::<IdMode>();
        names_agree::<Atime>();
        names_agree::<Mtime>();
        names_agree::<TaskQueueing>();
        names_agree::<LogLevel>();
        names_agree::<OutputType>();
        names_agree::<ReportLevel>();
        assert_eq!(
            VerifyMode::VALUES,
            [
                VerifyMode::PointInTimeConsistent,
                VerifyMode::OnlyFilesTransferred,
                VerifyMode::None
            ]
        );
        assert_eq!(
            VerifyMode::OnlyFilesTransferred.description(),
            "Check only what this execution transferred."
        );
        assert_eq!(Atime::BestEffort.description(), "");
        // Not DataSync's spelling: not a value.
        assert!("point-in-time-consistent".parse::<VerifyMode>().is_err());
    }

    #[test]
    fn messages_name_options_as_the_api_does_or_as_told() {
        assert_eq!(
            OptionsError::AtimeNeedsMtime.to_string(),
            "Atime BEST_EFFORT needs Mtime PRESERVE (DataSync couples them): use Atime NONE, or keep Mtime PRESERVE"
        );
        assert!(OptionsError::RemoveWithTransferAll
            .to_string()
            .starts_with("PreserveDeletedFiles REMOVE cannot go with TransferMode ALL: "));
        assert_eq!(
            OptionsError::BadParallel(0).to_string(),
            "Parallel 0 is not valid: give a number from 1 to 1024"
        );
        assert!(OptionsError::BadBandwidth(-5)
            .to_string()
            .starts_with("BytesPerSecond -5 is not valid"));
        struct Shout;
        impl Naming for Shout {
            fn option(&self, option: &str) -> String {
                format!("<{option}>")
            }
            fn value(&self, option: &str, value: &str) -> String {
                format!("{option}={value}")
            }
        }
        assert_eq!(
            OptionsError::AtimeNeedsMtime.message(&Shout),
            "<Atime> Atime=BEST_EFFORT needs <Mtime> Mtime=PRESERVE (DataSync couples them): use <Atime> Atime=NONE, or keep <Mtime> Mtime=PRESERVE"
        );
        assert_eq!(
            OptionsError::BadBandwidth(0).message(&Shout),
            "<BytesPerSecond> 0 is not valid: give -1 (unlimited) or a positive number of bytes"
        );
    }
}
