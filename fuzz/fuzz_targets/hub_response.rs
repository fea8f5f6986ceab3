// SPDX-License-Identifier: MIT
//! The hub's answers to the remote writer, as the agent reads them: a
//! postcard `Response` (HubClient::fs), then what RemoteLocation makes of
//! each reply (metadata, listings, link targets, the hub's errno).
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use ferry_engine::location::Meta;
use ferry_wire::proto::{Reply, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = postcard::from_bytes::<Response>(data) else {
        return;
    };
    match resp {
        Err(e) => {
            let _ = std::io::Error::from(e).to_string();
        }
        Ok(Reply::Meta(m)) => {
            let _ = Meta::from(m);
        }
        Ok(Reply::List(entries)) => {
            for (name, meta) in entries {
                let _ = (OsString::from_vec(name), Meta::from(meta));
            }
        }
        Ok(Reply::ListDigests(entries)) => {
            for (name, meta, _digest) in entries {
                let _ = (OsString::from_vec(name), Meta::from(meta));
            }
        }
        Ok(Reply::Target(t)) => {
            let _ = OsString::from_vec(t);
        }
        Ok(Reply::Done | Reply::Digest(_)) => {}
    }
});
