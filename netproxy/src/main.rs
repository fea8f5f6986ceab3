// SPDX-License-Identifier: MIT
//! `ferry-netproxy --listen ADDR --upstream ADDR --delay-ms N [--rate-mbit N]
//! [--queue-mib N]`: the WAN benchmark's link between two processes on one
//! machine (the host kernel has no netem).

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use ferry_netproxy::{Buffers, Faults, Proxy};

const USAGE: &str = "usage: ferry-netproxy --listen ADDR --upstream ADDR --delay-ms N [--rate-mbit N] [--queue-mib N]
  --listen ADDR     where to listen (127.0.0.1:0 picks a free port)
  --upstream ADDR   where to forward each connection
  --delay-ms N      added to everything, each way (one-way delay; a round trip gets 2N)
  --rate-mbit N     cap each direction at N Mbit/s, shared by all connections
  --queue-mib N     bytes in flight per connection and direction (default 32):
                    one connection carries at most N MiB per delay
Prints `listening on ADDR` when ready; runs until killed.";

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    delay_ms: u64,
    rate_mbit: Option<f64>,
    queue_mib: usize,
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut listen, mut upstream, mut delay_ms, mut rate_mbit, mut queue_mib) =
        (None, None, None, None, 32usize);
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr(&value)?),
            "--upstream" => upstream = Some(addr(&value)?),
            "--delay-ms" => delay_ms = Some(number(&value)? as u64),
            "--rate-mbit" => rate_mbit = Some(number(&value)?),
            "--queue-mib" => queue_mib = number(&value)?.max(1.0) as usize,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
        delay_ms: delay_ms.ok_or("--delay-ms is required")?,
        rate_mbit,
        queue_mib,
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ferry-netproxy: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let faults = Faults {
        delay: Duration::from_millis(args.delay_ms),
        bytes_per_second: args.rate_mbit.map(|m| (m * 1e6 / 8.0) as u64),
        ..Faults::default()
    };
    // Large reads: one thread per direction must keep up with loopback.
    let buffers = Buffers {
        read: 256 << 10,
        queue: args.queue_mib << 20,
    };
    let proxy = match Proxy::bind(args.listen, args.upstream, faults, buffers) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferry-netproxy: listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", proxy.addr);
    loop {
        std::thread::park();
    }
}
