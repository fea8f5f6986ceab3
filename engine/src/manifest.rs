// SPDX-License-Identifier: MIT
//! Manifests, as DataSync has them: a CSV file of paths relative to the
//! source location, one per record (the first field; quoted as CSV quotes:
//! commas, quotes and newlines in names), naming the only files an
//! execution transfers and verifies. A path may start with `/`; it may not
//! leave the location (`..`) or name nothing.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;

use ferry_model::filter::ManifestPaths;

/// A manifest is read whole into memory: this many bytes at most (some
/// millions of paths).
pub const MANIFEST_BYTES_MAX: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifest {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("the manifest {path} is larger than {MANIFEST_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("the manifest {path}, line {line}: not CSV: {source}")]
    Csv {
        path: String,
        line: u64,
        source: csv::Error,
    },
    #[error("the manifest {path}, line {line}: {why}")]
    Entry {
        path: String,
        line: u64,
        why: &'static str,
    },
    #[error("the manifest {path} names no path")]
    Empty { path: String },
}

/// Reads the manifest at `path`.
pub fn load(path: &Path) -> Result<ManifestPaths, ManifestError> {
    let name = path.display().to_string();
    let read = |source| ManifestError::Read {
        path: name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    if file.metadata().map_err(read)?.len() > MANIFEST_BYTES_MAX {
        return Err(ManifestError::TooLarge { path: name });
    }
    let mut data = Vec::new();
    // As large as it was, however it grows meanwhile.
    file.take(MANIFEST_BYTES_MAX + 1)
        .read_to_end(&mut data)
        .map_err(read)?;
    if data.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(ManifestError::TooLarge { path: name });
    }
    parse(&data, &name)
}

/// Parses a manifest's bytes (`name` for messages).
pub fn parse(data: &[u8], name: &str) -> Result<ManifestPaths, ManifestError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut paths = ManifestPaths::default();
    let mut seen = HashSet::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(source) => {
                return Err(ManifestError::Csv {
                    path: name.to_string(),
                    line,
                    source,
                })
            }
        }
        let entry = |why| ManifestError::Entry {
            path: name.to_string(),
            line,
            why,
        };
        let field = record.get(0).unwrap_or_default();
        let rooted = rooted(field).map_err(entry)?;
        if seen.insert(rooted.clone()) {
            paths.insert(rooted);
        }
    }
    if paths.files.is_empty() {
        return Err(ManifestError::Empty {
            path: name.to_string(),
        });
    }
    Ok(paths)
}

/// A manifest's path as the engine roots paths (`a/b` is `/a/b`).
fn rooted(field: &[u8]) -> Result<Vec<u8>, &'static str> {
    let relative = field.strip_prefix(b"/").unwrap_or(field);
    let relative = relative.strip_suffix(b"/").unwrap_or(relative);
    if relative.is_empty() {
        return Err("an empty path (the location's root is not a file to name)");
    }
    if relative.contains(&0) {
        return Err("a NUL byte in a path");
    }
    let mut path = Vec::with_capacity(relative.len() + 1);
    for part in relative.split(|&b| b == b'/') {
        match part {
            b"" => return Err("an empty name in a path (//)"),
            b"." | b".." => {
                return Err("a . or .. in a path: paths are relative to the source and stay in it")
            }
            _ => {
                path.push(b'/');
                path.extend_from_slice(part);
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_as_csv_quotes_them() {
        let data = b"photos/a.jpg\n\"with,comma.txt\"\n\"say \"\"hi\"\".txt\"\n\"two\nlines\"\n/rooted/b,v2\n";
        let m = parse(data, "m.csv").unwrap();
        let mut files: Vec<&[u8]> = m.files.iter().map(Vec::as_slice).collect();
        files.sort();
        assert_eq!(
            files,
            [
                &b"/photos/a.jpg"[..],
                b"/rooted/b",
                b"/say \"hi\".txt",
                b"/two\nlines",
                b"/with,comma.txt"
            ]
        );
        assert!(m.dirs.contains(&b"/photos"[..]));
        assert!(m.dirs.contains(&b"/rooted"[..]));
    }

    #[test]
    fn a_path_that_leaves_the_location_or_names_nothing_is_refused_with_its_line() {
        for (data, why) in [
            (&b"a\n../etc/passwd\n"[..], ". or .."),
            (b"a\nb/./c\n", ". or .."),
            (b"a\nb//c\n", "empty name"),
            (b"a\n/\n", "empty path"),
            (b"a\n\"b\0c\"\n", "NUL"),
        ] {
            let e = parse(data, "m.csv").unwrap_err().to_string();
            assert!(e.starts_with("the manifest m.csv, line 2: "), "{e}");
            assert!(e.contains(why), "{e}");
        }
        assert!(parse(b"", "m.csv")
            .unwrap_err()
            .to_string()
            .contains("names no path"));
    }

    #[test]
    fn a_manifest_too_large_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MANIFEST_BYTES_MAX + 1).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, ManifestError::TooLarge { .. }), "{e}");
        let e = load(&dir.path().join("missing.csv")).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read the manifest "),
            "{e}"
        );
    }
}
