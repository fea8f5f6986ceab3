// SPDX-License-Identifier: MIT
//! The task options on the command line, shared by `ferry sync`,
//! `ferry task create`, `ferry task update` and `ferry task start`.
//!
//! Every option is optional here: `sync` and `task create` fill in
//! DataSync's defaults, while `task update` and `task start` send only what
//! was given (to change the task, or to override it for one execution).
//!
//! Values are DataSync's in kebab-case (`POINT_IN_TIME_CONSISTENT` is
//! `--verify-mode point-in-time-consistent`), and the engine's messages about
//! options name them so ([`Flags`]).

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use ferry_engine::options::{
    Atime, IdMode, LogLevel, Mtime, Naming, OptionValue, OutputType, OverwriteMode,
    PosixPermissions, PreserveDeletedFiles, PreserveDevices, ReportDestination,
    ReportDestinationS3, ReportLevel, ReportOverride, TaskQueueing, TaskReportConfig, TransferMode,
    VerifyMode,
};
use ferry_engine::Options;
use serde_json::{Map, Value};

/// DataSync's `POINT_IN_TIME_CONSISTENT` as the command line spells it.
fn kebab(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The option's values in kebab-case, with their descriptions for `--help`.
fn values<T: OptionValue>() -> impl TypedValueParser<Value = T> {
    let values = T::VALUES.iter().map(|v| {
        let value = PossibleValue::new(kebab(v.name()));
        match v.description().trim_end_matches('.') {
            "" => value,
            help => value.help(help),
        }
    });
    PossibleValuesParser::new(values)
        .try_map(|given: String| given.to_ascii_uppercase().replace('-', "_").parse::<T>())
}

/// Options and values in messages as the command line has them:
/// `--atime best-effort` for the API's `Atime BEST_EFFORT`.
pub struct Flags;

impl Naming for Flags {
    fn option(&self, option: &str) -> String {
        let mut flag = String::from("--");
        for (i, c) in option.char_indices() {
            if c.is_ascii_uppercase() && i > 0 {
                flag.push('-');
            }
            flag.push(c.to_ascii_lowercase());
        }
        flag
    }
    fn value(&self, _option: &str, value: &str) -> String {
        kebab(value)
    }
}

#[derive(Args, Debug, Default, Clone)]
pub struct OptionArgs {
    /// What to check after transferring [default: point-in-time-consistent].
    #[arg(long, value_parser = values::<VerifyMode>())]
    pub verify_mode: Option<VerifyMode>,
    /// Whether destination entries that differ are overwritten [default: always].
    #[arg(long, value_parser = values::<OverwriteMode>())]
    pub overwrite_mode: Option<OverwriteMode>,
    /// Transfer only what differs, or everything [default: changed].
    #[arg(long, value_parser = values::<TransferMode>())]
    pub transfer_mode: Option<TransferMode>,
    /// Keep or remove destination entries that are gone from the source [default: preserve].
    #[arg(long, value_parser = values::<PreserveDeletedFiles>())]
    pub preserve_deleted_files: Option<PreserveDeletedFiles>,
    /// Copy FIFOs, sockets and device nodes [default: none].
    #[arg(long, value_parser = values::<PreserveDevices>())]
    pub preserve_devices: Option<PreserveDevices>,
    /// Copy permission bits [default: preserve].
    #[arg(long, value_parser = values::<PosixPermissions>())]
    pub posix_permissions: Option<PosixPermissions>,
    /// Copy numeric owner ids [default: int-value].
    #[arg(long, value_parser = values::<IdMode>())]
    pub uid: Option<IdMode>,
    /// Copy numeric group ids [default: int-value].
    #[arg(long, value_parser = values::<IdMode>())]
    pub gid: Option<IdMode>,
    /// Copy access times, needs --mtime preserve [default: best-effort].
    #[arg(long, value_parser = values::<Atime>())]
    pub atime: Option<Atime>,
    /// Copy modification times [default: preserve].
    #[arg(long, value_parser = values::<Mtime>())]
    pub mtime: Option<Mtime>,
    /// Bandwidth limit for the whole execution; -1 is unlimited [default: -1].
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub bytes_per_second: Option<i64>,
    /// Only paths matching these patterns ('|'-separated, '*' wildcard, e.g. '/photos|*.jpg').
    #[arg(long, value_name = "PATTERNS")]
    pub include: Vec<String>,
    /// Leave out paths matching these patterns ('|'-separated, '*' wildcard, e.g. '*.tmp|/cache').
    #[arg(long, value_name = "PATTERNS")]
    pub exclude: Vec<String>,
    /// Operations in flight (default: 64 on NFS, a few per CPU on local disks).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Wait behind the agent's other executions, or be refused while it has one [default: enabled].
    #[arg(long, value_parser = values::<TaskQueueing>())]
    pub task_queueing: Option<TaskQueueing>,
    /// What the execution logs of its files [default: basic].
    #[arg(long, value_parser = values::<LogLevel>())]
    pub log_level: Option<LogLevel>,
    /// Only the files a CSV manifest names (paths relative to the source, one per line; a task's is read where it runs).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<std::path::PathBuf>,
    /// The task report: the summary only, or with its entries [default: standard].
    #[arg(long, value_parser = values::<OutputType>())]
    pub report_output_type: Option<OutputType>,
    /// Which entries the report keeps: failed ones, or all [default: successes-and-errors].
    #[arg(long, value_parser = values::<ReportLevel>())]
    pub report_level: Option<ReportLevel>,
    /// The report level for transferred entries, over --report-level.
    #[arg(long, value_parser = values::<ReportLevel>())]
    pub report_transferred: Option<ReportLevel>,
    /// The report level for verified entries, over --report-level.
    #[arg(long, value_parser = values::<ReportLevel>())]
    pub report_verified: Option<ReportLevel>,
    /// The report level for deleted entries, over --report-level.
    #[arg(long, value_parser = values::<ReportLevel>())]
    pub report_deleted: Option<ReportLevel>,
    /// The report level for skipped entries, over --report-level.
    #[arg(long, value_parser = values::<ReportLevel>())]
    pub report_skipped: Option<ReportLevel>,
    /// Plan instead of copying (`-n`, as rsync's): what a run would do,
    /// what the destination cannot hold, how long it would take; nothing
    /// is changed (see `ferry plan`).
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Also upload each execution's report to this S3 bucket
    /// (arn:aws:s3:::BUCKET), with the credentials of the agent's
    /// daemon.aws section.
    #[arg(long, value_name = "ARN")]
    pub report_s3_bucket_arn: Option<String>,
    /// The folder in the bucket for the reports.
    #[arg(long, value_name = "PREFIX", requires = "report_s3_bucket_arn")]
    pub report_s3_subdirectory: Option<String>,
    /// A role the agent assumes to upload the report (DataSync's
    /// BucketAccessRoleArn).
    #[arg(long, value_name = "ARN", requires = "report_s3_bucket_arn")]
    pub report_s3_role_arn: Option<String>,
}

impl OptionArgs {
    /// DataSync's defaults with what was given.
    pub fn options(&self) -> Options {
        let d = Options::new();
        Options {
            verify_mode: self.verify_mode.unwrap_or(d.verify_mode),
            overwrite_mode: self.overwrite_mode.unwrap_or(d.overwrite_mode),
            transfer_mode: self.transfer_mode.unwrap_or(d.transfer_mode),
            preserve_deleted_files: self
                .preserve_deleted_files
                .unwrap_or(d.preserve_deleted_files),
            preserve_devices: self.preserve_devices.unwrap_or(d.preserve_devices),
            posix_permissions: self.posix_permissions.unwrap_or(d.posix_permissions),
            uid: self.uid.unwrap_or(d.uid),
            gid: self.gid.unwrap_or(d.gid),
            atime: self.atime.unwrap_or(d.atime),
            mtime: self.mtime.unwrap_or(d.mtime),
            bytes_per_second: self.bytes_per_second.unwrap_or(d.bytes_per_second),
            includes: self.include.clone(),
            excludes: self.exclude.clone(),
            parallel: self.parallel,
            task_queueing: self.task_queueing.unwrap_or(d.task_queueing),
            log_level: self.log_level.unwrap_or(d.log_level),
            manifest: self.manifest_path(),
            task_report_config: self.report_config().unwrap_or_default(),
            dry_run: self.dry_run,
        }
    }

    /// The task report's configuration, if any of its flags was given.
    fn report_config(&self) -> Option<TaskReportConfig> {
        let levels = [
            self.report_level,
            self.report_transferred,
            self.report_verified,
            self.report_deleted,
            self.report_skipped,
        ];
        if self.report_output_type.is_none()
            && levels.iter().all(Option::is_none)
            && self.report_s3_bucket_arn.is_none()
        {
            return None;
        }
        let over =
            |level: Option<ReportLevel>| level.map(|report_level| ReportOverride { report_level });
        let mut c = TaskReportConfig::default();
        c.output_type = self.report_output_type.unwrap_or(c.output_type);
        c.report_level = self.report_level.unwrap_or(c.report_level);
        c.overrides.transferred = over(self.report_transferred);
        c.overrides.verified = over(self.report_verified);
        c.overrides.deleted = over(self.report_deleted);
        c.overrides.skipped = over(self.report_skipped);
        c.destination = self
            .report_s3_bucket_arn
            .clone()
            .map(|arn| ReportDestination {
                s3: ReportDestinationS3 {
                    s3_bucket_arn: arn,
                    subdirectory: self.report_s3_subdirectory.clone(),
                    bucket_access_role_arn: self.report_s3_role_arn.clone(),
                },
            });
        Some(c)
    }

    /// The manifest's path, made absolute (the engine takes only those).
    fn manifest_path(&self) -> Option<String> {
        let path = self.manifest.as_deref()?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Some(absolute.to_string_lossy().into_owned())
    }

    /// Only the options given, under their API (DataSync) names.
    pub fn changes(&self) -> Map<String, Value> {
        fn json<T: serde::Serialize>(v: &Option<T>) -> Option<Value> {
            v.as_ref().and_then(|v| serde_json::to_value(v).ok())
        }
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| Value::from(v.clone()));
        [
            ("VerifyMode", json(&self.verify_mode)),
            ("OverwriteMode", json(&self.overwrite_mode)),
            ("TransferMode", json(&self.transfer_mode)),
            ("PreserveDeletedFiles", json(&self.preserve_deleted_files)),
            ("PreserveDevices", json(&self.preserve_devices)),
            ("PosixPermissions", json(&self.posix_permissions)),
            ("Uid", json(&self.uid)),
            ("Gid", json(&self.gid)),
            ("Atime", json(&self.atime)),
            ("Mtime", json(&self.mtime)),
            ("BytesPerSecond", json(&self.bytes_per_second)),
            ("Includes", list(&self.include)),
            ("Excludes", list(&self.exclude)),
            ("Parallel", json(&self.parallel)),
            ("TaskQueueing", json(&self.task_queueing)),
            ("LogLevel", json(&self.log_level)),
            ("Manifest", json(&self.manifest_path())),
            ("TaskReportConfig", json(&self.report_config())),
            ("DryRun", self.dry_run.then_some(Value::Bool(true))),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_only_what_was_given_in_datasync_spelling() {
        let args = OptionArgs {
            verify_mode: Some(VerifyMode::None),
            bytes_per_second: Some(1000),
            exclude: vec!["*.tmp".into()],
            ..Default::default()
        };
        let m = args.changes();
        assert_eq!(m.len(), 3);
        assert_eq!(m["VerifyMode"], "NONE");
        assert_eq!(m["BytesPerSecond"], 1000);
        assert_eq!(m["Excludes"], serde_json::json!(["*.tmp"]));
        // The full options agree with what the agent would make of the changes.
        let opts = args.options();
        let mut base = serde_json::to_value(Options::new()).unwrap();
        for (k, v) in m {
            base[k] = v;
        }
        assert_eq!(serde_json::from_value::<Options>(base).unwrap(), opts);
    }

    #[test]
    fn flags_name_options_and_values_in_kebab_case() {
        assert_eq!(
            Flags.option("PreserveDeletedFiles"),
            "--preserve-deleted-files"
        );
        assert_eq!(Flags.option("Atime"), "--atime");
        assert_eq!(Flags.value("Uid", "INT_VALUE"), "int-value");
        assert_eq!(
            ferry_engine::options::OptionsError::AtimeNeedsMtime.message(&Flags),
            "--atime best-effort needs --mtime preserve (DataSync couples them): use --atime none, or keep --mtime preserve"
        );
    }
}
