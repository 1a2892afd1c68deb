//! `sallyport connect ADDRESS...`: join standard input and output to the first edge that
//! answers. `sallyport login` writes it as the jump hop's `ProxyCommand` when the broker names
//! more than one edge, so that an edge down moves new sessions to another; ssh then speaks SSH
//! through it as through a socket (the edge's host key is checked by ssh, as always).
//!
//! The edges are tried starting at a random one (engineers spread over the edges) and then in
//! the order given; each address a name resolves to gets `--connect-timeout` to accept.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// The edges' `host:port`, tried in turn from a random one until one accepts.
    #[arg(required = true, value_name = "ADDRESS")]
    pub addresses: Vec<String>,
    /// How long each edge has to accept the connection, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Try the edges in the order given instead of from a random one.
    #[arg(long)]
    pub in_order: bool,
}

pub fn run(a: ConnectArgs) -> anyhow::Result<i32> {
    let start = match a.in_order {
        true => 0,
        false => usize::from(rand::random::<u16>()) % a.addresses.len(),
    };
    let mut failures = Vec::new();
    for i in 0..a.addresses.len() {
        let address = &a.addresses[(start + i) % a.addresses.len()];
        match dial(address, a.connect_timeout) {
            Ok(stream) => {
                pipe(stream).context("cannot use the connection to the edge")?;
                // Not back through main's runtime shutdown: the thread copying standard input
                // may still be blocked reading it.
                std::process::exit(0);
            }
            Err(e) => failures.push(format!("{address}: {e}")),
        }
    }
    bail!(
        "no edge answered ({}); try again shortly, or ask your operator whether the edges are up",
        failures.join("; ")
    )
}

/// The first of the addresses `address` resolves to that accepts within `timeout`.
fn dial(address: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("the name resolves to no address");
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = std::io::Error::other(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                ))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Copy standard input to the edge (in a thread) and the edge to standard output, until the
/// edge closes: the session is over then, whatever ssh still has to say.
fn pipe(stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut to_edge = stream.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_edge);
        let _ = to_edge.shutdown(Shutdown::Write);
    });
    let mut from_edge = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from_edge.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}
