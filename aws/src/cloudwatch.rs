// SPDX-License-Identifier: MIT
//! CloudWatch PutMetricData, in the Query protocol.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::client::Client;
use crate::AwsError;

const VERSION: &str = "2010-08-01";
/// Metrics in one PutMetricData call (CloudWatch takes up to 1,000).
pub const MAX_DATA: usize = 1000;

/// One value of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub name: String,
    pub value: f64,
    /// CloudWatch's unit: `Count`, `Bytes`, `Milliseconds`, …
    pub unit: &'static str,
    pub dimensions: Vec<(String, String)>,
    pub timestamp: DateTime<Utc>,
}

/// The Query parameters of one PutMetricData call.
fn params(namespace: &str, data: &[Datum]) -> Vec<(String, String)> {
    let mut p = vec![("Namespace".to_string(), namespace.to_string())];
    for (i, d) in data.iter().enumerate() {
        let m = format!("MetricData.member.{}", i + 1);
        p.push((format!("{m}.MetricName"), d.name.clone()));
        p.push((format!("{m}.Value"), d.value.to_string()));
        p.push((format!("{m}.Unit"), d.unit.to_string()));
        p.push((
            format!("{m}.Timestamp"),
            d.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
        ));
        for (j, (name, value)) in d.dimensions.iter().enumerate() {
            let dim = format!("{m}.Dimensions.member.{}", j + 1);
            p.push((format!("{dim}.Name"), name.clone()));
            p.push((format!("{dim}.Value"), value.clone()));
        }
    }
    p
}

/// Publishes `data` (at most [`MAX_DATA`]) in `namespace`.
pub fn put_metric_data(client: &Client, namespace: &str, data: &[Datum]) -> Result<(), AwsError> {
    for chunk in data.chunks(MAX_DATA) {
        client.query(
            "monitoring",
            "PutMetricData",
            VERSION,
            &params(namespace, chunk),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_datum_is_numbered_with_its_dimensions() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T08:00:00Z")
            .unwrap()
            .to_utc();
        let p = params(
            "Ferry",
            &[Datum {
                name: "BytesTransferred".into(),
                value: 42.0,
                unit: "Bytes",
                dimensions: vec![
                    ("TaskId".into(), "task-1".into()),
                    ("AgentId".into(), "agent-1".into()),
                ],
                timestamp: t,
            }],
        );
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Namespace"), Some("Ferry"));
        assert_eq!(
            get("MetricData.member.1.MetricName"),
            Some("BytesTransferred")
        );
        assert_eq!(get("MetricData.member.1.Value"), Some("42"));
        assert_eq!(
            get("MetricData.member.1.Timestamp"),
            Some("2026-12-07T08:00:00.000Z")
        );
        assert_eq!(
            get("MetricData.member.1.Dimensions.member.2.Name"),
            Some("AgentId")
        );
        assert_eq!(
            get("MetricData.member.1.Dimensions.member.2.Value"),
            Some("agent-1")
        );
    }
}
