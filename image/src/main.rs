// SPDX-License-Identifier: MIT
//! `ferry-image`: the offline image builder's command line.
//!
//! ```text
//! ferry-image build [--manifest image/manifest.toml] [--binaries DIR] [--out out] [--cache DIR]
//!                   [--sign-key KEY.pem --sign-cert CERT.pem]
//! ferry-image cargo-args [--manifest image/manifest.toml]
//!
//! # the Buildroot build (buildroot/)
//! ferry-image assemble --target-dir DIR --kernel bzImage --kernel-config .config [--out DIR]
//! ferry-image kernel-fragment                 # buildroot/board/ferry/linux.fragment
//! ferry-image install-list --package CRATE    # "bin dest" lines
//! ferry-image check-buildroot [--tree buildroot]
//! ```
//!
//! `--efi-stub` / `FERRY_EFI_STUB` and `--gptmbr` / `FERRY_GPTMBR` replace
//! the boot code taken from Debian's systemd-boot-efi and syslinux.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ferry_image::appliance::{self, Options, Source};
use ferry_image::buildroot;
use ferry_image::debian::Cache;
use ferry_image::manifest::Manifest;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut manifest = PathBuf::from("image/manifest.toml");
    let mut binaries = PathBuf::from("target/x86_64-unknown-linux-musl/release");
    let mut out = PathBuf::from("out");
    let mut cache = Cache::default_dir();
    let mut sign_key: Option<PathBuf> = std::env::var_os("FERRY_SIGN_KEY").map(PathBuf::from);
    let mut sign_cert: Option<PathBuf> = std::env::var_os("FERRY_SIGN_CERT").map(PathBuf::from);
    let env_or = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let mut efi_stub = env_or("FERRY_EFI_STUB", appliance::STUB);
    let mut gptmbr = env_or("FERRY_GPTMBR", appliance::GPTMBR);
    let mut target_dir: Option<PathBuf> = None;
    let mut kernel: Option<PathBuf> = None;
    let mut kernel_config: Option<PathBuf> = None;
    let mut tree = PathBuf::from("buildroot");
    let mut package: Option<String> = None;
    let Some(cmd) = args.first().cloned() else {
        eprintln!("usage: ferry-image build|cargo-args|assemble|kernel-fragment|install-list|check-buildroot [--manifest F] [options]");
        return ExitCode::from(2);
    };
    let mut i = 1;
    while i < args.len() {
        let val = args.get(i + 1).cloned();
        let Some(val) = val else {
            eprintln!("ferry-image: {} needs a value", args[i]);
            return ExitCode::from(2);
        };
        match args[i].as_str() {
            "--manifest" => manifest = val.into(),
            "--binaries" => binaries = val.into(),
            "--out" => out = val.into(),
            "--cache" => cache = val.into(),
            "--sign-key" => sign_key = Some(val.into()),
            "--sign-cert" => sign_cert = Some(val.into()),
            "--efi-stub" => efi_stub = val.into(),
            "--gptmbr" => gptmbr = val.into(),
            "--target-dir" => target_dir = Some(val.into()),
            "--kernel" => kernel = Some(val.into()),
            "--kernel-config" => kernel_config = Some(val.into()),
            "--tree" => tree = val.into(),
            "--package" => package = Some(val),
            other => {
                eprintln!("ferry-image: unknown option {other}");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    let m = match Manifest::load(&manifest) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ferry-image: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cmd.as_str() {
        "cargo-args" => {
            println!("{}", m.cargo_args().join(" "));
            ExitCode::SUCCESS
        }
        "kernel-fragment" => {
            print!("{}", buildroot::kernel_fragment(&m));
            ExitCode::SUCCESS
        }
        "install-list" => {
            let Some(package) = package else {
                eprintln!("ferry-image: install-list needs --package CRATE");
                return ExitCode::from(2);
            };
            let list = buildroot::install_list(&m, &package);
            if list.is_empty() {
                eprintln!(
                    "ferry-image: no [[binaries]] of cargo package {package} in the manifest"
                );
                return ExitCode::FAILURE;
            }
            for (bin, dest) in list {
                println!("{bin} {dest}");
            }
            ExitCode::SUCCESS
        }
        "check-buildroot" => match buildroot::check_tree(&m, &tree) {
            Ok(problems) if problems.is_empty() => {
                println!(
                    "ferry-image: {} matches {}",
                    tree.display(),
                    manifest.display()
                );
                ExitCode::SUCCESS
            }
            Ok(problems) => {
                for p in problems {
                    eprintln!("ferry-image: drift: {p}");
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("ferry-image: {e}");
                ExitCode::FAILURE
            }
        },
        "build" | "assemble" => {
            let t = Instant::now();
            let source = if cmd == "build" {
                Source::Debian
            } else {
                match (target_dir, kernel, kernel_config) {
                    (Some(target), Some(kernel), Some(kernel_config)) => Source::Buildroot {
                        target,
                        kernel,
                        kernel_config,
                    },
                    _ => {
                        eprintln!("ferry-image: assemble needs --target-dir, --kernel and --kernel-config");
                        return ExitCode::from(2);
                    }
                }
            };
            let sign = match (sign_key, sign_cert) {
                (Some(k), Some(c)) => Some((k, c)),
                (None, None) => None,
                _ => {
                    eprintln!("ferry-image: signing needs both --sign-key and --sign-cert");
                    return ExitCode::from(2);
                }
            };
            let opts = Options {
                source,
                efi_stub,
                gptmbr,
                binaries,
                out,
                cache,
                sign,
            };
            match appliance::build(&m, &opts) {
                Ok(b) => {
                    println!(
                        "built {} in {:.1} s",
                        b.raw.display(),
                        t.elapsed().as_secs_f64()
                    );
                    println!(
                        "  root: erofs {} bytes, sha256 {}",
                        b.root_bytes, b.root_sha256
                    );
                    println!("  dm-verity root hash {}", b.roothash);
                    println!("  kernel command line: {}", b.cmdline);
                    println!("  report: {}", b.report.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferry-image: build failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            eprintln!("ferry-image: unknown command {other}");
            ExitCode::from(2)
        }
    }
}
