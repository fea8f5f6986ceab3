// SPDX-License-Identifier: MIT
//! The appliance's paths that ferry-init and ferry-agent both name: one
//! writes or passes what the other reads (image/manifest.toml starts the
//! agent with the same paths on its command line).

/// The configuration document: ferry-init checks it and keeps the last good
/// one; ferry-agent reads its `role:`, `daemon:` and `agent:`
/// (`ferry-agent --config`).
pub const CONFIG_DOCUMENT: &str = "/data/config/ferry.yaml";

/// The document's `agent:` section, checked, as JSON: written by ferry-init,
/// declared by the agent at start (`ferry-agent --provision`).
pub const AGENT_PROVISION: &str = "/etc/ferry/agent.json";

/// The agent's state: its database, reports and mount points
/// (`daemon: data_dir`).
pub const AGENT_DATA_DIR: &str = "/data/agent";

/// The agent's API (`daemon: socket`); the support console's appliance view
/// asks it too.
pub const AGENT_SOCKET: &str = "/run/ferry/agent.sock";

/// The agent's read-only API (`ferry-agent --read-only-socket`), for the
/// support group: the diagnostic console reads the agent's state there.
pub const AGENT_READ_ONLY_SOCKET: &str = "/run/ferry/agent-ro.sock";

/// Written by the agent once activated (`daemon: activated_marker`);
/// ferry-init's firewall then closes the activation port.
pub const ACTIVATED_MARKER: &str = "/data/ferry/activated";
