// SPDX-License-Identifier: MIT
//! The JSON messages between hub and agent: the executions a hub hands an
//! agent (`GET /agent/v1/tasks`, read by the agent, with each job's task
//! options checked as before a run), the hub's other answers the agent
//! reads, and an agent's report on a job (`POST
//! /agent/v1/executions/{id}/report`, read by the hub).
#![no_main]

use ferry_daemon::dispatch::{Job, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // the agent: HubClient::json, then what the link takes from the answer
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(jobs) = serde_json::from_value::<Vec<Job>>(v["Executions"].clone()) {
            for job in jobs {
                let _ = job.options.validate();
                let _ = job.options.bandwidth_limit();
            }
        }
        let _ = v["Cancel"] == true;
        let _ = v["ActivationKey"].as_str();
        let _ = (v["AgentId"].as_str(), v["Certificate"].as_str());
    }
    // the hub: agent_report
    if let Ok(report) = serde_json::from_slice::<Report>(data) {
        let _ = report.finished();
    }
});
