// SPDX-License-Identifier: MIT
//! Ferry's EFS tunnel beside stunnel4, the EFS mount helper's, carrying the
//! same traffic to the same TLS server (a stunnel4 in front of a sink on
//! this machine, its certificate from a CA made here):
//!
//! - bulk: `--connections` connections (the kernel's nconnect) each send
//!   `--mib` MiB, as NFS WRITEs of large files do;
//! - calls: each connection makes `--calls` round trips of 256 bytes each
//!   way, as NFS calls for small files do.
//!
//! Prints a table with the ratio of Ferry's rate to stunnel4's. Each tool
//! runs `--runs` times, alternating; the best run of each counts.
//!
//! `cargo run --release -p ferry-efs --example tunnel_bench [-- --smoke]`

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_efs::{roots, Target, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAME: &str = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com";
const CALL: usize = 256;

struct Settings {
    connections: usize,
    mib: usize,
    calls: usize,
    runs: usize,
}

fn settings() -> Settings {
    let mut s = Settings {
        connections: 8,
        mib: 128,
        calls: 5_000,
        runs: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} takes a number"))
        };
        match a.as_str() {
            "--smoke" => {
                s = Settings {
                    connections: 2,
                    mib: 4,
                    calls: 200,
                    runs: 1,
                }
            }
            "--connections" => s.connections = value(),
            "--mib" => s.mib = value(),
            "--calls" => s.calls = value(),
            "--runs" => s.runs = value(),
            other => panic!(
                "unknown argument {other}: --smoke, --connections N, --mib N, --calls N, --runs N"
            ),
        }
    }
    s
}

/// The far end: a length-prefixed upload answered with one byte, or calls
/// echoed.
async fn sink(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut kind = [0u8; 1];
            if s.read_exact(&mut kind).await.is_err() {
                return;
            }
            if kind[0] == b'B' {
                let mut len = [0u8; 8];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut left = u64::from_be_bytes(len);
                let mut buf = vec![0u8; 1 << 16];
                while left > 0 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left -= n as u64,
                    }
                }
                let _ = s.write_all(b"k").await;
            } else {
                let mut call = [0u8; CALL];
                while s.read_exact(&mut call).await.is_ok() {
                    if s.write_all(&call).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

async fn bulk(port: u16, bytes: usize) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"B").await.unwrap();
    s.write_all(&(bytes as u64).to_be_bytes()).await.unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    let mut ok = [0u8; 1];
    s.read_exact(&mut ok).await.unwrap();
}

async fn calls(port: u16, n: usize) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"C").await.unwrap();
    let mut call = [7u8; CALL];
    for _ in 0..n {
        s.write_all(&call).await.unwrap();
        s.read_exact(&mut call).await.unwrap();
    }
}

/// (MiB/s of the bulk run, calls/s) through the tunnel at `port`.
async fn measure(port: u16, s: &Settings) -> (f64, f64) {
    let t = Instant::now();
    let uploads: Vec<_> = (0..s.connections)
        .map(|_| tokio::spawn(bulk(port, s.mib << 20)))
        .collect();
    for u in uploads {
        u.await.unwrap();
    }
    let bulk_rate = (s.connections * s.mib) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let callers: Vec<_> = (0..s.connections)
        .map(|_| tokio::spawn(calls(port, s.calls)))
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let call_rate = (s.connections * s.calls) as f64 / t.elapsed().as_secs_f64();
    (bulk_rate, call_rate)
}

struct Stunnel(Child);

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stunnel(dir: &Path, name: &str, conf: &str, port: u16) -> Stunnel {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(
        &path,
        format!(
            "foreground = yes\npid =\ndebug = 3\noutput = {}/{name}.log\n{conf}",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("stunnel4")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stunnel4 (Debian package stunnel4)");
    let t = Instant::now();
    while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "stunnel4 {name} does not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Stunnel(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let s = settings();
    let dir = std::env::temp_dir().join(format!("ferry-tunnel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // A CA made here, and the mount target's certificate from it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tunnel bench CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![NAME.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    for (file, text) in [
        ("ca.crt", ca_pem.clone()),
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sink_port = rt.block_on(async {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(sink(l));
        port
    });
    let server_port = free_port();
    let _server = stunnel(
        &dir,
        "server",
        &format!(
            "[nfs]\naccept = 127.0.0.1:{server_port}\nconnect = 127.0.0.1:{sink_port}\ncert = {d}/server.crt\nkey = {d}/server.key\n",
            d = dir.display()
        ),
        server_port,
    );
    // The EFS mount helper's client side: the chain and the name checked.
    let client_port = free_port();
    let _client = stunnel(
        &dir,
        "client",
        &format!(
            "[efs]\nclient = yes\naccept = 127.0.0.1:{client_port}\nconnect = 127.0.0.1:{server_port}\nverifyChain = yes\nCAfile = {}/ca.crt\ncheckHost = {NAME}\nsni = {NAME}\n",
            dir.display()
        ),
        client_port,
    );
    let warn: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|m| eprintln!("tunnel: {m}"));
    let tunnel = Tunnel::open(
        Target {
            name: NAME.into(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, server_port)),
            file_system_id: "fs-0123456789abcdef0".into(),
            access_point_id: None,
        },
        roots(Some(&ca_pem)).unwrap(),
        warn,
    )
    .unwrap();

    let mut best = [(0f64, 0f64); 2];
    for run in 0..s.runs {
        for (i, port) in [tunnel.port(), client_port].into_iter().enumerate() {
            let (b, c) = rt.block_on(measure(port, &s));
            eprintln!(
                "run {}: {}: {b:.0} MiB/s, {c:.0} calls/s",
                run + 1,
                ["ferry-efs", "stunnel4"][i]
            );
            best[i] = (best[i].0.max(b), best[i].1.max(c));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| {} connections | ferry-efs | stunnel4 (EFS mount helper) | ferry / stunnel4 |",
        s.connections
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| bulk, {} MiB each (MiB/s) | {:.0} | {:.0} | {:.2} |",
        s.mib,
        best[0].0,
        best[1].0,
        best[0].0 / best[1].0
    );
    println!(
        "| {} calls of {CALL} B each (calls/s) | {:.0} | {:.0} | {:.2} |",
        s.calls,
        best[0].1,
        best[1].1,
        best[0].1 / best[1].1
    );
}
