// SPDX-License-Identifier: GPL-2.0-only
//! The `admin` account of the console: its password as an Argon2id hash
//! (PHC string) on /data. Until the operator sets one, the default password
//! `password` is accepted and must be changed before anything else.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

pub const USER: &str = "admin";
pub const DEFAULT_PASSWORD: &str = "password";
/// Where the hash lives on the appliance.
pub const HASH_FILE: &str = "/data/ferry/console/admin.hash";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the password hash in {path} is damaged ({why}); restore it or remove it to go back to the default password")]
    Damaged { path: String, why: String },
    #[error("hashing the password failed: {0}")]
    Hash(argon2::password_hash::Error),
}

/// What a login attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    Refused,
    /// The default password: it must be changed now.
    MustChange,
    Accepted,
}

pub struct Accounts {
    pub hash_file: PathBuf,
}

impl Default for Accounts {
    fn default() -> Accounts {
        Accounts {
            hash_file: HASH_FILE.into(),
        }
    }
}

impl Accounts {
    fn stored(&self) -> Result<Option<String>, AuthError> {
        match fs::read_to_string(&self.hash_file) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AuthError::Io {
                what: format!("read the password hash {}", self.hash_file.display()),
                source,
            }),
        }
    }

    pub fn check(&self, user: &str, password: &str) -> Result<Login, AuthError> {
        let stored = self.stored()?;
        if user != USER {
            // still spend the time of a check, so user names cannot be probed
            let _ = hash(password);
            return Ok(Login::Refused);
        }
        match stored {
            None if password == DEFAULT_PASSWORD => Ok(Login::MustChange),
            None => Ok(Login::Refused),
            Some(phc) => {
                let parsed = PasswordHash::new(&phc).map_err(|e| AuthError::Damaged {
                    path: self.hash_file.display().to_string(),
                    why: e.to_string(),
                })?;
                Ok(
                    if Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                    {
                        Login::Accepted
                    } else {
                        Login::Refused
                    },
                )
            }
        }
    }

    /// Stores a new password (validated by the caller), atomically.
    pub fn set(&self, password: &str) -> Result<(), AuthError> {
        let phc = hash(password)?;
        let err = |source| AuthError::Io {
            what: format!("store the password hash in {}", self.hash_file.display()),
            source,
        };
        if let Some(dir) = self.hash_file.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.hash_file.with_extension("tmp");
        fs::write(&tmp, format!("{phc}\n")).map_err(err)?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        fs::rename(&tmp, &self.hash_file).map_err(err)
    }
}

fn hash(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(AuthError::Hash)
}

/// The pause after the n-th failed attempt in a row: 1, 2, 4 ... 30 s.
pub fn delay_after_failures(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs((1u64 << (n - 1).min(5)).min(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_password_must_be_changed_then_only_the_new_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts {
            hash_file: dir.path().join("console/admin.hash"),
        };
        assert_eq!(a.check("admin", "password").unwrap(), Login::MustChange);
        assert_eq!(a.check("admin", "wrong").unwrap(), Login::Refused);
        assert_eq!(a.check("root", "password").unwrap(), Login::Refused);
        a.set("correct horse").unwrap();
        let stored = fs::read_to_string(&a.hash_file).unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert_eq!(a.check("admin", "correct horse").unwrap(), Login::Accepted);
        assert_eq!(a.check("admin", "password").unwrap(), Login::Refused);
    }

    #[test]
    fn a_damaged_hash_is_an_error_not_a_way_in() {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts {
            hash_file: dir.path().join("admin.hash"),
        };
        fs::write(&a.hash_file, "not a hash").unwrap();
        let e = a.check("admin", "password").unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }

    #[test]
    fn failures_slow_down() {
        let secs: Vec<u64> = (0..8).map(|n| delay_after_failures(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 30, 30]);
    }
}
