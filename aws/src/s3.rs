// SPDX-License-Identifier: MIT
//! S3: PutObject of a file, streamed (a task report can be large).

use std::fs::File;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::client::{encode, Body, Client};
use crate::AwsError;

/// Objects larger than this need a multipart upload, which is not built.
pub const MAX_PUT: u64 = 5 << 30;

/// The URL of `key` in `bucket`: path style at a given endpoint, else
/// S3's virtual-hosted name (path style for names with dots, which
/// TLS names cannot hold).
fn url(client: &Client, bucket: &str, key: &str) -> String {
    let key: Vec<String> = key.split('/').map(encode).collect();
    let key = key.join("/");
    match client.endpoint() {
        Some(e) => format!("{e}/{bucket}/{key}"),
        None if bucket.contains('.') => {
            format!("https://s3.{}.amazonaws.com/{bucket}/{key}", client.region)
        }
        None => format!("https://{bucket}.s3.{}.amazonaws.com/{key}", client.region),
    }
}

/// Uploads the file at `path` as `key` in `bucket`.
pub fn put_file(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    content_type: &str,
) -> Result<(), AwsError> {
    const ACTION: &str = "S3 PutObject";
    let io = |what: &str, source| AwsError::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    let mut file = File::open(path).map_err(|e| io("open", e))?;
    let mut hash = Sha256::new();
    let len = std::io::copy(&mut file, &mut hash).map_err(|e| io("read", e))?;
    if len > MAX_PUT {
        return Err(AwsError::BadAnswer {
            action: ACTION,
            why: format!(
                "{} is {len} bytes, more than one PutObject takes",
                path.display()
            ),
        });
    }
    let file = File::open(path).map_err(|e| io("open", e))?;
    let sha256 = hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    client.send_to(
        ACTION,
        "s3",
        "PUT",
        &url(client, bucket, key),
        &[("content-type", content_type.to_string())],
        Body::File { file, len, sha256 },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        let at = |e: Option<&str>| {
            let c = Client::new(
                crate::Credentials {
                    access_key_id: "a".into(),
                    secret_access_key: "b".into(),
                    session_token: None,
                },
                "eu-west-1".into(),
                e.map(str::to_string),
            );
            url(&c, "bkt", "reports/a b/x.json")
        };
        assert_eq!(
            at(None),
            "https://bkt.s3.eu-west-1.amazonaws.com/reports/a%20b/x.json"
        );
        assert_eq!(
            at(Some("http://127.0.0.1:5000/")),
            "http://127.0.0.1:5000/bkt/reports/a%20b/x.json"
        );
    }
}
