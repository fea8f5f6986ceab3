// SPDX-License-Identifier: MIT
//! What the hub keeps about agents: pending activations (a key, the agent's
//! certificate request) and activated agents (a name, the fingerprint of the
//! certificate the hub signed, when it was last heard from).
//!
//! Registrations come from anyone, so they cost the hub little and only
//! for a while: a certificate request of a few KiB, a bounded number
//! waiting (in all and per address), a rate per address and in all, kept
//! in memory only; the same public key again (an agent keeps its key pair
//! until activated) is answered its key, uncounted. What operators do
//! (confirming a key) is kept in one JSON file, written whole at each such
//! change: activated agents survive a restart; keys waiting for
//! confirmation do not (the agent then registers again).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ferry_model::api::{now_ms, AgentList, AgentRecord, AgentStatus};
use ferry_wire::ca::{self, Ca, CaError};

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
    #[error("the certificate request is {0} bytes; at most {CSR_MAX} are taken")]
    TooLarge(usize),
    #[error("{0} activations already wait for an operator; try again when some are confirmed or expired")]
    TooManyPending(usize),
    #[error("{0} activations from this address already wait for an operator; confirm or let them expire first")]
    TooManyFromAddress(usize),
    #[error("too many activation requests; try again in a minute")]
    RateLimited,
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub key: String,
    /// Dropped once the key is confirmed or expired.
    #[serde(default)]
    pub csr: String,
    pub hostname: String,
    pub created_ms: i64,
    /// Set when an operator confirmed the key.
    pub agent_id: Option<String>,
    pub certificate: Option<String>,
    /// Who asked (counted for the per-address cap); not saved.
    #[serde(skip)]
    pub from: Option<IpAddr>,
    /// The SHA-256 of the request's public key: the agent asking again
    /// (it keeps its key pair until activated) is answered this key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
}

/// The fingerprint of a certificate request's public key (parsed, not yet
/// verified).
fn public_key_of(csr: &str) -> Result<String, ActivationError> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let bad = |why: &str| ActivationError::BadRequest(why.to_string());
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .map_err(|_| bad("not a PEM certificate request"))?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| bad(&e.to_string()))?;
    Ok(ca::fingerprint(
        req.certification_request_info.subject_pki.raw,
    ))
}

/// A certificate request is a few hundred bytes (a P-256 key, a name).
pub const CSR_MAX: usize = 8 << 10;

/// What unauthenticated registrations may cost.
#[derive(Clone, Debug)]
pub struct RegistrationLimits {
    /// Keys waiting for an operator, in all and from one address.
    pub pending: usize,
    pub pending_per_address: usize,
    /// Registrations per address: a burst, then one per `address_every`.
    pub address_burst: f64,
    pub address_every: Duration,
    /// Registrations in all: a burst, then one per `overall_every`.
    pub overall_burst: f64,
    pub overall_every: Duration,
}

impl Default for RegistrationLimits {
    fn default() -> Self {
        RegistrationLimits {
            pending: 256,
            pending_per_address: 4,
            address_burst: 6.0,
            address_every: Duration::from_secs(10),
            overall_burst: 60.0,
            overall_every: Duration::from_secs(1),
        }
    }
}

/// Expired keys remembered (to answer "expired" rather than "unknown").
const EXPIRED_KEPT: usize = 4096;
/// Per-address rate buckets kept before idle ones are forgotten.
const BUCKETS_KEPT: usize = 4096;

/// A token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, burst: f64, every: Duration, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / every.as_secs_f64();
        self.tokens = (self.tokens + earned).min(burst);
        self.at = now;
    }
}

/// The rate limits of registrations.
#[derive(Debug)]
struct Rate {
    overall: Bucket,
    by_address: HashMap<IpAddr, Bucket>,
}

impl Rate {
    fn new(limits: &RegistrationLimits, now: Instant) -> Rate {
        Rate {
            overall: Bucket::full(limits.overall_burst, now),
            by_address: HashMap::new(),
        }
    }

    /// Takes a token from the address's bucket and the overall one.
    fn take(&mut self, limits: &RegistrationLimits, ip: IpAddr, now: Instant) -> bool {
        if self.by_address.len() >= BUCKETS_KEPT {
            // Full buckets are the same as none.
            self.by_address.retain(|_, b| {
                b.refill(limits.address_burst, limits.address_every, now);
                b.tokens < limits.address_burst
            });
            if self.by_address.len() >= BUCKETS_KEPT {
                return false;
            }
        }
        let b = self
            .by_address
            .entry(ip)
            .or_insert_with(|| Bucket::full(limits.address_burst, now));
        b.refill(limits.address_burst, limits.address_every, now);
        self.overall
            .refill(limits.overall_burst, limits.overall_every, now);
        if b.tokens < 1.0 || self.overall.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        self.overall.tokens -= 1.0;
        true
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    pending: Vec<Pending>,
    agents: Vec<AgentRecord>,
}

pub struct HubState {
    path: PathBuf,
    key_lifetime: Duration,
    /// Agents, and confirmed keys (until their agent picks its certificate
    /// up): what is saved.
    data: Data,
    /// Keys waiting for an operator, in memory only.
    waiting: Vec<Pending>,
    limits: RegistrationLimits,
    rate: Rate,
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
        Self::with_limits(dir, key_lifetime, RegistrationLimits::default())
    }

    pub fn with_limits(
        dir: &Path,
        key_lifetime: Duration,
        limits: RegistrationLimits,
    ) -> Result<HubState, ActivationError> {
        let path = dir.join("hub.json");
        let mut data: Data = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // A file from before kept unconfirmed requests too: not any more.
        data.pending.retain(|p| p.agent_id.is_some());
        data.pending.iter_mut().for_each(|p| p.csr.clear());
        let by_cert = data
            .agents
            .iter()
            .map(|a| (a.certificate_fingerprint.clone(), a.agent_id.clone()))
            .collect();
        Ok(HubState {
            path,
            key_lifetime,
            data,
            waiting: Vec::new(),
            rate: Rate::new(&limits, Instant::now()),
            limits,
            by_cert,
        })
    }

    fn save(&self) -> Result<(), ActivationError> {
        let text = serde_json::to_vec_pretty(&self.data).expect("serializable");
        ca::write_file(&self.path, &text, true).map_err(|source| ActivationError::Io {
            what: format!("save {}", self.path.display()),
            source,
        })
    }

    fn lifetime_ms(&self) -> i64 {
        i64::try_from(self.key_lifetime.as_millis()).unwrap_or(i64::MAX)
    }

    fn expired(&self, p: &Pending, now_ms: i64) -> bool {
        now_ms.saturating_sub(p.created_ms) > self.lifetime_ms()
    }

    /// Records an agent's request from `from`; returns its activation key.
    pub fn register(
        &mut self,
        csr: &str,
        hostname: &str,
        from: IpAddr,
    ) -> Result<String, ActivationError> {
        self.register_at(csr, hostname, from, Instant::now())
    }

    fn register_at(
        &mut self,
        csr: &str,
        hostname: &str,
        from: IpAddr,
        now: Instant,
    ) -> Result<String, ActivationError> {
        if csr.len() > CSR_MAX {
            return Err(ActivationError::TooLarge(csr.len()));
        }
        let from = ferry_wire::tls::address_key(from);
        let public_key = public_key_of(csr)?;
        let now_ms = now_ms();
        // Expired keys keep only their key (to be told apart from unknown
        // ones), the newest few thousand, for a day.
        let lifetime = self.lifetime_ms();
        for p in &mut self.waiting {
            if now_ms.saturating_sub(p.created_ms) > lifetime {
                p.csr = String::new();
                p.from = None;
            }
        }
        self.waiting.retain(|p| now_ms - p.created_ms < 86_400_000);
        let expired = self.waiting.iter().filter(|p| p.from.is_none()).count();
        if expired > EXPIRED_KEPT {
            let mut drop = expired - EXPIRED_KEPT;
            self.waiting.retain(|p| {
                let gone = drop > 0 && p.from.is_none();
                drop -= usize::from(gone);
                !gone
            });
        }
        // The same agent again (whoever made it ask: its activation port is
        // open to anyone until activated): the key it already has, which
        // keeps its expiry, without counting against any cap or rate, so
        // requests repeated by a stranger cannot use them up. The request
        // must be signed by the key (it proves the agent holds it).
        if let Some(key) = self.live_key(&public_key, now_ms) {
            rcgen::CertificateSigningRequestParams::from_pem(csr)
                .map_err(|e| ActivationError::BadRequest(e.to_string()))?;
            return Ok(key);
        }
        let live = self.waiting.iter().filter(|p| p.from.is_some()).count();
        if live >= self.limits.pending {
            return Err(ActivationError::TooManyPending(live));
        }
        let mine = self.waiting.iter().filter(|p| p.from == Some(from)).count();
        if mine >= self.limits.pending_per_address {
            return Err(ActivationError::TooManyFromAddress(mine));
        }
        if !self.rate.take(&self.limits, from, now) {
            return Err(ActivationError::RateLimited);
        }
        rcgen::CertificateSigningRequestParams::from_pem(csr)
            .map_err(|e| ActivationError::BadRequest(e.to_string()))?;
        let key = new_key();
        self.waiting.push(Pending {
            key: key.clone(),
            csr: csr.to_string(),
            hostname: hostname.chars().take(64).collect(),
            created_ms: now_ms,
            agent_id: None,
            certificate: None,
            from: Some(from),
            public_key,
        });
        Ok(key)
    }

    /// A key for this public key still waiting for an operator, or
    /// confirmed and not yet a day old.
    fn live_key(&self, public_key: &str, now_ms: i64) -> Option<String> {
        let waiting = self
            .waiting
            .iter()
            .find(|p| p.public_key == public_key && p.from.is_some() && !self.expired(p, now_ms));
        let confirmed = || {
            self.data
                .pending
                .iter()
                .find(|p| p.public_key == public_key && p.certificate.is_some())
        };
        waiting.or_else(confirmed).map(|p| p.key.clone())
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
        if self.data.pending.iter().any(|p| p.key == key.trim()) {
            return Err(ActivationError::Used(key.to_string()));
        }
        let i = self
            .waiting
            .iter()
            .position(|p| p.key == key.trim())
            .ok_or_else(|| ActivationError::UnknownKey(key.to_string()))?;
        if self.expired(&self.waiting[i], now) || self.waiting[i].csr.is_empty() {
            return Err(ActivationError::Expired(key.to_string()));
        }
        let agent_id = format!("agent-{}", ca::random_hex(9));
        let cert = ca.sign_agent(&self.waiting[i].csr, &agent_id)?;
        let der = ca::cert_from_pem(&cert, "the signed certificate")?;
        let mut p = self.waiting.remove(i);
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
        p.csr.clear();
        p.from = None;
        self.by_cert
            .insert(record.certificate_fingerprint.clone(), agent_id);
        self.data.agents.push(record.clone());
        // Confirmed keys are kept a day for their agent to pick them up.
        self.data
            .pending
            .retain(|p| now - p.created_ms < 86_400_000);
        self.data.pending.push(p);
        self.save()?;
        Ok(record)
    }

    /// The certificate of a confirmed key: `Ok(None)` while it waits.
    pub fn certificate(&self, key: &str) -> Result<Option<(String, String)>, ActivationError> {
        let p = self
            .data
            .pending
            .iter()
            .chain(&self.waiting)
            .find(|p| p.key == key)
            .ok_or_else(|| ActivationError::UnknownKey(key.to_string()))?;
        match (&p.agent_id, &p.certificate) {
            (Some(id), Some(c)) => Ok(Some((id.clone(), c.clone()))),
            _ if self.expired(p, now_ms()) || p.csr.is_empty() => {
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

    pub fn agents(&self) -> AgentList {
        let now = now_ms();
        let agents = self.data.agents.iter().map(|a| {
            let online = now - a.last_seen_ms < OFFLINE_AFTER.as_millis() as i64;
            AgentStatus {
                agent: a.clone(),
                status: (if online { "ONLINE" } else { "OFFLINE" }).into(),
            }
        });
        AgentList {
            agents: agents.collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> String {
        ca::new_request("agent-host").unwrap().1
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Limits where only the one under test can be reached.
    fn open(dir: &Path, limits: RegistrationLimits) -> HubState {
        HubState::with_limits(dir, KEY_LIFETIME, limits).unwrap()
    }

    fn no_rate() -> RegistrationLimits {
        RegistrationLimits {
            pending: 1000,
            pending_per_address: 1000,
            address_burst: 1e9,
            address_every: Duration::from_nanos(1),
            overall_burst: 1e9,
            overall_every: Duration::from_nanos(1),
        }
    }

    #[test]
    fn a_large_certificate_request_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), no_rate());
        let big = format!("{}{}", csr(), " ".repeat(CSR_MAX));
        assert!(matches!(
            s.register(&big, "h", ip("192.0.2.1")),
            Err(ActivationError::TooLarge(_))
        ));
        assert!(s.register(&csr(), "h", ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn pending_registrations_are_capped_in_all_and_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RegistrationLimits {
            pending: 5,
            pending_per_address: 2,
            ..no_rate()
        };
        let mut s = open(dir.path(), limits);
        // A new key pair each time: another agent.
        for _ in 0..2 {
            s.register(&csr(), "h", ip("192.0.2.1")).unwrap();
        }
        assert!(matches!(
            s.register(&csr(), "h", ip("192.0.2.1")),
            Err(ActivationError::TooManyFromAddress(2))
        ));
        // One IPv6 client holds its whole /64.
        s.register(&csr(), "h", ip("2001:db8::1")).unwrap();
        s.register(&csr(), "h", ip("2001:db8::2:3")).unwrap();
        assert!(matches!(
            s.register(&csr(), "h", ip("2001:db8::ffff")),
            Err(ActivationError::TooManyFromAddress(2))
        ));
        s.register(&csr(), "h", ip("192.0.2.2")).unwrap();
        assert!(matches!(
            s.register(&csr(), "h", ip("192.0.2.3")),
            Err(ActivationError::TooManyPending(5))
        ));
    }

    #[test]
    fn registrations_are_rate_limited_per_address_and_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RegistrationLimits {
            address_burst: 2.0,
            address_every: Duration::from_secs(10),
            overall_burst: 3.0,
            overall_every: Duration::from_secs(1),
            ..no_rate()
        };
        let mut s = open(dir.path(), limits);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        s.register_at(&csr(), "h", a, t0).unwrap();
        s.register_at(&csr(), "h", a, t0).unwrap();
        assert!(matches!(
            s.register_at(&csr(), "h", a, t0),
            Err(ActivationError::RateLimited)
        ));
        // Another address has its own bucket, but the overall one runs out.
        s.register_at(&csr(), "h", ip("192.0.2.2"), t0).unwrap();
        assert!(matches!(
            s.register_at(&csr(), "h", ip("192.0.2.3"), t0),
            Err(ActivationError::RateLimited)
        ));
        // Tokens come back with time.
        s.register_at(&csr(), "h", ip("192.0.2.3"), t0 + Duration::from_secs(1))
            .unwrap();
        s.register_at(&csr(), "h", a, t0 + Duration::from_secs(12))
            .unwrap();
    }

    #[test]
    fn registrations_are_not_written_and_activated_agents_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("ca"), &["localhost".into()]).unwrap();
        let mut s = open(dir.path(), no_rate());
        let csr = csr();
        let keep = s.register(&csr, "h", ip("192.0.2.1")).unwrap();
        for _ in 0..20 {
            s.register(&self::csr(), "h", ip("192.0.2.1")).unwrap();
        }
        // Nothing unauthenticated reached the disk.
        assert!(!dir.path().join("hub.json").exists());
        let record = s.activate(&ca, &keep, "site").unwrap();
        let saved = std::fs::read_to_string(dir.path().join("hub.json")).unwrap();
        assert!(!saved.contains("CERTIFICATE REQUEST"), "{saved}");
        assert!(saved.len() < 8 << 10, "{} bytes", saved.len());
        drop(s);
        let s = open(dir.path(), no_rate());
        assert_eq!(
            s.agent_by_cert(&record.certificate_fingerprint),
            Some(record.agent_id.as_str())
        );
        // The confirmed key's certificate can still be picked up.
        assert!(s.certificate(&keep).unwrap().is_some());
    }

    #[test]
    fn the_same_agent_asking_again_gets_its_key_uncounted() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("ca"), &["localhost".into()]).unwrap();
        let limits = RegistrationLimits {
            pending_per_address: 1,
            address_burst: 1.0,
            address_every: Duration::from_secs(3600),
            ..no_rate()
        };
        let mut s = open(dir.path(), limits);
        let key_pair = rcgen::KeyPair::generate().unwrap();
        // A new request each time (ECDSA signatures differ), one key pair.
        let again = || {
            let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.serialize_request(&key_pair).unwrap().pem().unwrap()
        };
        let a = ip("192.0.2.1");
        let key = s.register(&again(), "h", a).unwrap();
        // Far beyond the address's cap and rate: the same key each time.
        for _ in 0..10 {
            assert_eq!(s.register(&again(), "h", a).unwrap(), key);
        }
        // Another agent behind that address is over the cap, as before.
        assert!(s.register(&csr(), "h", a).is_err());
        // A request for that public key not signed by it is not answered.
        let forged = {
            let pem = again();
            let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
                .map(|d: rustls::pki_types::CertificateSigningRequestDer| d.as_ref().to_vec())
                .unwrap();
            let mut der = der;
            let n = der.len();
            der[n - 3] ^= 0x55; // in the signature
            let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n"
            )
        };
        assert!(matches!(
            s.register(&forged, "h", a),
            Err(ActivationError::BadRequest(_))
        ));
        // Confirmed: the same key still (the agent picks its certificate up).
        s.activate(&ca, &key, "site").unwrap();
        assert_eq!(s.register(&again(), "h", a).unwrap(), key);
        assert!(s.certificate(&key).unwrap().is_some());
    }
}
