// SPDX-License-Identifier: MIT
//! `daemon.aws`: the daemon's [`Cloud`] on `ferry-aws`'s publisher
//! (CloudWatch metrics and logs, task reports to S3).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_aws::cloudwatch::Datum;
use ferry_aws::credentials::{Credentials, Provider};
use ferry_aws::imds::{self, Imds};
use ferry_aws::publisher::{Publisher, Settings, Upload};
use ferry_aws::Client;
use ferry_daemon::cloud::{Cloud, CloudCounts, Ended};
use ferry_model::config::aws::Aws;

/// A request to AWS gets at most this long (a report upload included).
const REQUEST_BUDGET: Duration = Duration::from_secs(120);

pub struct AwsCloud {
    publisher: Publisher,
    /// This machine's name in the `AgentId` dimension.
    agent_id: Box<dyn Fn() -> String + Send + Sync>,
}

/// The cloud `aws` describes; `agent_id` names this machine. Without a
/// region, the instance's is read from IMDS, and that failing is an error.
pub fn start(
    aws: &Aws,
    log_stream: &str,
    agent_id: Box<dyn Fn() -> String + Send + Sync>,
) -> Result<AwsCloud, String> {
    let imds = Imds::new(aws.imds_endpoint.as_deref().unwrap_or(imds::ENDPOINT));
    let region = match &aws.region {
        Some(r) => r.clone(),
        None => imds.region().map_err(|e| {
            format!("daemon.aws.region is not set, and the instance's cannot be read: {e}")
        })?,
    };
    let provider = match (&aws.access_key_id, &aws.secret_access_key) {
        (Some(id), Some(secret)) => Provider::Static(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: aws.session_token.clone(),
        }),
        _ => Provider::instance_role(imds),
    };
    let client = Client::with_provider(
        Arc::new(provider),
        region,
        aws.endpoint_url.clone(),
        REQUEST_BUDGET,
    );
    let settings = Settings {
        namespace: aws
            .cloudwatch_metrics
            .then(|| aws.cloudwatch_namespace.clone()),
        log_group: aws.cloudwatch_log_group.clone(),
        // CloudWatch Logs refuses : and * in a stream's name.
        log_stream: log_stream.replace([':', '*'], "-"),
    };
    Ok(AwsCloud {
        publisher: Publisher::start(client, settings),
        agent_id,
    })
}

impl Cloud for AwsCloud {
    fn log(&self, line: &str) {
        self.publisher
            .log(Utc::now().timestamp_millis(), line.to_string());
    }

    fn ended(&self, ended: Ended) {
        let agent_id = ended.agent_id.unwrap_or_else(|| (self.agent_id)());
        let now = Utc::now();
        let dimensions = vec![
            ("TaskId".to_string(), ended.task_id.clone()),
            ("AgentId".to_string(), agent_id),
        ];
        self.publisher.metrics(
            ended
                .metrics
                .iter()
                .map(|(name, value, unit)| Datum {
                    name: name.to_string(),
                    value: *value as f64,
                    unit,
                    dimensions: dimensions.clone(),
                    timestamp: now,
                })
                .collect(),
        );
        let Some((path, s3)) = ended.report else {
            return;
        };
        let done = ended.uploaded;
        let bucket = match s3.bucket() {
            Ok(b) => b.to_string(),
            Err(e) => return done(Err(e)),
        };
        let key = s3.key(&ended.task_id, &ended.execution_id);
        let uri = format!("s3://{bucket}/{key}");
        self.publisher.upload(Upload {
            bucket,
            key,
            path,
            content_type: "application/json",
            role_arn: s3.bucket_access_role_arn,
            done: Box::new(move |r| done(r.map(|()| uri).map_err(|e| e.to_string()))),
        });
    }

    fn counts(&self) -> CloudCounts {
        let c = &self.publisher.counts;
        CloudCounts {
            log_lines_sent: c.log_events_sent.load(Ordering::Relaxed),
            log_lines_dropped: c.log_events_dropped.load(Ordering::Relaxed),
            metrics_sent: c.metrics_sent.load(Ordering::Relaxed),
            metrics_dropped: c.metrics_dropped.load(Ordering::Relaxed),
        }
    }
}
