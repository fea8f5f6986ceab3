// SPDX-License-Identifier: MIT
//! NFS and EFS locations mounted for as long as they are used: by an
//! execution (the runner) or by the hub (its locations, until it stops).
//! EFS is NFS 4.1 at its mount target; with `InTransitEncryption: TLS1_2`
//! the kernel mounts a TLS tunnel on `127.0.0.1` instead, which the
//! `ferry-agent` binary provides ([`EfsTunnels`], ferry-efs): the daemon
//! has no TLS of its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ferry_model::api::{InTransitEncryption, LocationSpec, NfsVersion};
use ferry_model::efs as model;

use super::events::Events;
use super::nfs;

/// What an EFS tunnel connects to.
#[derive(Clone, Debug)]
pub struct EfsTarget {
    /// The mount target's name, which its certificate must carry.
    pub name: String,
    pub addr: SocketAddr,
    pub file_system_id: String,
    pub access_point_id: Option<String>,
}

/// Opens TLS tunnels to EFS mount targets.
pub trait EfsTunnels: Send + Sync + std::fmt::Debug {
    /// A tunnel to `target`, its certificate checked by one connection
    /// first; `warn` hears of later connections that fail.
    fn open(
        &self,
        target: EfsTarget,
        warn: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<Box<dyn EfsTunnel>, String>;
}

/// An open tunnel, closed when dropped.
pub trait EfsTunnel: Send {
    /// Where the kernel mounts it: `127.0.0.1` and this port.
    fn port(&self) -> u16;
}

/// A mounted location: unmounted (and its tunnel closed) when dropped.
pub struct Mounted {
    pub path: PathBuf,
    /// Dropped after the unmount (fields drop after `Drop::drop`).
    _tunnel: Option<Box<dyn EfsTunnel>>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = nfs::unmount(&self.path) {
            eprintln!("cannot unmount {}: {e}", self.path.display());
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Mounts an NFS or EFS location on `point`, and logs where; EFS with TLS
/// through `tunnels`.
pub fn mount(
    spec: &LocationSpec,
    point: PathBuf,
    tunnels: Option<&dyn EfsTunnels>,
    events: &Arc<Events>,
) -> Result<Mounted, String> {
    let (how, tunnel) = match spec {
        LocationSpec::Nfs {
            server,
            export,
            subdirectory,
            version,
            mount_options,
            ..
        } => {
            let vers = nfs::mount(
                server,
                export,
                subdirectory.as_deref(),
                *version,
                mount_options.as_deref(),
                &point,
            )
            .map_err(|e| e.to_string())?;
            (format!("NFS {vers}"), None)
        }
        LocationSpec::Efs {
            file_system_id,
            region,
            access_point_id,
            subdirectory,
            in_transit_encryption,
            mount_target_address,
        } => {
            let name = model::mount_target_name(file_system_id, region);
            let ip = match mount_target_address {
                Some(a) => model::parse_mount_target_address(a)
                    .ok_or_else(|| format!("{a:?} is not a mount target's address"))?,
                None => nfs::resolve(&name).map_err(|e| e.to_string())?,
            };
            let addr = SocketAddr::new(ip, model::PORT);
            let path = nfs::export_path("/", subdirectory.as_deref());
            // The EFS mount helper's options: a new source port on each
            // reconnection, so a mount target's failover is followed.
            let (server, options, how, tunnel) = match in_transit_encryption {
                InTransitEncryption::Tls1_2 => {
                    let tunnels = tunnels.ok_or("this agent has no TLS tunnel for EFS")?;
                    let target = EfsTarget {
                        name: name.clone(),
                        addr,
                        file_system_id: file_system_id.clone(),
                        access_point_id: access_point_id.clone(),
                    };
                    let events = events.clone();
                    let tunnel = tunnels.open(target, Arc::new(move |m| events.warn(&m)))?;
                    (
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        format!("noresvport,port={}", tunnel.port()),
                        format!("NFS 4.1 over TLS to {name} at {addr}"),
                        Some(tunnel),
                    )
                }
                InTransitEncryption::None => (
                    ip,
                    format!("noresvport,port={}", model::PORT),
                    format!("NFS 4.1 to {name} at {addr}"),
                    None,
                ),
            };
            nfs::mount_at(server, &path, NfsVersion::Nfs4_1, Some(&options), &point)
                .map_err(|e| e.to_string())?;
            (how, tunnel)
        }
        other => return Err(format!("{} is not mounted", other.uri())),
    };
    events.info(&format!(
        "mounted {} ({how}) on {}",
        spec.uri(),
        point.display()
    ));
    Ok(Mounted {
        path: point,
        _tunnel: tunnel,
    })
}
