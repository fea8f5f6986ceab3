// SPDX-License-Identifier: MIT
//! nfs-ganesha, the user-space NFS server, exporting directories of the
//! host to a guest over NFS 3, 4.0 and 4.1. A guest with user-mode
//! networking (not restricted) reaches the host's loopback as 10.0.2.2.
//!
//! Ganesha caches directory entries: change an export on the host only
//! while no server runs (drop this one, change, start a new one).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Context, Error};

/// The host as a user-mode-networking guest sees it.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// A running ganesha.nfsd (and the rpcbind it needs for NFS 3, when this
/// server started it); both are stopped on drop.
pub struct Ganesha {
    child: Child,
    rpcbind: Option<Child>,
    pub port: u16,
    pub mount_port: u16,
    pub log: PathBuf,
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn wait_listening(port: u16, what: &str) -> Result<(), Error> {
    let t = Instant::now();
    while !listening(port) {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(Error::Missing(format!(
                "{what} is not listening on port {port}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

impl Ganesha {
    /// Exports each `(name, path)` as the pseudo path `/name`, NFS 3 and 4,
    /// TCP, numeric owners, root not squashed. `work` holds the
    /// configuration and the log.
    pub fn start(
        work: &Path,
        exports: &[(&str, &Path)],
        port: u16,
        mount_port: u16,
    ) -> Result<Ganesha, Error> {
        if listening(port) {
            return Err(Error::Missing(format!(
                "port {port} is taken: another NFS server is running"
            )));
        }
        // NFS 3's MOUNT protocol registers with rpcbind when ganesha starts.
        let rpcbind = if listening(111) {
            None
        } else {
            let child = Command::new("rpcbind")
                .args(["-f", "-w"])
                .stdin(Stdio::null())
                .spawn()
                .ctx(|| "start rpcbind (package rpcbind)".into())?;
            wait_listening(111, "rpcbind")?;
            Some(child)
        };
        let mut conf = format!(
            "NFS_CORE_PARAM {{ Protocols = 3, 4; NFS_Port = {port}; MNT_Port = {mount_port};\n\
             Bind_addr = 127.0.0.1; Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;\n\
             mount_path_pseudo = true; }}\n\
             NFSV4 {{ Graceless = true; Allow_Numeric_Owners = true; Only_Numeric_Owners = true; }}\n\
             LOG {{ Default_Log_Level = WARN; }}\n"
        );
        for (id, (name, path)) in exports.iter().enumerate() {
            // ganesha does not follow a symlink in an export path
            let path = fs::canonicalize(path).ctx(|| format!("resolve {}", path.display()))?;
            conf.push_str(&format!(
                "EXPORT {{ Export_Id = {}; Path = {}; Pseudo = /{name}; Access_Type = RW;\n\
                 Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys;\n\
                 FSAL {{ Name = VFS; }} }}\n",
                id + 1,
                path.display()
            ));
        }
        let conf_path = work.join("ganesha.conf");
        fs::write(&conf_path, conf).ctx(|| format!("write {}", conf_path.display()))?;
        let log = work.join("ganesha.log");
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-f")
            .arg(&conf_path)
            .arg("-L")
            .arg(&log)
            .arg("-p")
            .arg(work.join("ganesha.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ctx(|| "start ganesha.nfsd (packages nfs-ganesha, nfs-ganesha-vfs)".into())?;
        let mut server = Ganesha {
            child,
            rpcbind,
            port,
            mount_port,
            log,
        };
        if let Err(e) = wait_listening(port, "ganesha.nfsd") {
            let log = fs::read_to_string(&server.log).unwrap_or_default();
            server.stop();
            return Err(Error::Missing(format!("{e}; its log:\n{log}")));
        }
        Ok(server)
    }

    /// The mount options a guest needs to reach this server's ports.
    pub fn mount_options(&self) -> String {
        format!("port={},mountport={}", self.port, self.mount_port)
    }

    fn stop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.rpcbind.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.stop();
    }
}
