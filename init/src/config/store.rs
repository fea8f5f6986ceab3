// SPDX-License-Identifier: GPL-2.0-only
//! Where the document in force is kept: a document offered by a provider
//! is written only once it passed, and the last good one stays in force
//! when the document is refused.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::document::Document;
use super::{parse, Config, ConfigError};

/// Where the document in force lives.
pub const DOCUMENT: &str = ferry_model::paths::CONFIG_DOCUMENT;
/// The last document that passed validation.
pub const LAST_GOOD: &str = "/data/config/ferry.last-good.yaml";

/// Where documents are kept; a directory so tests can use a scratch one.
pub struct Store {
    pub document: PathBuf,
    pub last_good: PathBuf,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            document: DOCUMENT.into(),
            last_good: LAST_GOOD.into(),
        }
    }
}

/// What loading found: the configuration in force, and the refusals to show.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub refused: Vec<ConfigError>,
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(&tmp, text)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)
}

impl Store {
    pub fn in_dir(dir: &Path) -> Store {
        Store {
            document: dir.join("ferry.yaml"),
            last_good: dir.join("ferry.last-good.yaml"),
        }
    }

    /// Offers a new document (from a provider: the console, QEMU fw_cfg,
    /// VMware guestinfo, EC2 user data). A good one becomes the document in
    /// force; a bad one is refused and changes nothing.
    pub fn offer(&self, text: &str, source_name: &str) -> Result<Document, ConfigError> {
        let doc = parse(text, source_name)?;
        for path in [&self.document, &self.last_good] {
            write_atomic(path, text).map_err(|source| ConfigError::Io {
                what: format!("write {}", path.display()),
                source,
            })?;
        }
        Ok(doc)
    }

    /// Loads the document in force: the document if it is good, else the
    /// last good one, else the first-boot default.
    pub fn load(&self) -> Loaded {
        let mut refused = Vec::new();
        let name = self.document.display().to_string();
        match fs::read_to_string(&self.document) {
            Ok(text) => match parse(&text, &name) {
                Ok(doc) => {
                    let _ = write_atomic(&self.last_good, &text);
                    return Loaded {
                        config: Config { doc, origin: name },
                        refused,
                    };
                }
                Err(e) => refused.push(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => refused.push(ConfigError::Io {
                what: format!("read {name}"),
                source,
            }),
        }
        let good_name = self.last_good.display().to_string();
        if let Ok(text) = fs::read_to_string(&self.last_good) {
            if let Ok(doc) = parse(&text, &good_name) {
                return Loaded {
                    config: Config {
                        doc,
                        origin: good_name,
                    },
                    refused,
                };
            }
        }
        Loaded {
            config: Config::first_boot(),
            refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_document_keeps_last_good_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_dir(dir.path());
        let first = store.load();
        assert_eq!(first.config, Config::first_boot());
        assert!(first.refused.is_empty());

        store
            .offer("version: 1\nhostname: alpha\n", "fw_cfg")
            .unwrap();
        assert_eq!(store.load().config.hostname(), "alpha");

        // a bad offer changes nothing
        let e = store
            .offer("version: 1\nhostnme: beta\n", "fw_cfg")
            .unwrap_err();
        assert!(e.to_string().contains("hostnme"), "{e}");
        assert_eq!(store.load().config.hostname(), "alpha");

        // someone edits the document badly: the last good stays in force
        fs::write(&store.document, "version: 1\nhostname: [\n").unwrap();
        let l = store.load();
        assert_eq!(l.config.hostname(), "alpha");
        assert!(l.config.origin.ends_with("ferry.last-good.yaml"));
        assert_eq!(l.refused.len(), 1);
    }
}
