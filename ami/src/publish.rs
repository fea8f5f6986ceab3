//! The publishing steps, each undone if a later one fails: no snapshot
//! without an image, no half-registered image.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::aws::{xml_text, Client};
use crate::image::{Image, BLOCK};
use crate::{credentials, Error};

pub struct Options {
    pub image: std::path::PathBuf,
    pub name: String,
    pub description: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub public: bool,
    /// Blocks in flight at once.
    pub parallel: usize,
}

const ATTEMPTS: u32 = 5;

/// Publishes the image; returns the AMI ID. `log` gets progress lines.
pub fn publish(opts: &Options, log: &dyn Fn(&str)) -> Result<String, Error> {
    // Everything local is checked before the first request.
    let image = Image::open(&opts.image)?;
    let credentials = credentials::credentials()?;
    let region = credentials::region(opts.region.as_deref())?;
    let client = Client::new(credentials, region, opts.endpoint.clone());

    // Also proves the endpoint and credentials work before any upload.
    let existing = client.ec2(
        "DescribeImages",
        &[
            ("Owner.1".into(), "self".into()),
            ("Filter.1.Name".into(), "name".into()),
            ("Filter.1.Value.1".into(), opts.name.clone()),
        ],
    )?;
    if let Some(id) = xml_text(&existing, "imageId") {
        return Err(Error::BadAnswer {
            action: "DescribeImages",
            why: format!("an image named {:?} already exists: {id}", opts.name),
        });
    }

    let snapshot = start_snapshot(&client, &image, opts, log)?;
    log(&format!("snapshot {snapshot} started"));
    let registered = upload(&client, &image, &snapshot, opts.parallel, log)
        .and_then(|()| wait_completed(&client, &snapshot))
        .and_then(|()| register(&client, &snapshot, &image, opts));
    let image_id = match registered {
        Ok(id) => id,
        Err(e) => return Err(cleanup(&client, e, None, &snapshot)),
    };
    log(&format!("image {image_id} registered"));
    if opts.public {
        if let Err(e) = client.ec2(
            "ModifyImageAttribute",
            &[
                ("ImageId".into(), image_id.clone()),
                ("LaunchPermission.Add.1.Group".into(), "all".into()),
            ],
        ) {
            return Err(cleanup(&client, e, Some(&image_id), &snapshot));
        }
        log(&format!(
            "image {image_id} is public (launch permission: all)"
        ));
    }
    Ok(image_id)
}

/// Deregisters the image and deletes the snapshot after a failure.
fn cleanup(client: &Client, error: Error, image_id: Option<&str>, snapshot: &str) -> Error {
    let mut done = Vec::new();
    if let Some(id) = image_id {
        match client.ec2("DeregisterImage", &[("ImageId".into(), id.into())]) {
            Ok(_) => done.push(format!("image {id} deregistered")),
            Err(e) => done.push(format!("image {id} NOT deregistered ({e})")),
        }
    }
    match client.ec2("DeleteSnapshot", &[("SnapshotId".into(), snapshot.into())]) {
        Ok(_) => done.push(format!("snapshot {snapshot} deleted")),
        Err(e) => done.push(format!("snapshot {snapshot} NOT deleted ({e})")),
    }
    Error::CleanedUp(Box::new(error), done.join(", "))
}

fn start_snapshot(
    client: &Client,
    image: &Image,
    opts: &Options,
    log: &dyn Fn(&str),
) -> Result<String, Error> {
    let token: String = Sha256::digest(format!("{}{:?}", opts.name, std::time::SystemTime::now()))
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = serde_json::json!({
        "VolumeSize": image.size_gib(),
        "Description": opts.description,
        "ClientToken": token,
        "Timeout": 60,
    });
    let answer = client.send(
        "StartSnapshot",
        "ebs",
        "POST",
        "/snapshots",
        &[("content-type", "application/json".into())],
        body.to_string().as_bytes(),
    )?;
    let v: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| Error::BadAnswer {
            action: "StartSnapshot",
            why: e.to_string(),
        })?;
    // EBS answers 524288; moto (the emulator the tests use) answers 512
    // but stores whatever block it is given. Blocks are always 512 KiB.
    if let Some(size) = v.get("BlockSize").and_then(|b| b.as_u64()) {
        if size != BLOCK {
            log(&format!(
                "StartSnapshot says block size {size}; writing {BLOCK}-byte blocks as the EBS direct APIs define"
            ));
        }
    }
    v.get("SnapshotId")
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .ok_or(Error::BadAnswer {
            action: "StartSnapshot",
            why: "no SnapshotId".into(),
        })
}

/// Retries transient failures: connection errors, throttling, 5xx.
fn with_retries<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                let transient = match &e {
                    Error::Unreachable { .. } => true,
                    Error::Api { status, .. } => *status == 429 || *status >= 500,
                    _ => false,
                };
                attempt += 1;
                if !transient || attempt >= ATTEMPTS {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
        }
    }
}

fn upload(
    client: &Client,
    image: &Image,
    snapshot: &str,
    parallel: usize,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let blocks = image.candidate_blocks()?;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let digests = Mutex::new(BTreeMap::<u64, [u8; 32]>::new());
    let first_error = Mutex::new(None::<Error>);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = blocks.get(i) else { break };
                    let result = image.block(index).and_then(|data| {
                        let Some(data) = data else { return Ok(()) };
                        let digest: [u8; 32] = Sha256::digest(&data).into();
                        let headers = [
                            ("content-type", "application/octet-stream".to_string()),
                            ("x-amz-Data-Length", BLOCK.to_string()),
                            ("x-amz-Checksum", B64.encode(digest)),
                            ("x-amz-Checksum-Algorithm", "SHA256".to_string()),
                        ];
                        let path = format!("/snapshots/{snapshot}/blocks/{index}");
                        with_retries(|| {
                            client.send("PutSnapshotBlock", "ebs", "PUT", &path, &headers, &data)
                        })?;
                        digests.lock().unwrap().insert(index, digest);
                        Ok(())
                    });
                    if let Err(e) = result {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let digests = digests.into_inner().unwrap();
    log(&format!(
        "{} blocks of 512 KiB written ({} candidates, zero blocks skipped) in {:.1} s",
        digests.len(),
        blocks.len(),
        started.elapsed().as_secs_f64()
    ));
    // The aggregate checksum: SHA-256 over the blocks' digests in index order.
    let mut aggregate = Sha256::new();
    for d in digests.values() {
        aggregate.update(d);
    }
    client.send(
        "CompleteSnapshot",
        "ebs",
        "POST",
        &format!("/snapshots/completion/{snapshot}"),
        &[
            ("x-amz-ChangedBlocksCount", digests.len().to_string()),
            ("x-amz-Checksum", B64.encode(aggregate.finalize())),
            ("x-amz-Checksum-Algorithm", "SHA256".into()),
            ("x-amz-Checksum-Aggregation-Method", "LINEAR".into()),
        ],
        b"",
    )?;
    Ok(())
}

fn wait_completed(client: &Client, snapshot: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let xml = client.ec2(
            "DescribeSnapshots",
            &[("SnapshotId.1".into(), snapshot.into())],
        )?;
        match xml_text(&xml, "status").as_deref() {
            Some("completed") => return Ok(()),
            Some("error") => {
                return Err(Error::BadAnswer {
                    action: "DescribeSnapshots",
                    why: format!("snapshot {snapshot} is in state error"),
                })
            }
            _ if Instant::now() > deadline => {
                return Err(Error::BadAnswer {
                    action: "DescribeSnapshots",
                    why: format!("snapshot {snapshot} not completed after an hour"),
                })
            }
            _ => std::thread::sleep(Duration::from_secs(5)),
        }
    }
}

fn register(
    client: &Client,
    snapshot: &str,
    image: &Image,
    opts: &Options,
) -> Result<String, Error> {
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    let xml = client.ec2(
        "RegisterImage",
        &[
            p("Name", &opts.name),
            p("Description", &opts.description),
            p("Architecture", "x86_64"),
            p("VirtualizationType", "hvm"),
            p("EnaSupport", "true"),
            p("BootMode", "uefi-preferred"),
            p("ImdsSupport", "v2.0"),
            p("RootDeviceName", "/dev/xvda"),
            p("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            p("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot),
            p(
                "BlockDeviceMapping.1.Ebs.VolumeSize",
                &image.size_gib().to_string(),
            ),
            p("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
            p("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ],
    )?;
    xml_text(&xml, "imageId").ok_or(Error::BadAnswer {
        action: "RegisterImage",
        why: "no imageId in the answer".into(),
    })
}
