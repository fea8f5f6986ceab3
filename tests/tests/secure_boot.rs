// SPDX-License-Identifier: MIT
//! Secure Boot: the unified kernel image carries the kernel command line
//! and so the dm-verity root hash. Signed, it boots under enforcing Secure
//! Boot; unsigned (or changed), the firmware refuses it. Uses Debian's test
//! ("snakeoil") key that OVMF_VARS_4M.snakeoil.fd trusts.

use std::process::Command;
use std::time::Duration;

use ferry_e2e::{
    appliance_image, copy_sparse, partition, Firmware, Scratch, Vm, VmConfig, SNAKEOIL_CERT,
    SNAKEOIL_KEY, SNAKEOIL_PASSPHRASE,
};

#[test]
fn signed_uki_boots_under_secure_boot_and_unsigned_is_refused() {
    let image = appliance_image().unwrap();
    let s = Scratch::new("secure-boot").unwrap();
    let uki = image.parent().unwrap().join("ferry.efi");

    // sign the UKI the build made, with the test key
    let key = s.0.join("key.pem");
    let st = Command::new("openssl")
        .args(["rsa", "-in", SNAKEOIL_KEY, "-passin"])
        .arg(format!("pass:{SNAKEOIL_PASSPHRASE}"))
        .arg("-out")
        .arg(&key)
        .status()
        .expect("run openssl");
    assert!(st.success());
    let signed = s.0.join("signed.efi");
    ferry_image::appliance::sign_efi(&key, SNAKEOIL_CERT.as_ref(), &uki, &signed).unwrap();

    let esp = partition(&image, "esp").unwrap();
    let signed_disk = s.0.join("signed.raw");
    copy_sparse(&image, &signed_disk).unwrap();
    let st = Command::new("mcopy")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@{}", signed_disk.display(), esp.offset()))
        .arg(&signed)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .status()
        .expect("run mcopy");
    assert!(st.success());

    let mut vm = Vm::start(&VmConfig::new(&signed_disk, Firmware::UefiSecureBoot, &s.0)).unwrap();
    let ready = vm
        .wait_for("ferry-init: ready in ", Duration::from_secs(180))
        .unwrap();
    eprintln!("Secure Boot, signed UKI: {ready}");
    vm.wait_for("power: listening", Duration::from_secs(30))
        .unwrap();
    vm.powerdown().unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    drop(vm);

    // the image as built (unsigned UKI): the firmware refuses to run it
    let unsigned_disk = s.0.join("unsigned.raw");
    copy_sparse(&image, &unsigned_disk).unwrap();
    let mut vm = Vm::start(&VmConfig::new(
        &unsigned_disk,
        Firmware::UefiSecureBoot,
        &s.0,
    ))
    .unwrap();
    let denied = vm
        .wait_for("Access Denied", Duration::from_secs(120))
        .unwrap();
    eprintln!("Secure Boot, unsigned UKI: {denied}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !vm.console().contains("ferry-init"),
        "an unsigned UKI ran under Secure Boot"
    );
}
