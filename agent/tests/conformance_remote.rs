// SPDX-License-Identifier: MIT
//! The Location conformance suite against the remote location: the hub's
//! file-system operations (`ferry_hub::fs::execute` on a local location of the
//! hub) behind the real client and server pair, over TLS on 127.0.0.1, in
//! this process. The route is the hub's (`POST /agent/v1/fs/{location}/batch`,
//! postcard both ways); what the full hub adds before it — the agent's
//! certificate, the execution's grant, answers kept per operation id — is
//! tested in `tests/hub.rs`.
//!
//! The location is the hub's policy for a task with PreserveDevices on a
//! location that allows special files (the policy's refusals are tested in
//! `ferry_hub::fs`). Where it differs from the local location, by design:
//! - it is only written to: `open_file` is refused (`read_files`), a
//!   writer cannot read back (`read_back_digest`), and the hub hashes its
//!   files itself (`digest` runs here, not on the local location);
//! - `create_file` sends nothing: a small file goes in one operation at
//!   `finish`, where its errors surface (`deferred_create`);
//! - after `defer_changes`, changes are acknowledged before they are done
//!   and their failures come from `settle` (`deferred_changes`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use ferry_engine::location::conformance::{self, Capabilities, Harness};
use ferry_engine::location::local::LocalLocation;
use ferry_hub::fs::{execute_batch, Policy};
use ferry_hub::server::BATCH_BUDGET;
use ferry_uplink::remote::RemoteLocation;
use ferry_wire::ca::{self, Ca};
use ferry_wire::client::HubClient;
use ferry_wire::proto;
use ferry_wire::tls;

/// The hub's location this test's agent writes to.
const LOCATION: &str = "conformance";

struct Hub {
    root: PathBuf,
    policy: Policy,
}

async fn fs_batch(
    State(hub): State<Arc<Hub>>,
    UrlPath(location): UrlPath<String>,
    body: Bytes,
) -> Response {
    if location != LOCATION {
        return (StatusCode::NOT_FOUND, "no such location").into_response();
    }
    let batch: proto::Batch = match postcard::from_bytes(&body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if let Err(e) = batch.validate() {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let answer = tokio::task::spawn_blocking(move || {
        let answers = match LocalLocation::open(&hub.root) {
            Ok(loc) => execute_batch(&loc, batch.ops, &hub.policy, BATCH_BUDGET, false),
            Err(e) => batch
                .ops
                .iter()
                .map(|_| Err(proto::WireError::from(&e)))
                .collect(),
        };
        postcard::to_stdvec(&answers).expect("encodable")
    })
    .await
    .expect("the batch ran");
    (
        [(header::CONTENT_TYPE, "application/x-postcard")],
        Bytes::from(answer),
    )
        .into_response()
}

/// A hub serving `root` on 127.0.0.1, and a remote location on it.
fn remote(root: PathBuf, ca_dir: PathBuf) -> (RemoteLocation, tokio::runtime::Runtime) {
    let ca = Ca::load_or_create(&ca_dir, &["127.0.0.1".to_string()]).unwrap();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = tls::server_config(
        &ca.cert_der,
        ca.server_cert.clone(),
        ca::key_der(&ca.server_key),
    )
    .unwrap();
    let hub = Arc::new(Hub {
        root,
        policy: Policy {
            special_files: true,
        },
    });
    let router = Router::new()
        .route("/agent/v1/fs/{location}/batch", post(fs_batch))
        .with_state(hub);
    let addr: SocketAddr = server.block_on(async {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let conns = tls::Connections::new(tls::ConnLimits::for_this_process());
        tokio::spawn(tls::serve_tls(tcp, config, router, conns));
        addr
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = {
        let _inside = rt.enter();
        let tls = tls::client_config(&ca.cert_der, None).unwrap();
        HubClient::new(format!("https://{addr}"), tls, 8, None)
    };
    let location = RemoteLocation::new(client, std::sync::Arc::new(rt), LOCATION.to_string(), true);
    (location, server)
}

fn harness() -> Harness<RemoteLocation> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let (location, server) = remote(root.clone(), dir.path().join("ca"));
    let mut unsupported = vec!["read_files", "read_back_digest"];
    if !rustix::process::geteuid().is_root() {
        unsupported.extend(["device_nodes", "owner"]);
    }
    Harness {
        location,
        root,
        outside,
        caps: Capabilities {
            read: false,
            deferred_create: true,
            special_files: true,
            unsupported,
        },
        keep: Box::new((server, dir)),
    }
}

#[test]
fn the_remote_location_conforms() {
    let outcomes = conformance::run_all(&harness);
    assert!(outcomes.len() >= 20);
}
