// SPDX-License-Identifier: MIT
//! `ferry-ovf`: builds the OVA from the raw appliance image.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferry_ovf::descriptor::Product;

/// Builds the Ferry OVA (streamOptimized VMDK, OVF 1.0 descriptor, SHA-256
/// manifest) from the raw appliance image.
#[derive(Parser)]
struct Args {
    /// The raw disk image (out/ferry.raw).
    #[arg(long)]
    image: PathBuf,
    /// The OVA to write (out/ferry.ova).
    #[arg(long)]
    out: PathBuf,
    /// Directory for the members before packing (default: next to --out).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Product version in the descriptor.
    #[arg(long)]
    version: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let work = args
        .work
        .unwrap_or_else(|| args.out.with_extension("ova.d"));
    let mut product = Product::default();
    if let Some(v) = args.version {
        product.version = v;
    }
    match ferry_ovf::ova::build(&args.image, &args.out, &work, "ferry", &product) {
        Ok(built) => {
            println!(
                "ferry-ovf: {} ({} grains, VMDK {} bytes for a {} GiB disk)",
                built.ova.display(),
                built.vmdk.grains,
                built.vmdk.file_size,
                built.vmdk.capacity >> 30
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry-ovf: {e}");
            ExitCode::FAILURE
        }
    }
}
