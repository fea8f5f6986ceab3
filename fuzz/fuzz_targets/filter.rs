// SPDX-License-Identifier: MIT
//! Include and exclude filters (DataSync SIMPLE_PATTERN strings, from the
//! API, a task of the configuration document, or a hub's job) and the
//! verdict on paths the walk meets.
//!
//! Input (text): the include filter on the first line, the exclude filter
//! on the second (an empty line is no filter), then one rooted path a line
//! (`/a/b`; a trailing `/` marks a directory).
#![no_main]

use ferry_engine::filter::Filters;
use libfuzzer_sys::fuzz_target;

fn filter(line: Option<&str>) -> Vec<String> {
    line.filter(|l| !l.is_empty())
        .map(|l| vec![l.to_string()])
        .unwrap_or_default()
}

fuzz_target!(|text: &str| {
    let mut lines = text.split('\n');
    let includes = filter(lines.next());
    let excludes = filter(lines.next());
    let Ok(filters) = Filters::parse(&includes, &excludes) else {
        return;
    };
    let _ = filters.root_included();
    for line in lines {
        let (path, is_dir) = match line.strip_suffix('/') {
            Some(p) if !p.is_empty() => (p, true),
            _ => (line, false),
        };
        for parent_included in [false, true] {
            let _ = filters.judge(path.as_bytes(), is_dir, parent_included);
        }
    }
});
