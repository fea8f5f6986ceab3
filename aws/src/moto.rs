// SPDX-License-Identifier: MIT
//! moto's server (PyPI `moto[server]`, a local AWS API emulator that
//! `scripts/setup` installs), for the tests of `ferry-ami` and `ferry`:
//! started on a free loopback port with its request recorder on, read back
//! with boto3. Only with the `moto` feature (dev-dependencies).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`: every service, and its IMDS.
    pub url: String,
    /// moto's working directory (its request recording goes there).
    _dir: tempfile::TempDir,
}

impl Moto {
    /// moto on a free loopback port, recording the requests it gets.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        // moto's own `moto.server`, but serving one request at a time: its
        // recorder appends each request to a file in pieces of 8 KiB, so
        // two requests at once (a hub's and an agent's) interleave and
        // spoil both lines.
        let child = Command::new("python3")
            .arg("-c")
            .arg(
                "import sys\n\
                 from werkzeug.serving import run_simple\n\
                 from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n\
                 run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)",
            )
            .arg(port.to_string())
            .env("MOTO_PORT", port.to_string())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto's server (scripts/setup installs moto[server])");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        moto.python(
            "urllib.request.urlopen(urllib.request.Request(url + '/moto-api/recorder/start-recording', method='POST')).read()",
            &[],
        );
        moto
    }

    /// Runs `script` with `boto3`, `json`, `sys`, `urllib.request` and
    /// `datetime` imported, `url` set to moto's, and `kw` the arguments of
    /// a boto3 client for it (region us-east-1, keys `testing`); `args` are
    /// its `sys.argv[1:]`. Its standard output; a failing script fails the
    /// test.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import boto3, json, sys, urllib.request, datetime\n\
                 url = '{url}'\n\
                 kw = dict(endpoint_url=url, region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
                 {script}",
                url = self.url
            ))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 against moto failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The requests moto got, in order (method, url, headers, body).
    pub fn recording(&self) -> Vec<serde_json::Value> {
        self.python(
            "sys.stdout.write(urllib.request.urlopen(url + '/moto-api/recorder/download-recording').read().decode())",
            &[],
        )
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("moto recorded a line that is not JSON ({e}): {l:.200}"))
        })
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
