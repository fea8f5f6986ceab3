// SPDX-License-Identifier: MIT
//! STS AssumeRole: a task report's bucket names the role that may write it
//! (DataSync's `BucketAccessRoleArn`).

use crate::client::{xml_text, Client};
use crate::credentials::Credentials;
use crate::AwsError;

const VERSION: &str = "2011-06-15";

/// Short-lived credentials of `role_arn`, for one upload.
pub fn assume_role(client: &Client, role_arn: &str) -> Result<Credentials, AwsError> {
    const ACTION: &str = "AssumeRole";
    let xml = client.query(
        "sts",
        ACTION,
        VERSION,
        &[
            ("RoleArn".into(), role_arn.into()),
            ("RoleSessionName".into(), "ferry-task-report".into()),
            ("DurationSeconds".into(), "900".into()),
        ],
    )?;
    let field = |tag: &str| {
        xml_text(&xml, tag).ok_or_else(|| AwsError::BadAnswer {
            action: ACTION,
            why: format!("no <{tag}> in the answer"),
        })
    };
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
    })
}
