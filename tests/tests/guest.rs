// SPDX-License-Identifier: MIT
//! The test-guest library of ferry-image builds an initramfs from Debian
//! packages (busybox, rsync with its libraries found automatically) and
//! kernel modules, and it boots: what the benchmark and NFS tests build on.

use std::time::Duration;

use ferry_e2e::{DirectKernel, Scratch, Vm, VmConfig};
use ferry_image::debian::Cache;
use ferry_image::guest::{self, GuestSpec};

const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
rel=$(cat /etc/kernel-release)
n=0
for m in $(cat /etc/modules.order); do insmod /lib/modules/$rel/$m && n=$((n+1)); done
echo "guest: $n modules loaded"
ip link set eth0 up && echo "guest: eth0 up"
rsync --version | head -n 1
echo "guest: done"
poweroff -f
"#;

#[test]
fn a_test_guest_built_from_debian_packages_boots() {
    let s = Scratch::new("guest").unwrap();
    let cache = Cache::new(&Cache::default_dir()).unwrap();
    let spec = GuestSpec {
        kernel_package: "linux-image-cloud-amd64".into(),
        modules: vec!["virtio_pci".into(), "virtio_net".into()],
        packages: vec![
            ("busybox-static".into(), vec!["/bin/busybox".into()]),
            ("rsync".into(), vec!["/usr/bin/rsync".into()]),
        ],
        files: vec![],
        symlinks: [
            "sh", "mount", "cat", "insmod", "echo", "ip", "head", "poweroff",
        ]
        .iter()
        .map(|a| ("busybox".to_string(), format!("/bin/{a}")))
        .collect(),
        init: INIT.as_bytes().to_vec(),
    };
    let g = guest::build(&spec, &cache, &s.0).unwrap();
    assert_eq!(
        g.modules.last().map(|m| m.ends_with("virtio_net.ko")),
        Some(true)
    );
    let mut vm = Vm::start(&VmConfig::direct(
        DirectKernel {
            kernel: g.kernel.clone(),
            initrd: g.initrd.clone(),
            append: "console=ttyS0 quiet".into(),
        },
        &s.0,
    ))
    .unwrap();
    let loaded = vm.wait_for("guest: ", Duration::from_secs(120)).unwrap();
    assert!(
        loaded.contains(&format!("{} modules loaded", g.modules.len())),
        "{loaded}"
    );
    vm.wait_for("guest: eth0 up", Duration::from_secs(10))
        .unwrap();
    // rsync came with its shared libraries, taken from Debian packages
    vm.wait_for("rsync  version", Duration::from_secs(10))
        .unwrap();
    vm.wait_for("guest: done", Duration::from_secs(10)).unwrap();
    vm.wait_exit(Duration::from_secs(30)).unwrap();
}
