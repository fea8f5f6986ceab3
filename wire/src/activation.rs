// SPDX-License-Identifier: MIT
//! The activation exchange's messages (JSON, DataSync's PascalCase): an
//! agent registers a certificate request, an operator confirms its key on
//! the hub, and the agent picks its certificate up.

use serde::{Deserialize, Serialize};

/// `POST /activation/v1/register`, from the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Register {
    /// PEM certificate request for the agent's key pair.
    pub csr: String,
    #[serde(default)]
    pub hostname: String,
}

/// The hub's answer: the key an operator confirms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Registered {
    pub activation_key: String,
}

/// `GET /activation/v1/certificate?activationKey=` once confirmed: the
/// agent's id and its certificate (PEM), signed by the hub's CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Issued {
    pub agent_id: String,
    pub certificate: String,
}
