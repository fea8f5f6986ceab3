//! What the hub keeps about agents: pending activations (a key, the agent's
//! certificate request) and activated agents (a name, the fingerprint of the
//! certificate the hub signed, when it was last heard from). Kept as one
//! JSON file, written whole at each change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ca::{self, Ca, CaError};
use crate::daemon::model::now_ms;

/// An activation key works this long (unless configured otherwise), and once.
pub const KEY_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// An agent not heard from for this long shows OFFLINE.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("no activation has the key {0}")]
    UnknownKey(String),
    #[error("the activation key {0} was already used")]
    Used(String),
    #[error(
        "the activation key {0} expired (a key works for 30 minutes after the agent asked for it)"
    )]
    Expired(String),
    #[error("the certificate request is not valid: {0}")]
    BadRequest(String),
    #[error("an agent name is 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName,
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("cannot save {path}: {source}")]
    Save {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub key: String,
    pub csr: String,
    pub hostname: String,
    pub created_ms: i64,
    /// Set when an operator confirmed the key.
    pub agent_id: Option<String>,
    pub certificate: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentRecord {
    pub agent_id: String,
    pub name: String,
    pub hostname: String,
    pub certificate_fingerprint: String,
    pub activated_ms: i64,
    #[serde(default)]
    pub last_seen_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    pending: Vec<Pending>,
    agents: Vec<AgentRecord>,
}

pub struct HubState {
    path: PathBuf,
    key_lifetime: Duration,
    data: Data,
    /// Certificate fingerprint to agent id.
    by_cert: HashMap<String, String>,
}

/// `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX` in an alphabet without look-alikes.
fn new_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = ca::random_bytes(25);
    let mut key = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            key.push('-');
        }
        key.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
    }
    key
}

fn check_agent_name(name: &str) -> Result<(), ActivationError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ActivationError::BadName)
    }
}

impl HubState {
    pub fn open(dir: &Path, key_lifetime: Duration) -> Result<HubState, ActivationError> {
        let path = dir.join("hub.json");
        let data: Data = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let by_cert = data
            .agents
            .iter()
            .map(|a| (a.certificate_fingerprint.clone(), a.agent_id.clone()))
            .collect();
        Ok(HubState {
            path,
            key_lifetime,
            data,
            by_cert,
        })
    }

    fn save(&self) -> Result<(), ActivationError> {
        let text = serde_json::to_vec_pretty(&self.data).expect("serializable");
        ca::write_file(&self.path, &text, true).map_err(|source| ActivationError::Save {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// Records an agent's request; returns its activation key.
    pub fn register(&mut self, csr: &str, hostname: &str) -> Result<String, ActivationError> {
        rcgen::CertificateSigningRequestParams::from_pem(csr)
            .map_err(|e| ActivationError::BadRequest(e.to_string()))?;
        let now = now_ms();
        // Keys that can no longer be used are forgotten after a day.
        self.data
            .pending
            .retain(|p| now - p.created_ms < 86_400_000);
        let key = new_key();
        self.data.pending.push(Pending {
            key: key.clone(),
            csr: csr.to_string(),
            hostname: hostname.chars().take(64).collect(),
            created_ms: now,
            agent_id: None,
            certificate: None,
        });
        self.save()?;
        Ok(key)
    }

    /// An operator confirms `key`: the hub signs the agent's certificate.
    pub fn activate(
        &mut self,
        ca: &Ca,
        key: &str,
        name: &str,
    ) -> Result<AgentRecord, ActivationError> {
        check_agent_name(name)?;
        let now = now_ms();
        let p = self
            .data
            .pending
            .iter_mut()
            .find(|p| p.key == key.trim())
            .ok_or_else(|| ActivationError::UnknownKey(key.to_string()))?;
        if p.agent_id.is_some() {
            return Err(ActivationError::Used(key.to_string()));
        }
        if now - p.created_ms > i64::try_from(self.key_lifetime.as_millis()).unwrap_or(i64::MAX) {
            return Err(ActivationError::Expired(key.to_string()));
        }
        let agent_id = format!("agent-{}", ca::random_hex(9));
        let cert = ca.sign_agent(&p.csr, &agent_id)?;
        let der = ca::cert_from_pem(&cert, "the signed certificate")?;
        let record = AgentRecord {
            agent_id: agent_id.clone(),
            name: name.to_string(),
            hostname: p.hostname.clone(),
            certificate_fingerprint: ca::fingerprint(&der),
            activated_ms: now,
            last_seen_ms: now,
        };
        p.agent_id = Some(agent_id.clone());
        p.certificate = Some(cert);
        self.by_cert
            .insert(record.certificate_fingerprint.clone(), agent_id);
        self.data.agents.push(record.clone());
        self.save()?;
        Ok(record)
    }

    /// The certificate of a confirmed key: `Ok(None)` while it waits.
    pub fn certificate(&self, key: &str) -> Result<Option<(String, String)>, ActivationError> {
        let p = self
            .data
            .pending
            .iter()
            .find(|p| p.key == key)
            .ok_or_else(|| ActivationError::UnknownKey(key.to_string()))?;
        match (&p.agent_id, &p.certificate) {
            (Some(id), Some(c)) => Ok(Some((id.clone(), c.clone()))),
            _ if now_ms() - p.created_ms
                > i64::try_from(self.key_lifetime.as_millis()).unwrap_or(i64::MAX) =>
            {
                Err(ActivationError::Expired(key.to_string()))
            }
            _ => Ok(None),
        }
    }

    /// The activated agent holding the certificate with this fingerprint.
    pub fn agent_by_cert(&self, fingerprint: &str) -> Option<&str> {
        self.by_cert.get(fingerprint).map(String::as_str)
    }

    /// Notes contact from an agent (kept in memory; saved with the next change).
    pub fn touch(&mut self, agent_id: &str) {
        if let Some(a) = self.data.agents.iter_mut().find(|a| a.agent_id == agent_id) {
            a.last_seen_ms = now_ms();
        }
    }

    pub fn agents(&self) -> Vec<serde_json::Value> {
        let now = now_ms();
        self.data
            .agents
            .iter()
            .map(|a| {
                let online = now - a.last_seen_ms < OFFLINE_AFTER.as_millis() as i64;
                let mut v = serde_json::to_value(a).expect("serializable");
                v["Status"] = (if online { "ONLINE" } else { "OFFLINE" }).into();
                v
            })
            .collect()
    }
}
