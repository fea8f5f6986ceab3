// SPDX-License-Identifier: MIT
//! `daemon.aws` against moto's server (PyPI `moto[server]`, a local AWS
//! API emulator, which also serves the instance metadata service): a hub
//! and its agent publish each execution's metrics to CloudWatch and their
//! log lines to CloudWatch Logs with the instance role's credentials
//! (IMDSv2); the agent uploads the task report to the bucket the task
//! names, as the role it names. Read back with boto3 and from moto's
//! request recording. And with CloudWatch out of reach, the transfer ends
//! as usual and what could not be sent is dropped and counted.

mod common;
#[path = "common/daemons.rs"]
mod daemons;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ferry_aws::moto::Moto;
use serde_json::{json, Value};

use daemons::{
    activate, agent_id, free_port, make_task, make_tree, start_task, wait_execution, wait_for,
    Agent, Binaries, Daemon, Hub,
};

/// Runs `script` with boto3 clients `s3`, `cw` and `logs` on moto.
fn boto3(moto: &Moto, script: &str) -> String {
    moto.python(
        &format!(
            "s3 = boto3.client('s3', **kw); cw = boto3.client('cloudwatch', **kw); logs = boto3.client('logs', **kw)\n{script}"
        ),
        &[],
    )
}

fn boto3_json(moto: &Moto, script: &str) -> Value {
    serde_json::from_str(&boto3(moto, script)).unwrap()
}

/// `GET /metrics` on the daemon's socket: the Prometheus text.
fn metrics(d: &Daemon) -> String {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn header<'a>(request: &'a Value, name: &str) -> &'a str {
    request["headers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[test]
fn a_hub_and_its_agent_publish_to_cloudwatch_and_the_report_goes_to_s3_as_the_role() {
    let moto = Moto::start();
    boto3(&moto, "s3.create_bucket(Bucket='ferry-reports')");
    let tmp = tempfile::tempdir().unwrap();
    // No region and no keys: both come from the instance (moto's IMDS).
    let aws = format!(
        "  aws:\n    endpoint_url: {url}\n    imds_endpoint: {url}\n    cloudwatch_metrics: true\n    cloudwatch_namespace: FerryTest\n    cloudwatch_log_group: /ferry/test\n",
        url = moto.url
    );
    let hub = Hub::start_configured(
        &Binaries::cargo(),
        &tmp.path().join("hub"),
        1800,
        None,
        free_port(),
        &aws,
    );
    let agent = Agent::start_with(
        &tmp.path().join("agent"),
        &format!("  hub_local_sources: [{}]\n{aws}", tmp.path().display()),
        None,
    );
    activate(&hub, &agent, hub.addr);
    let agent_id = agent_id(&hub, "site");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 300_000);
    std::fs::create_dir(&dst).unwrap();
    let task = make_task(&hub, &agent_id, &src, &dst, false, 4);
    let role = "arn:aws:iam::123456789012:role/ferry-reports";
    let exec = start_task(
        &hub,
        &task,
        json!({"OverrideOptions": {"TaskReportConfig": {"Destination": {"S3": {
            "S3BucketArn": "arn:aws:s3:::ferry-reports",
            "Subdirectory": "reports/nightly",
            "BucketAccessRoleArn": role,
        }}}}}),
    );
    let e = wait_execution(&hub.d, &exec, Duration::from_secs(300));
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    let transferred = e["Counters"]["FilesTransferred"].as_u64().unwrap();
    assert!(transferred > 200, "{e}");

    // The report: in the bucket, under the folder, as the agent wrote it.
    let mut keys = Vec::new();
    wait_for("the report in S3", Duration::from_secs(60), || {
        keys = boto3_json(&moto, "print(json.dumps([o['Key'] for o in s3.list_objects_v2(Bucket='ferry-reports').get('Contents', [])]))")
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        !keys.is_empty()
    });
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(
        key.starts_with("reports/nightly/task-") && key.ends_with(".json"),
        "{key}"
    );
    let file = key.rsplit('/').next().unwrap();
    let local = std::fs::read(tmp.path().join("agent/data/reports").join(file)).unwrap();
    let uploaded = boto3(&moto, &format!(
        "sys.stdout.write(s3.get_object(Bucket='ferry-reports', Key='{key}')['Body'].read().decode())"
    ));
    assert_eq!(
        uploaded.as_bytes(),
        local.as_slice(),
        "the report in S3 is the agent's"
    );

    // Metrics: DataSync's names; the hub's with its task and the agent
    // that ran the execution.
    let stat = |name: &str, task: &str, agent: &str| {
        boto3_json(&moto, &format!(
            "now = datetime.datetime.now(datetime.timezone.utc)\n\
             r = cw.get_metric_statistics(Namespace='FerryTest', MetricName='{name}', \
             Dimensions=[{{'Name': 'TaskId', 'Value': '{task}'}}, {{'Name': 'AgentId', 'Value': '{agent}'}}], \
             StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(hours=1), Period=7200, Statistics=['Sum'])\n\
             print(json.dumps(sum(p['Sum'] for p in r['Datapoints'])))"
        ))
        .as_f64()
        .unwrap() as u64
    };
    wait_for("the hub's metrics", Duration::from_secs(30), || {
        stat("FilesTransferred", &task, &agent_id) == transferred
    });
    assert_eq!(
        stat("BytesTransferred", &task, &agent_id),
        e["Counters"]["BytesTransferred"].as_u64().unwrap()
    );
    let verified = stat("BytesVerifiedSource", &task, &agent_id);
    assert!(verified >= 600_000, "both big files verified: {verified}");
    // The agent's own, under its task for the hub's.
    let names = boto3_json(&moto, "print(json.dumps(cw.list_metrics(Namespace='FerryTest', MetricName='FilesTransferred')['Metrics']))");
    let tasks: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["Value"] == agent_id.as_str())
        })
        .filter_map(|m| {
            m["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["Name"] == "TaskId")
        })
        .filter_map(|d| d["Value"].as_str())
        .collect();
    assert_eq!(tasks.len(), 2, "the hub's task and the agent's: {names}");

    // Logs: the hub's state lines for its execution, the agent's upload.
    let lines = || -> Vec<String> {
        boto3_json(&moto, "print(json.dumps([e['message'] for e in logs.filter_log_events(logGroupName='/ferry/test')['events']]))")
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    };
    wait_for("the log lines", Duration::from_secs(30), || {
        let lines = lines();
        lines
            .iter()
            .any(|l| l.contains(&exec) && l.contains("\"status\":\"SUCCESS\""))
            && lines
                .iter()
                .any(|l| l.contains(&format!("report uploaded to s3://ferry-reports/{key}")))
    });

    // The instance role's keys signed the metrics (IMDSv2: token first);
    // the role the task names signed the upload. (This test's own reads
    // are signed with the keys `testing`.)
    let recording = moto.recording();
    let signed_by = |scope: &str| -> Vec<&Value> {
        recording
            .iter()
            .filter(|r| {
                let auth = header(r, "authorization");
                auth.contains(scope) && !auth.contains("Credential=testing/")
            })
            .collect()
    };
    let metrics_calls = signed_by("/us-east-1/monitoring/aws4_request");
    assert!(!metrics_calls.is_empty());
    for r in &metrics_calls {
        assert!(
            header(r, "authorization").contains("Credential=test-key/"),
            "{r}"
        );
        assert_eq!(
            header(r, "x-amz-security-token"),
            "test-session-token",
            "{r}"
        );
    }
    assert!(
        recording
            .iter()
            .any(|r| r["method"] == "PUT"
                && r["url"].as_str().unwrap().ends_with("/latest/api/token"))
    );
    assert!(recording
        .iter()
        .any(|r| !header(r, "x-aws-ec2-metadata-token").is_empty()));
    assert!(!signed_by("/logs/aws4_request").is_empty());
    let sts = signed_by("/sts/aws4_request");
    assert_eq!(sts.len(), 1, "one AssumeRole for one upload");
    let puts = signed_by("/s3/aws4_request");
    let put = puts
        .iter()
        .find(|r| {
            r["method"] == "PUT"
                && r["url"]
                    .as_str()
                    .unwrap()
                    .contains("/ferry-reports/reports/nightly/")
        })
        .expect("the report's PutObject");
    assert!(
        !header(put, "authorization").contains("Credential=test-key/"),
        "signed as the assumed role: {put}"
    );
    assert!(!header(put, "x-amz-security-token").is_empty());
}

#[test]
fn with_cloudwatch_out_of_reach_the_transfer_ends_and_what_is_lost_is_counted() {
    // A port nothing listens on.
    let closed = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(
        &tmp.path().join("agent"),
        &format!(
            "  aws:\n    region: eu-west-1\n    endpoint_url: http://127.0.0.1:{closed}\n    access_key_id: AKIDFERRYTEST\n    secret_access_key: ferry-test-secret\n    cloudwatch_metrics: true\n    cloudwatch_log_group: /ferry/test\n"
        ),
        None,
    );
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src, 100_000);
    std::fs::create_dir(&dst).unwrap();
    let location = |path: &std::path::Path| {
        let (status, l) = agent.d.api(
            "POST",
            "/v1/locations",
            Some(json!({"Type": "LOCAL", "Path": path})),
        );
        assert_eq!(status, 201, "{l}");
        l["LocationId"].clone()
    };
    let (status, t) = agent.d.api(
        "POST",
        "/v1/tasks",
        Some(json!({"Name": "offline", "SourceLocationId": location(&src), "DestinationLocationId": location(&dst),
                    "Options": {"LogLevel": "TRANSFER"}})),
    );
    assert_eq!(status, 201, "{t}");
    let task = t["TaskId"].as_str().unwrap();
    let (status, e) = agent
        .d
        .api("POST", &format!("/v1/tasks/{task}/start"), Some(json!({})));
    assert_eq!(status, 202, "{e}");
    let exec = e["TaskExecutionId"].as_str().unwrap();
    let e = wait_execution(&agent.d, exec, Duration::from_secs(120));
    assert_eq!(e["Status"], "SUCCESS", "{e}");
    assert!(common::compare_trees(&src, &dst).is_empty());
    // Each call is tried four times over 3.5 s, then its items are dropped.
    wait_for("the drops counted", Duration::from_secs(60), || {
        let m = metrics(&agent.d);
        metric(&m, "ferry_cloudwatch_metrics_total{outcome=\"dropped\"}") == 16
            && metric(&m, "ferry_cloudwatch_log_lines_total{outcome=\"dropped\"}") > 200
    });
    let m = metrics(&agent.d);
    assert_eq!(
        metric(&m, "ferry_cloudwatch_metrics_total{outcome=\"sent\"}"),
        0
    );
    assert_eq!(
        metric(&m, "ferry_cloudwatch_log_lines_total{outcome=\"sent\"}"),
        0
    );
    assert!(
        !agent.d.log().contains("ferry-test-secret"),
        "the secret is never logged"
    );
}
