// SPDX-License-Identifier: MIT
//! EC2 instance metadata (IMDSv2), as the link-local service (or whoever
//! answers in its place) sends it: the whole HTTP answer to
//! `GET /latest/user-data` parsed, the user data and the key pair's key
//! made into a document, and that document's checks.
//!
//! Input: the first line is the body of `public-keys/0/openssh-key` (only
//! its first line is kept anyway; an empty one is no key), the rest is the
//! raw answer, headers and body.
#![no_main]

use ferry_init::imds::{self, Metadata};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, answer) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let Ok(resp) = imds::parse_response(answer) else {
        return;
    };
    // as Session::metadata keeps the key: text, trimmed, first line
    let public_key = Some(String::from_utf8_lossy(key).trim().to_string())
        .filter(|k| !k.is_empty())
        .and_then(|k| k.lines().next().map(|l| l.trim().to_string()));
    let meta = Metadata {
        public_key,
        // Session::get: 200 is the data, 404 none, others an error
        user_data: match resp.status {
            200 => Some(resp.body),
            404 => None,
            _ => return,
        },
        ..Metadata::default()
    };
    if let Ok(Some(doc)) = imds::document(&meta) {
        let _ = ferry_init::config::parse(&doc, "EC2 user data");
    }
});
