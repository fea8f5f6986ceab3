// SPDX-License-Identifier: MIT
//! An EFS mount target's TLS side, on this machine: stunnel4 ends TLS with
//! a certificate from a CA the test makes, and hands the plain NFS to
//! nfs-ganesha. Each service listens on its own loopback port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Context, Error};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Result<TestCa, Error> {
        let fail = |e: rcgen::Error| Error::Missing(format!("make the test CA {name}: {e}"));
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).map_err(fail)?.pem();
        Ok(TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        })
    }

    /// A server certificate for `dns_name` and its key, written as
    /// `dir/file.crt` and `dir/file.key`.
    pub fn issue(
        &self,
        dns_name: &str,
        dir: &Path,
        file: &str,
    ) -> Result<(PathBuf, PathBuf), Error> {
        let fail =
            |e: rcgen::Error| Error::Missing(format!("issue a certificate for {dns_name}: {e}"));
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let cert = rcgen::CertificateParams::new(vec![dns_name.to_string()])
            .map_err(fail)?
            .signed_by(&key, &self.issuer)
            .map_err(fail)?;
        let (crt, key_path) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        fs::write(&crt, cert.pem()).ctx(|| format!("write {}", crt.display()))?;
        fs::write(&key_path, key.serialize_pem())
            .ctx(|| format!("write {}", key_path.display()))?;
        Ok((crt, key_path))
    }
}

/// One TLS service: `accept` on the loopback, the certificate it shows,
/// and the plain port it connects to.
pub struct Service {
    pub name: String,
    pub accept: u16,
    pub connect: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running stunnel4, stopped on drop.
pub struct Stunnel {
    child: Child,
    pub log: PathBuf,
}

impl Stunnel {
    pub fn start(work: &Path, services: &[Service]) -> Result<Stunnel, Error> {
        let log = work.join("stunnel.log");
        let mut conf = format!(
            "foreground = yes\npid =\noutput = {}\ndebug = 5\n",
            log.display()
        );
        for s in services {
            conf.push_str(&format!(
                "[{}]\naccept = 127.0.0.1:{}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
                s.name,
                s.accept,
                s.connect,
                s.cert.display(),
                s.key.display()
            ));
        }
        let conf_path = work.join("stunnel.conf");
        fs::write(&conf_path, conf).ctx(|| format!("write {}", conf_path.display()))?;
        let child = Command::new("stunnel4")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ctx(|| "start stunnel4 (package stunnel4)".into())?;
        let mut tunnel = Stunnel { child, log };
        let t = Instant::now();
        for s in services {
            while std::net::TcpStream::connect(("127.0.0.1", s.accept)).is_err() {
                if t.elapsed() > Duration::from_secs(10) {
                    let log = fs::read_to_string(&tunnel.log).unwrap_or_default();
                    tunnel.stop();
                    return Err(Error::Missing(format!(
                        "stunnel4 is not listening on port {}; its log:\n{log}",
                        s.accept
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(tunnel)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        self.stop();
    }
}
