// SPDX-License-Identifier: GPL-2.0-only
//! A document's text to a [`Document`]: YAML with serde (the schema:
//! unknown keys and wrong types refused), then the document's checks; each
//! error names the key and its line.

use std::io;

use super::document::Document;

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// YAML syntax or schema error (unknown key, wrong type...). serde_yaml's
    /// message names the key path, line and column.
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{source_name}: {key}: {why} (line {line})")]
    Invalid {
        source_name: String,
        key: String,
        why: String,
        line: usize,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Parses and validates a document. `source_name` goes into error messages.
pub fn parse(text: &str, source_name: &str) -> Result<Document, ConfigError> {
    let doc: Document = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    super::document::check(&doc).map_err(|(key, why)| ConfigError::Invalid {
        source_name: source_name.to_string(),
        line: line_of(text, &key),
        key,
        why,
    })?;
    Ok(doc)
}

/// Line (1-based) of the first line mentioning `key:`, for error messages.
fn line_of(text: &str, key: &str) -> usize {
    // a key that is missing: the line of its parent
    let mut key = key;
    loop {
        if let Some(n) = line_of_leaf(text, key) {
            return n;
        }
        match key.rsplit_once('.') {
            Some((parent, _)) => key = parent,
            None => return 0,
        }
    }
}

fn line_of_leaf(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let pat = format!("{leaf}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&pat)
        })
        // inside a flow mapping: `outbound: { host: ... }`
        .or_else(|| {
            text.lines()
                .position(|l| l.contains(&format!(" {pat}")) || l.contains(&format!("{{{pat}")))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture;

    #[test]
    fn unknown_key_is_refused_naming_key_and_line() {
        let e = parse(&fixture("v1-unknown-key.yaml"), "ferry.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("adress"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.starts_with("ferry.yaml: network"), "{e}");
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let e = parse("version: 3\n", "f").unwrap_err().to_string();
        assert_eq!(
            e,
            "f: version: version 3 is not supported (this system reads versions 1 to 2) (line 1)"
        );
        let e = parse("version: 1\nhostname: bad_name\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hostname") && e.contains("line 2"), "{e}");
        let e = parse(
            "version: 1\nnetwork:\n  mode: static\n  address: 10.0.0.1\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("network.address") && e.contains("line 4"), "{e}");
        let e = parse("version: 1\nnetwork:\n  mode: bogus\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(parse("hostname: x\n", "f")
            .unwrap_err()
            .to_string()
            .contains("version"));
    }
}
