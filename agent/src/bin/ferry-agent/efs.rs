// SPDX-License-Identifier: MIT
//! The daemon's [`EfsTunnels`] on `ferry-efs`: NFS to EFS over TLS.

use std::sync::Arc;

use ferry_daemon::mount::{EfsTarget, EfsTunnel, EfsTunnels};
use ferry_efs::{RootCertStore, Target, Tunnel};

/// Tunnels whose mount targets' certificates chain to `roots`.
pub fn tunnels(roots: Arc<RootCertStore>) -> Arc<dyn EfsTunnels> {
    Arc::new(Tls { roots })
}

#[derive(Debug)]
struct Tls {
    roots: Arc<RootCertStore>,
}

impl EfsTunnels for Tls {
    fn open(
        &self,
        t: EfsTarget,
        warn: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<Box<dyn EfsTunnel>, String> {
        let target = Target {
            name: t.name,
            addr: t.addr,
            file_system_id: t.file_system_id,
            access_point_id: t.access_point_id,
        };
        let tunnel = Tunnel::open(target, self.roots.clone(), warn).map_err(|e| e.to_string())?;
        Ok(Box::new(Open(tunnel)))
    }
}

struct Open(Tunnel);

impl EfsTunnel for Open {
    fn port(&self) -> u16 {
        self.0.port()
    }
}
