// SPDX-License-Identifier: MIT
//! Activating an agent appliance with a hub appliance, from the host, as an
//! operator would: the hub's CA at first contact, the agent's port 80
//! redirect, the key confirmed through the hub's API. Shared by the tests
//! that boot both.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_e2e::Vm;
use ferry_wire::{ca, client::HubClient, tls};
use hyper::Method;
use serde_json::{json, Value};

/// `GET /?query` on the agent's forwarded port 80: (status, Location, answer).
pub fn activation_get(port: u16, query: &str) -> Option<(u16, Option<String>, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "GET /?{query} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let location = answer
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::to_string);
    Some((status, location, answer))
}

/// The hub appliance's API through its forwarded port 443.
pub struct Operator {
    pub rt: tokio::runtime::Runtime,
    pub client: HubClient,
    /// `sha256:HEX` of the hub's CA certificate.
    pub fingerprint: String,
}

impl Operator {
    /// Waits for the hub to answer HTTPS on `127.0.0.1:hub_port` and takes
    /// its CA from that first contact.
    pub fn connect(hub: &Vm, hub_port: u16, token: &str) -> Operator {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let base = format!("https://127.0.0.1:{hub_port}");
        let deadline = Instant::now() + Duration::from_secs(180);
        let ca_der = loop {
            let seen = Arc::new(Mutex::new(None));
            let config = tls::first_contact_config(None, seen.clone()).unwrap();
            let c = HubClient::new(base.clone(), config, 1, None);
            let r = rt.block_on(c.send(Method::GET, "/activate", "text/html", Vec::new()));
            if let (Ok(_), Some(der)) = (r, seen.lock().unwrap().take()) {
                break der;
            }
            assert!(
                Instant::now() < deadline,
                "the hub does not answer HTTPS:\n{}",
                hub.console()
            );
            std::thread::sleep(Duration::from_secs(2));
        };
        let client = HubClient::new(
            base,
            tls::client_config(&ca_der, None).unwrap(),
            1,
            Some(token.into()),
        );
        Operator {
            rt,
            client,
            fingerprint: ca::fingerprint(&ca_der),
        }
    }

    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.rt
            .block_on(self.client.json(method, path, body.as_ref()))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Activates the agent whose port 80 is forwarded to `agent_port`, with
    /// the hub as the agent reaches it (`hub_from_agent`, port 443); waits
    /// until the agent has closed port 80. Returns the agent's id.
    pub fn activate(
        &self,
        agent: &Vm,
        agent_port: u16,
        hub_from_agent: &str,
        name: &str,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        let key = loop {
            let query = format!("hub={hub_from_agent}&hubFingerprint={}", self.fingerprint);
            if let Some((302, Some(location), _)) = activation_get(agent_port, &query) {
                assert!(
                    location.starts_with(&format!(
                        "https://{hub_from_agent}:443/activate?activationKey="
                    )),
                    "{location}"
                );
                break location.rsplit('=').next().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no activation redirect:\n{}",
                agent.console()
            );
            std::thread::sleep(Duration::from_secs(2));
        };
        let record = self.call(
            Method::POST,
            "/v1/agents/activate",
            Some(json!({"ActivationKey": key, "AgentName": name})),
        );
        // The agent picks up its certificate and closes port 80.
        let deadline = Instant::now() + Duration::from_secs(120);
        while activation_get(agent_port, "").is_some_and(|(s, _, _)| s == 200) {
            assert!(
                Instant::now() < deadline,
                "port 80 stays open:\n{}",
                agent.console()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        record["AgentId"].as_str().unwrap().to_string()
    }
}
