// SPDX-License-Identifier: MIT
//! The agent's activation port: `GET /?hub=HOST[:PORT][&hubFingerprint=…]`
//! from whoever reaches port 80 before activation. The query string as the
//! activation page's extractor takes it, the hub address made into the
//! base URL, and the request URI the agent then sends to. (Stops short of
//! the network: `Link::begin` connects to that address.)
#![no_main]

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{Request, Uri};
use ferry_wire::client::base_url;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| {
    // what reaches the handler went through the request line's URI parse
    let Ok(uri) = format!("/?{query}").parse::<Uri>() else {
        return;
    };
    let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return;
    };
    let Some(hub) = q.get("hub") else { return };
    let Ok(base) = base_url(hub) else { return };
    // as HubClient::send builds its requests
    let _ = Request::builder()
        .uri(format!("{base}/activation/v1/register"))
        .body(());
    // the redirect the page answers with (the key comes from the hub)
    let _ = Request::builder()
        .uri(format!("{base}/activate?activationKey=AAAA-BBBB"))
        .body(());
});
