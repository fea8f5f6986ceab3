// SPDX-License-Identifier: GPL-2.0-only
//! The `agent:` section (version 2): the locations and tasks ferry-agent
//! declares when it starts. Its types and checks are ferry-model's
//! (`ferry_model::config::agent`), as the agent checks it: names,
//! references, a task into itself, NFS and local paths, mount options, the
//! options' values and schedules. ferry-init hands the section to the agent
//! as JSON (`/etc/ferry/agent.json`, [`crate::etc`]). The tests here go
//! through ferry-init's parse (errors name key and line).

pub use ferry_model::config::agent::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{fixture, parse};

    #[test]
    fn a_task_into_itself_or_a_schedule_that_never_occurs_is_refused() {
        let doc = |a: &str, b: &str, schedule: &str| {
            parse(
                &format!("version: 2\nagent:\n  locations:\n    a: {a}\n    b: {b}\n  tasks:\n    t:\n      source: a\n      destination: b\n{schedule}"),
                "f",
            )
        };
        let e = doc(
            "{ local: { path: /srv/a } }",
            "{ local: { path: /srv/a/b/ } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("agent.tasks.t.destination") && e.contains("copy into itself"),
            "{e}"
        );
        let e = doc(
            "{ local: { path: /srv/a/b } }",
            "{ local: { path: /srv/a } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("its own source"), "{e}");
        let e = doc(
            "{ nfs: { server: NAS, export: /e, subdirectory: x } }",
            "{ nfs: { server: nas, export: /e/x } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("same directory"), "{e}");
        doc(
            "{ local: { path: /srv/a } }",
            "{ local: { path: /srv/ab } }",
            "",
        )
        .unwrap();
        doc(
            "{ nfs: { server: n1, export: /e } }",
            "{ nfs: { server: n2, export: /e } }",
            "",
        )
        .unwrap();
        let e = doc(
            "{ local: { path: /a } }",
            "{ local: { path: /b } }",
            "      schedule: \"0 0 31 2 *\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("agent.tasks.t.schedule") && e.contains("never occurs"),
            "{e}"
        );
        let e = doc(
            "{ local: { path: /a } }",
            "{ local: { path: /b } }",
            "      schedule: \"61 * * * *\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a valid cron expression"), "{e}");
        // croner's extensions: `L` made its search run for hours (in PID 1).
        for schedule in ["L * * * *", "0 0 L * *", "0 0 ? * 1#2", "0 0 1W * *"] {
            let e = doc(
                "{ local: { path: /a } }",
                "{ local: { path: /b } }",
                &format!("      schedule: \"{schedule}\"\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("is not standard cron"), "{e}");
        }
        let e = doc(
            "{ local: { path: /a/../etc } }",
            "{ local: { path: /b } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("without '..'"), "{e}");
        let e = doc(
            "{ nfs: { server: n, export: /e, subdirectory: ../x } }",
            "{ local: { path: /b } }",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("agent.locations.a.nfs.subdirectory"), "{e}");
    }

    #[test]
    fn version_2_declares_agent_locations_and_tasks() {
        let d = parse(&fixture("v2-agent.yaml"), "t").unwrap();
        let a = d.agent.unwrap();
        assert_eq!(a.locations.len(), 3);
        let nas = a.locations["nas"].nfs.as_ref().unwrap();
        assert_eq!(nas.version.as_deref(), Some("4.1"));
        assert!(!nas.allow_special_files);
        let efs = a.locations["efs"].efs.as_ref().unwrap();
        assert_eq!(
            efs.in_transit_encryption,
            ferry_model::efs::InTransitEncryption::Tls1_2
        );
        assert!(
            a.locations["scratch"]
                .local
                .as_ref()
                .unwrap()
                .allow_special_files
        );
        let t = &a.tasks["nightly"];
        assert_eq!((t.source.as_str(), t.destination.as_str()), ("nas", "efs"));
        assert_eq!(
            t.options["VerifyMode"],
            OptionValue::Text("ONLY_FILES_TRANSFERRED".into())
        );
        assert_eq!(t.options["BytesPerSecond"], OptionValue::Number(-1));
        assert_eq!(
            t.options["Excludes"],
            OptionValue::List(vec!["*.tmp".into()])
        );
        assert!(t.start_on_boot);
        // v1 documents still parse, without the section.
        assert_eq!(parse(&fixture("v1-dhcp.yaml"), "t").unwrap().agent, None);
    }

    #[test]
    fn agent_section_errors_name_key_and_line() {
        let e = parse(&fixture("v2-agent-unknown-location.yaml"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.tasks.copy.destination")
                && e.contains("\"backup\" is not a location"),
            "{e}"
        );
        assert!(e.contains("line 9"), "{e}");
        let e = parse("version: 1\nagent: {}\n", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs version: 2") && e.contains("line 2"),
            "{e}"
        );
        let base = "version: 2\nagent:\n  locations:\n    a: { local: { path: /a } }\n    b: { local: { path: /b } }\n  tasks:\n    t:\n      source: a\n      destination: b\n";
        let e = parse(
            &format!("{base}      options: {{ VerifyMod: NONE }}\n"),
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown option VerifyMod"), "{e}");
        let e = parse(&format!("{base}      schedule: \"0 0 * * * *\"\n"), "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("five cron fields"), "{e}");
        let e = parse("version: 2\nagent:\n  locations:\n    a: { nfs: { server: s, export: /e }, local: { path: /a } }\n", "f").unwrap_err().to_string();
        assert!(e.contains("exactly one of nfs, efs or local"), "{e}");
        let e = parse("version: 2\nagent:\n  locations:\n    a: { nfs: { server: s, export: /e, verson: \"3\" } }\n", "f").unwrap_err().to_string();
        assert!(e.contains("verson"), "{e}");
        let e = parse("version: 2\nagent:\n  locations:\n    a: { local: { path: /a, allow_special_files: yes please } }\n", "f").unwrap_err().to_string();
        assert!(
            e.contains("agent.locations.a.local.allow_special_files")
                && e.contains("expected a boolean"),
            "{e}"
        );
    }
}
