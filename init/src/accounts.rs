// SPDX-License-Identifier: GPL-2.0-only
//! The appliance's system accounts: the one table `/etc/passwd` and
//! `/etc/group` are generated from ([`crate::etc`]) and services are run
//! as ([`crate::services`]), with the support channel's account
//! ([`crate::support`]).

/// The support channel's sessions run as this user.
pub const SUPPORT_USER: &str = "support";
/// Home of the `support` user: `.ssh/authorized_keys`, owned by root.
pub const SUPPORT_HOME: &str = "/run/ferry/support-home";
/// The `support` user's login shell: ferry-init, which only offers the
/// diagnostic console.
pub const SUPPORT_SHELL: &str = "/usr/sbin/ferry-init";

/// A system account.
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: &'static str,
}

/// The accounts of the appliance. Nobody can log in: there is no shell.
pub const USERS: &[User] = &[
    User {
        name: "root",
        uid: 0,
        gid: 0,
        home: "/root",
    },
    User {
        name: "_chrony",
        uid: 100,
        gid: 101,
        home: "/var/lib/chrony",
    },
    User {
        name: "systemd-journal",
        uid: 102,
        gid: 102,
        home: "/",
    },
    User {
        name: "ferry",
        uid: 1000,
        gid: 1000,
        home: "/data/ferry",
    },
    // the support channel's sessions (see `support`): its login shell is
    // ferry-init, which only offers the diagnostic console
    User {
        name: "support",
        uid: 1001,
        gid: 1001,
        home: SUPPORT_HOME,
    },
    User {
        name: "nobody",
        uid: 65534,
        gid: 65534,
        home: "/nonexistent",
    },
];
