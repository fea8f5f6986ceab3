// SPDX-License-Identifier: MIT
//! CloudWatch Logs (JSON 1.1): a log group and stream, made when missing,
//! and PutLogEvents within the service's limits.

use serde_json::json;

use crate::client::Client;
use crate::AwsError;

const TARGET: &str = "Logs_20140328";
/// PutLogEvents' limits: events per call, bytes per call (each event counts
/// its message and 26 bytes), bytes per event.
pub const MAX_EVENTS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD: usize = 26;
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;

/// One log event: milliseconds since the epoch and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ms: i64,
    pub message: String,
}

impl Event {
    /// An event, its message cut (at a character boundary) to what one
    /// event may hold.
    pub fn new(timestamp_ms: i64, mut message: String) -> Event {
        if message.len() > MAX_EVENT_BYTES {
            let mut end = MAX_EVENT_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Event {
            timestamp_ms,
            message,
        }
    }

    /// What the event counts for in a batch's size.
    pub fn size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// Makes `group` and its `stream`; those that exist already are kept.
pub fn ensure_stream(client: &Client, group: &str, stream: &str) -> Result<(), AwsError> {
    let exists = |r: Result<serde_json::Value, AwsError>| match r {
        Err(e) if e.is_api("ResourceAlreadyExistsException") => Ok(()),
        other => other.map(|_| ()),
    };
    exists(client.json(
        "logs",
        TARGET,
        "CreateLogGroup",
        &json!({ "logGroupName": group }),
    ))?;
    exists(client.json(
        "logs",
        TARGET,
        "CreateLogStream",
        &json!({ "logGroupName": group, "logStreamName": stream }),
    ))
}

/// Sends `events` (in time order, within the limits above) to the stream.
pub fn put_log_events(
    client: &Client,
    group: &str,
    stream: &str,
    events: &[Event],
) -> Result<(), AwsError> {
    let events: Vec<_> = events
        .iter()
        .map(|e| json!({ "timestamp": e.timestamp_ms, "message": e.message }))
        .collect();
    client.json(
        "logs",
        TARGET,
        "PutLogEvents",
        &json!({ "logGroupName": group, "logStreamName": stream, "logEvents": events }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_at_a_character() {
        let e = Event::new(1, "é".repeat(MAX_EVENT_BYTES));
        assert!(e.message.len() <= MAX_EVENT_BYTES);
        assert!(e.message.len() >= MAX_EVENT_BYTES - 1);
        assert_eq!(Event::new(1, "short".into()).size(), 5 + EVENT_OVERHEAD);
    }
}
