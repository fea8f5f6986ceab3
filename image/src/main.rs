//! `ferry-image`: the offline image builder's command line.
//!
//! ```text
//! ferry-image build [--manifest image/manifest.toml] [--binaries DIR] [--out out] [--cache DIR]
//!                   [--sign-key KEY.pem --sign-cert CERT.pem]
//! ferry-image cargo-args [--manifest image/manifest.toml]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ferry_image::appliance::{self, Options};
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
    let Some(cmd) = args.first().cloned() else {
        eprintln!("usage: ferry-image build|cargo-args [--manifest F] [--binaries DIR] [--out DIR] [--cache DIR]");
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
        "build" => {
            let t = Instant::now();
            let sign = match (sign_key, sign_cert) {
                (Some(k), Some(c)) => Some((k, c)),
                (None, None) => None,
                _ => {
                    eprintln!("ferry-image: signing needs both --sign-key and --sign-cert");
                    return ExitCode::from(2);
                }
            };
            let opts = Options {
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
