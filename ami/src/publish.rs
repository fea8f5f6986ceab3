// SPDX-License-Identifier: MIT
//! The publishing steps, each undone if a later one fails: no snapshot
//! without an image, no half-registered image. The one exception is an
//! upload interrupted part-way (the process killed, the network gone): the
//! pending snapshot and the state file ([`crate::state`]) are kept so the
//! same command resumes it, or `ferry-ami cleanup` deletes it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::image::{Image, BLOCK};
use crate::state::{self, ImageId, Journal, Upload};
use crate::Context;
use crate::Error;
use ferry_aws::client::{xml_text, Client};
use ferry_aws::credentials;

pub struct Options {
    pub image: std::path::PathBuf,
    pub name: String,
    pub description: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub public: bool,
    /// Blocks in flight at once.
    pub parallel: usize,
    /// The upload state file (default: next to the image).
    pub state: Option<std::path::PathBuf>,
    /// Delete the snapshot of an interrupted upload and start over.
    pub abandon: bool,
}

/// Test hook: the process kills itself (SIGKILL) once this many blocks are
/// recorded, as an interrupted upload. Read from this variable only.
const TEST_KILL_AFTER: &str = "FERRY_AMI_TEST_KILL_AFTER_BLOCKS";

const ATTEMPTS: u32 = 5;

/// Publishes the image; returns the AMI ID. `log` gets progress lines.
pub fn publish(opts: &Options, log: &dyn Fn(&str)) -> Result<String, Error> {
    // Everything local is checked before the first request.
    let image = Image::open(&opts.image)?;
    let state_path = opts
        .state
        .clone()
        .unwrap_or_else(|| state::default_path(&opts.image));
    let previous = state::load(&state_path)?;
    let image_id_now =
        ImageId::of(&opts.image).ctx(|| format!("stat image {}", opts.image.display()))?;
    let credentials = credentials::from_environment()?;
    let region = credentials::region(opts.region.as_deref())?;
    let client = Client::new(credentials, region, opts.endpoint.clone());

    // Also proves the endpoint and credentials work before any upload.
    let existing = ec2(
        &client,
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

    let resume = match previous {
        None => None,
        Some(up) if opts.abandon => {
            log(&format!(
                "abandoning the interrupted upload into snapshot {}",
                up.snapshot
            ));
            delete_snapshot(&client, &up.snapshot)?;
            log(&format!("snapshot {} deleted", up.snapshot));
            state::remove(&state_path);
            None
        }
        Some(up) => {
            if up.name != opts.name {
                return Err(Error::Resume(format!(
                    "{} holds an interrupted upload for the AMI named {:?} (snapshot {}): publish with --name {:?} to resume it, or add --abandon to delete it and start over",
                    state_path.display(),
                    up.name,
                    up.snapshot,
                    up.name
                )));
            }
            if up.image != image_id_now {
                return Err(Error::Resume(format!(
                    "{} changed since its upload into snapshot {} was interrupted: add --abandon to delete that snapshot and start over",
                    opts.image.display(),
                    up.snapshot
                )));
            }
            match snapshot_status(&client, &up.snapshot)?.as_deref() {
                // EBS says completed only after CompleteSnapshot; moto says
                // it from the start. The state file knows what was written.
                Some("pending") | Some("completed") => Some(up),
                other => {
                    log(&format!(
                        "snapshot {} of the interrupted upload is {}: starting over",
                        up.snapshot,
                        other.unwrap_or("gone")
                    ));
                    state::remove(&state_path);
                    None
                }
            }
        }
    };

    let (snapshot, journal, done) = match resume {
        Some(up) => {
            log(&format!(
                "resuming snapshot {}: {} blocks already written (state {})",
                up.snapshot,
                up.blocks.len(),
                state_path.display()
            ));
            let journal = Journal::append_to(&state_path)?;
            (up.snapshot, journal, up.blocks)
        }
        None => {
            let snapshot = start_snapshot(&client, &image, opts, log)?;
            log(&format!("snapshot {snapshot} started"));
            let up = Upload {
                snapshot: snapshot.clone(),
                name: opts.name.clone(),
                image: image_id_now,
                blocks: BTreeMap::new(),
            };
            match Journal::create(&state_path, &up) {
                Ok(j) => (snapshot, j, BTreeMap::new()),
                Err(e) => return Err(cleanup(&client, e, None, &snapshot)),
            }
        }
    };
    let blocks = image.candidate_blocks()?;
    if let Err(e) = upload(
        &client,
        &image,
        &blocks,
        &snapshot,
        opts.parallel,
        &journal,
        done,
        log,
    ) {
        let interrupted = match &e {
            Error::Aws(e) => e.transient(),
            _ => false,
        };
        if interrupted {
            let written = state::load(&state_path)
                .ok()
                .flatten()
                .map(|u| u.blocks.len())
                .unwrap_or(0);
            return Err(Error::Interrupted {
                source: Box::new(e),
                written,
                total: blocks.len(),
                snapshot,
                image: opts.image.clone(),
            });
        }
        state::remove(&state_path);
        return Err(cleanup(&client, e, None, &snapshot));
    }
    let registered = wait_completed(&client, &snapshot)
        .and_then(|()| register(&client, &snapshot, &image, opts));
    state::remove(&state_path);
    let image_id = match registered {
        Ok(id) => id,
        Err(e) => return Err(cleanup(&client, e, None, &snapshot)),
    };
    log(&format!("image {image_id} registered"));
    if opts.public {
        if let Err(e) = ec2(
            &client,
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

/// `ferry-ami cleanup`: deletes the snapshot of an interrupted upload and
/// its state file. Returns what was done.
pub fn cleanup_interrupted(opts: &Options, log: &dyn Fn(&str)) -> Result<String, Error> {
    let state_path = opts
        .state
        .clone()
        .unwrap_or_else(|| state::default_path(&opts.image));
    let Some(up) = state::load(&state_path)? else {
        return Ok(format!(
            "nothing to clean up: no upload state at {}",
            state_path.display()
        ));
    };
    let credentials = credentials::from_environment()?;
    let region = credentials::region(opts.region.as_deref())?;
    let client = Client::new(credentials, region, opts.endpoint.clone());
    log(&format!(
        "interrupted upload for {:?}: snapshot {}, {} blocks written",
        up.name,
        up.snapshot,
        up.blocks.len()
    ));
    delete_snapshot(&client, &up.snapshot)?;
    state::remove(&state_path);
    Ok(format!("snapshot {} deleted", up.snapshot))
}

/// The snapshot's EC2 state (`pending`, `completed`, `error`); `None` when
/// there is no such snapshot.
fn snapshot_status(client: &Client, snapshot: &str) -> Result<Option<String>, Error> {
    match ec2(
        client,
        "DescribeSnapshots",
        &[("SnapshotId.1".into(), snapshot.into())],
    ) {
        Ok(xml) => Ok(xml_text(&xml, "status")),
        Err(Error::Aws(e)) if e.is_api("NotFound") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes a snapshot; one already gone is fine.
fn delete_snapshot(client: &Client, snapshot: &str) -> Result<(), Error> {
    match ec2(
        client,
        "DeleteSnapshot",
        &[("SnapshotId".into(), snapshot.into())],
    ) {
        Ok(_) => Ok(()),
        Err(Error::Aws(e)) if e.is_api("NotFound") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deregisters the image and deletes the snapshot after a failure.
fn cleanup(client: &Client, error: Error, image_id: Option<&str>, snapshot: &str) -> Error {
    let mut done = Vec::new();
    if let Some(id) = image_id {
        match ec2(client, "DeregisterImage", &[("ImageId".into(), id.into())]) {
            Ok(_) => done.push(format!("image {id} deregistered")),
            Err(e) => done.push(format!("image {id} NOT deregistered ({e})")),
        }
    }
    match ec2(
        client,
        "DeleteSnapshot",
        &[("SnapshotId".into(), snapshot.into())],
    ) {
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
                    Error::Aws(e) => e.transient(),
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

#[allow(clippy::too_many_arguments)]
fn upload(
    client: &Client,
    image: &Image,
    blocks: &[u64],
    snapshot: &str,
    parallel: usize,
    journal: &Journal,
    done: BTreeMap<u64, [u8; 32]>,
    log: &dyn Fn(&str),
) -> Result<(), Error> {
    let kill_after: Option<usize> = std::env::var(TEST_KILL_AFTER)
        .ok()
        .and_then(|v| v.parse().ok());
    let todo: Vec<u64> = blocks
        .iter()
        .copied()
        .filter(|b| !done.contains_key(b))
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let written = AtomicUsize::new(0);
    let digests = Mutex::new(done);
    let first_error = Mutex::new(None::<Error>);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = todo.get(i) else { break };
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
                            client
                                .send("PutSnapshotBlock", "ebs", "PUT", &path, &headers, &data)
                                .map_err(Error::from)
                        })?;
                        journal.block(index, &digest)?;
                        digests.lock().unwrap().insert(index, digest);
                        let n = written.fetch_add(1, Ordering::SeqCst) + 1;
                        if kill_after == Some(n) {
                            // SAFETY: kill(2) on our own process.
                            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                        }
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
        "{} blocks of 512 KiB written now, {} in all ({} candidates, zero blocks skipped) in {:.1} s",
        written.load(Ordering::SeqCst),
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
        let xml = ec2(
            client,
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
    let xml = ec2(
        client,
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

const EC2_VERSION: &str = "2016-11-15";

/// An EC2 Query API call; returns the XML answer.
fn ec2(
    client: &Client,
    action: &'static str,
    params: &[(String, String)],
) -> Result<String, Error> {
    Ok(client.query("ec2", action, EC2_VERSION, params)?)
}
