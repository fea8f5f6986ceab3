// SPDX-License-Identifier: MIT
//! `ferry-ami publish` against moto's server (PyPI `moto[server]`, a local
//! AWS API emulator started here on 127.0.0.1), read back with boto3.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_aws::moto::Moto;

const GIB: u64 = 1 << 30;
const BLOCK: u64 = 512 * 1024;

/// A 1 GiB sparse disk: GPT signatures in sector 1 and the last sector,
/// data in a few blocks, one block written as zeros (must be skipped).
fn test_image(dir: &Path) -> (PathBuf, Vec<u64>) {
    let path = dir.join("disk.raw");
    let f = File::create(&path).unwrap();
    f.set_len(GIB).unwrap();
    f.write_all_at(b"EFI PART", 512).unwrap();
    f.write_all_at(b"EFI PART", GIB - 512).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for block in [5u64, 300, 1000] {
        let data: Vec<u8> = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all_at(&data, block * BLOCK + 4096 * block).unwrap();
    }
    f.write_all_at(&vec![0u8; BLOCK as usize], 700 * BLOCK)
        .unwrap();
    // blocks touched: 0, 5+6, 300+302 (offset shifts), 1000+1007, last
    let mut touched = vec![0, GIB / BLOCK - 1];
    for block in [5u64, 300, 1000] {
        let start = block * BLOCK + 4096 * block;
        touched.push(start / BLOCK);
        touched.push((start + BLOCK).div_ceil(BLOCK) - 1);
    }
    touched.sort();
    touched.dedup();
    (path, touched)
}

fn publish(moto_url: &str, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-ami"))
        .arg("publish")
        .args(args)
        .args(["--region", "us-east-1", "--endpoint-url", moto_url])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap()
}

fn boto3(moto: &Moto, script: &str, args: &[&str]) -> String {
    moto.python(
        &format!("ebs = boto3.client('ebs', **kw); ec2 = boto3.client('ec2', **kw)\n{script}"),
        args,
    )
}

const COUNT_SNAPSHOTS_AND_IMAGES: &str = "print(len(ec2.describe_snapshots(OwnerIds=['self'])['Snapshots']), len(ec2.describe_images(Owners=['self'])['Images']))";

#[test]
fn publish_uploads_blocks_registers_and_makes_public() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (image, touched) = test_image(dir.path());
    let out = publish(
        &moto.url,
        dir.path(),
        &[
            "--image",
            image.to_str().unwrap(),
            "--name",
            "ferry-test",
            "--public",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry-ami failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let image_id = stdout.lines().last().unwrap().trim().to_string();
    assert!(image_id.starts_with("ami-"), "last line: {image_id}");
    let snapshot = stderr
        .split_whitespace()
        .find(|w| w.starts_with("snap-"))
        .expect("the snapshot ID in the log")
        .to_string();

    // Every block read back equals the image; exactly the non-zero ones.
    let check = boto3(
        &moto,
        r#"
import urllib.request, urllib.parse
image_id, path, snap = sys.argv[1], sys.argv[2], sys.argv[3]
img = ec2.describe_images(ImageIds=[image_id])['Images'][0]
state = ec2.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]['State']
record = urllib.request.urlopen(kw['endpoint_url'] + '/moto-api/recorder/download-recording').read().decode()
registered = None
for line in record.splitlines():
    try:
        r = json.loads(line)
    except ValueError:
        continue
    body = r.get('body') or ''
    if r.get('body_encoded'):
        import base64
        body = base64.b64decode(body).decode('latin-1')
    if 'Action=RegisterImage' in body:
        registered = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
blocks, token = [], None
while True:
    kw2 = dict(SnapshotId=snap)
    if token: kw2['NextToken'] = token
    r = ebs.list_snapshot_blocks(**kw2)
    blocks += [b['BlockIndex'] for b in r['Blocks']]
    token = r.get('NextToken')
    if not token: break
data = open(path, 'rb').read()
for b in blocks:
    got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b, BlockToken='x')['BlockData'].read()
    assert got == data[b*524288:(b+1)*524288], 'block %d differs' % b
attr = ec2.describe_image_attribute(ImageId=image_id, Attribute='launchPermission')
print(json.dumps(dict(blocks=sorted(blocks), image=img, launch=attr['LaunchPermissions'], state=state, registered=registered), default=str))
"#,
        &[&image_id, image.to_str().unwrap(), &snapshot],
    );
    let v: serde_json::Value = serde_json::from_str(check.trim()).unwrap();
    let blocks: Vec<u64> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(blocks, touched, "blocks in the snapshot");
    assert_eq!(v["state"], "completed");
    assert_eq!(v["image"]["Name"], "ferry-test");
    assert_eq!(v["image"]["Description"], "Ferry file-sync appliance");
    assert_eq!(v["launch"], serde_json::json!([{"Group": "all"}]));
    let r = &v["registered"];
    for (key, want) in [
        ("Name", "ferry-test"),
        ("Architecture", "x86_64"),
        ("VirtualizationType", "hvm"),
        ("EnaSupport", "true"),
        ("BootMode", "uefi-preferred"),
        ("ImdsSupport", "v2.0"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot.as_str()),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
    ] {
        assert_eq!(r[key], want, "RegisterImage {key}: {r}");
    }
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = test_image(dir.path());
    let before = boto3(&moto, COUNT_SNAPSHOTS_AND_IMAGES, &[]);

    let missing = dir.path().join("nope.raw");
    let out = publish(
        &moto.url,
        dir.path(),
        &["--image", missing.to_str().unwrap(), "--name", "x"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("nope.raw") && err.contains("No such file"),
        "{err}"
    );

    // A copy cut short: not whole GiB, or whole GiB but the backup GPT gone.
    for (cut, expect) in [
        (GIB - BLOCK, "not a whole number of GiB"),
        (GIB / 2, "not a whole number of GiB"),
    ] {
        let short = dir.path().join("short.raw");
        fs::copy(&image, &short).unwrap();
        File::options()
            .write(true)
            .open(&short)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let out = publish(
            &moto.url,
            dir.path(),
            &["--image", short.to_str().unwrap(), "--name", "x"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(expect), "{err}");
    }
    let no_backup = dir.path().join("nobackup.raw");
    fs::copy(&image, &no_backup).unwrap();
    File::options()
        .write(true)
        .open(&no_backup)
        .unwrap()
        .write_all_at(&[0u8; 8], GIB - 512)
        .unwrap();
    let out = publish(
        &moto.url,
        dir.path(),
        &["--image", no_backup.to_str().unwrap(), "--name", "x"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("truncated"), "{err}");

    // Nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = publish(
        &dead,
        dir.path(),
        &["--image", image.to_str().unwrap(), "--name", "x"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect") && err.contains(&dead),
        "{err}"
    );

    // No credentials anywhere.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-ami"))
        .args(["publish", "--image", image.to_str().unwrap(), "--name", "x"])
        .args(["--region", "us-east-1", "--endpoint-url", &moto.url])
        .env_clear()
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no AWS credentials"), "{err}");

    let counts =
        |s: &str| -> Vec<u64> { s.split_whitespace().map(|n| n.parse().unwrap()).collect() };
    assert_eq!(
        counts(&boto3(&moto, COUNT_SNAPSHOTS_AND_IMAGES, &[])),
        counts(&before),
        "a refused publish left a snapshot or an image"
    );

    // A name already taken is refused before anything is uploaded.
    let ok = publish(
        &moto.url,
        dir.path(),
        &["--image", image.to_str().unwrap(), "--name", "taken"],
    );
    assert!(ok.status.success());
    let after_first = boto3(&moto, COUNT_SNAPSHOTS_AND_IMAGES, &[]);
    let out = publish(
        &moto.url,
        dir.path(),
        &["--image", image.to_str().unwrap(), "--name", "taken"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already exists"), "{err}");

    assert_eq!(
        counts(&boto3(&moto, COUNT_SNAPSHOTS_AND_IMAGES, &[])),
        counts(&after_first),
        "the refused publish left a snapshot or an image"
    );
}

fn run_ami(moto_url: &str, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-ami"))
        .args(args)
        .args(["--region", "us-east-1", "--endpoint-url", moto_url])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn snapshot_in(stderr: &str) -> String {
    stderr
        .split_whitespace()
        .find(|w| w.starts_with("snap-"))
        .expect("a snapshot ID in the log")
        .trim_end_matches(':')
        .to_string()
}

/// The snapshot's blocks, each checked equal to the image.
const READ_BACK: &str = r#"
snap, path = sys.argv[1], sys.argv[2]
blocks = [b['BlockIndex'] for b in ebs.list_snapshot_blocks(SnapshotId=snap)['Blocks']]
data = open(path, 'rb').read()
for b in blocks:
    got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b, BlockToken='x')['BlockData'].read()
    assert got == data[b*524288:(b+1)*524288], 'block %d differs' % b
print(' '.join(str(b) for b in sorted(blocks)))
"#;

const SNAPSHOT_IDS: &str = "print(' '.join(sorted(s['SnapshotId'] for s in ec2.describe_snapshots(OwnerIds=['self'])['Snapshots'])))";

#[test]
fn an_interrupted_upload_is_resumed_abandoned_or_cleaned_up() {
    use std::os::unix::process::ExitStatusExt;
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (image, touched) = test_image(dir.path());
    let img = image.to_str().unwrap();
    let state = dir.path().join("disk.raw.ferry-ami");
    let kill_after = |n: &'static str| [("FERRY_AMI_TEST_KILL_AFTER_BLOCKS", n)];
    // moto lists snapshots of its own too: ours are those added since
    let before = boto3(&moto, SNAPSHOT_IDS, &[]);
    let ours = || -> Vec<String> {
        boto3(&moto, SNAPSHOT_IDS, &[])
            .split_whitespace()
            .filter(|id| !before.split_whitespace().any(|b| b == *id))
            .map(str::to_string)
            .collect()
    };
    let publish_args =
        |name: &'static str| ["publish", "--image", img, "--name", name, "--parallel", "1"];

    // 1. killed (SIGKILL, as by a crash or Ctrl-\) after 3 blocks
    let out = run_ami(
        &moto.url,
        dir.path(),
        &publish_args("resumed"),
        &kill_after("3"),
    );
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let snap = snapshot_in(&String::from_utf8_lossy(&out.stderr));
    let recorded = fs::read_to_string(&state).unwrap();
    assert!(
        recorded.contains(&format!("snapshot {snap}\n")),
        "{recorded}"
    );
    assert_eq!(
        recorded.lines().filter(|l| l.starts_with("block ")).count(),
        3
    );

    // 2. another name is refused while the upload is pending
    let out = run_ami(&moto.url, dir.path(), &publish_args("other"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("holds an interrupted upload for the AMI named \"resumed\"")
            && err.contains("--abandon"),
        "{err}"
    );

    // 3. the same command resumes: only the other blocks are written
    let out = run_ami(&moto.url, dir.path(), &publish_args("resumed"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "resuming snapshot {snap}: 3 blocks already written"
        )),
        "{err}"
    );
    let all = touched.len();
    assert!(
        err.contains(&format!(
            "{} blocks of 512 KiB written now, {all} in all",
            all - 3
        )),
        "{err}"
    );
    assert!(!state.exists(), "state removed once registered");
    let blocks = boto3(&moto, READ_BACK, &[&snap, img]);
    let blocks: Vec<u64> = blocks
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(
        blocks, touched,
        "every block in the resumed snapshot, equal to the image"
    );
    // no new snapshot was started (moto's RegisterImage adds one of its own)
    assert!(!err.contains("started"), "{err}");
    let after_resume = ours();
    assert!(after_resume.contains(&snap));

    // 4. interrupted again, then `ferry-ami cleanup` deletes the snapshot
    let out = run_ami(
        &moto.url,
        dir.path(),
        &publish_args("cleaned"),
        &kill_after("2"),
    );
    assert_eq!(out.status.signal(), Some(9));
    let snap2 = snapshot_in(&String::from_utf8_lossy(&out.stderr));
    let out = run_ami(&moto.url, dir.path(), &["cleanup", "--image", img], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("snapshot {snap2} deleted")
    );
    assert!(!state.exists());
    assert_eq!(
        ours(),
        after_resume,
        "the interrupted upload's snapshot deleted"
    );
    let out = run_ami(&moto.url, dir.path(), &["cleanup", "--image", img], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to clean up"));

    // 5. interrupted, then --abandon: the old snapshot goes, a new upload
    let out = run_ami(
        &moto.url,
        dir.path(),
        &publish_args("fresh"),
        &kill_after("1"),
    );
    assert_eq!(out.status.signal(), Some(9));
    let snap3 = snapshot_in(&String::from_utf8_lossy(&out.stderr));
    let mut args = publish_args("fresh").to_vec();
    args.push("--abandon");
    let out = run_ami(&moto.url, dir.path(), &args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("snapshot {snap3} deleted")), "{err}");
    let ids = ours();
    assert!(!ids.contains(&snap3), "{ids:?}");
    assert!(ids.len() > after_resume.len(), "a new upload: {ids:?}");

    // 6. an image changed since the interruption is not resumed
    let out = run_ami(
        &moto.url,
        dir.path(),
        &publish_args("changed"),
        &kill_after("1"),
    );
    assert_eq!(out.status.signal(), Some(9));
    File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .write_all_at(b"x", 4096)
        .unwrap();
    let out = run_ami(&moto.url, dir.path(), &publish_args("changed"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("changed since its upload into snapshot"),
        "{err}"
    );
}
