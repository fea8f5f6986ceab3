// SPDX-License-Identifier: MIT
//! DataSync's execution counters, updated lock-free by every worker.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident),+ $(,)?) => {
        /// Live counters of one execution.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $field: AtomicU64),+ }

        /// A consistent-enough copy of the counters, for reports and events.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "PascalCase", default)]
        pub struct CounterSnapshot { $($(#[$doc])* pub $field: u64),+ }

        impl Counters {
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot { $($field: self.$field.load(Ordering::Relaxed)),+ }
            }
        }

        impl CounterSnapshot {
            /// Adds `other`'s counts (several agents' parts of one execution).
            pub fn add(&mut self, other: &CounterSnapshot) {
                $(self.$field += other.$field;)+
            }
        }
    };
}

counters!(
    /// Entries found at the source (after filters).
    files_listed_source,
    /// Entries found at the destination.
    files_listed_destination,
    /// Regular-file bytes found at the source.
    bytes_prepared_source,
    /// Regular-file bytes found at the destination.
    bytes_prepared_destination,
    /// Entries the comparison decided to transfer (data or metadata).
    estimated_files_to_transfer,
    /// Data bytes the comparison decided to transfer.
    estimated_bytes_to_transfer,
    /// Destination entries the comparison decided to delete.
    estimated_files_to_delete,
    /// Entries created or updated at the destination.
    files_transferred,
    /// Data bytes read from the source and sent.
    bytes_transferred,
    /// Data bytes written at the destination (holes are not written).
    bytes_written,
    /// Bytes after compression on the wire (remote destinations only).
    bytes_compressed,
    /// Data bytes sent again to a remote destination after a broken
    /// connection or a timeout (the chunks not yet acknowledged).
    bytes_resent,
    /// Requests to a remote destination sent again.
    requests_retried,
    /// Entries whose data and metadata already matched.
    files_unchanged,
    /// Entries left alone by a rule (OverwriteMode NEVER, devices not preserved).
    files_skipped,
    /// Entries removed from the destination.
    files_deleted,
    /// Entries verified equal.
    files_verified,
    /// Data bytes of the files verified equal (compared on both sides).
    bytes_verified,
    /// Entries that changed at the source while the execution ran: reported,
    /// and copied by the next execution.
    files_changed_at_source,
    /// Failures while listing.
    files_failed_prepare,
    /// Failures while transferring.
    files_failed_transfer,
    /// Differences found by verification.
    files_failed_verify,
    /// Failures while deleting.
    files_failed_delete,
);

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl CounterSnapshot {
    pub fn files_failed(&self) -> u64 {
        self.files_failed_prepare
            + self.files_failed_transfer
            + self.files_failed_verify
            + self.files_failed_delete
    }
}
