//! Task options, with AWS DataSync's names and values.
//!
//! On the command line the values are kebab-case (`point-in-time-consistent`);
//! in JSON (reports, the agent's API) they are DataSync's spelling
//! (`POINT_IN_TIME_CONSISTENT`), so a DataSync user feels at home.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::filter::{FilterError, Filters};

macro_rules! option_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? } default $default:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl Default for $name {
            fn default() -> Self { $name::$default }
        }
    };
}

option_enum!(
    /// What the VERIFYING phase checks.
    VerifyMode {
        /// Rescan both sides at the end and compare every entry, content included.
        PointInTimeConsistent,
        /// Check only what this execution transferred.
        OnlyFilesTransferred,
        /// No verification.
        None,
    } default PointInTimeConsistent
);
option_enum!(
    /// Whether destination data that differs is overwritten.
    OverwriteMode { Always, Never } default Always
);
option_enum!(
    /// Transfer only what differs, or everything.
    TransferMode { Changed, All } default Changed
);
option_enum!(
    /// Whether destination entries missing at the source are kept.
    PreserveDeletedFiles { Preserve, Remove } default Preserve
);
option_enum!(
    /// Whether FIFOs, sockets and device nodes are copied.
    PreserveDevices { None, Preserve } default None
);
option_enum!(
    /// Whether permission bits are copied.
    PosixPermissions { Preserve, None } default Preserve
);
option_enum!(
    /// Whether numeric owner (or group) ids are copied.
    IdMode { IntValue, None } default IntValue
);
option_enum!(
    /// Whether access times are copied (as far as the file systems allow).
    Atime { BestEffort, None } default BestEffort
);
option_enum!(
    /// Whether modification times are copied.
    Mtime { Preserve, None } default Preserve
);

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
}

/// An option value or combination the engine refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("--atime best-effort needs --mtime preserve (DataSync couples them): use --atime none, or keep --mtime preserve")]
    AtimeNeedsMtime,
    #[error("--preserve-deleted-files remove cannot go with --transfer-mode all: a transfer of everything does not compare the destination, so it cannot know what to delete")]
    RemoveWithTransferAll,
    #[error(
        "--bytes-per-second {0} is not valid: give -1 (unlimited) or a positive number of bytes"
    )]
    BadBandwidth(i64),
    #[error("--parallel {0} is not valid: give a number from 1 to {max}", max = MAX_PARALLEL)]
    BadParallel(usize),
    #[error(transparent)]
    Filter(#[from] FilterError),
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
        Ok(Filters::parse(&self.includes, &self.excludes)?)
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
}
