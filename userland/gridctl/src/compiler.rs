//! Asking a compile service (`gridos-compiler`) for attested native code:
//! `gridctl deploy --compiler KEY@HOST:PORT` (or `$GRIDOS_COMPILER`).
//!
//! KEY is the service's public key, which is both its overlay identity and the key that
//! attests its bundles; HOST:PORT its underlay UDP endpoint. The client links to it over
//! the overlay with a fresh identity, sends the module and the node engine's fingerprint
//! (`control::compile`), and checks the answer with `workloads::artifact::verify` against
//! KEY before attaching it to a deploy, so a wrong or broken service is a clear error here
//! rather than a refusal by the node. Every wait is bounded by the timeout.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::compile::{self, CompileRequest, CompileResponse, COMPILE_PORT};
use overlay::node::Config;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};
use workloads::artifact;

use hostnet::Stack;
use crate::target::Target;
use crate::{bail, hex, parse_hex, Context, Error, Result};

/// Environment variable naming the compile service.
pub const COMPILER_ENV: &str = "GRIDOS_COMPILER";
const POLL_SLICE: Duration = Duration::from_millis(20);

/// Parses `KEY@HOST:PORT` of a compile service (KEY: the `compiler key` it prints).
pub fn parse_compiler(s: &str) -> Result<Target> {
    let s = s.trim();
    let Some((key_hex, _)) = s.split_once('@') else {
        bail!("compile service {s:?} is not KEY@HOST:PORT (KEY: the 64 hex digits gridos-compiler prints as `compiler key`)");
    };
    if parse_hex::<32>(key_hex).is_none() {
        bail!("compile service key {key_hex:?} is not 64 hex digits (gridos-compiler prints it as `compiler key`)");
    }
    Target::parse(s).map_err(|e| Error(format!("compile service {s:?}: {e}")))
}

/// Compiles `wasm` at the service `compiler` for this gridos version's native engine and
/// returns the bundle, verified to be attested by the service's key for this module.
pub fn compile(compiler: &Target, wasm: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    let engine = artifact::engine_fingerprint();
    if wasm.len() > compile::COMPILE_MODULE_MAX_BYTES {
        bail!(
            "the module has {} bytes; compile services take at most {} (deploy without --compiler to run it in the node's interpreter)",
            wasm.len(),
            compile::COMPILE_MODULE_MAX_BYTES
        );
    }
    let request = CompileRequest { module: wasm.to_vec(), engine };
    let bundle = match exchange(compiler, &compile::request_frame(&request), timeout)? {
        CompileResponse::Compiled { bundle } => bundle,
        CompileResponse::Refused { reason } => bail!("the compile service refused: {reason}"),
    };
    let module = blake3::hash(wasm);
    artifact::verify(&bundle, module.as_bytes(), &engine, &[compiler.key])
        .map_err(|e| Error(format!("the compile service's answer does not check out: {e}")))?;
    Ok(bundle)
}

/// Links to the service, sends `frame` (normally [`compile::request_frame`]), and reads
/// one response; errors name what failed (link, connection, silence, a bad answer).
pub fn exchange(compiler: &Target, frame: &[u8], timeout: Duration) -> Result<CompileResponse> {
    let bind: SocketAddr = if compiler.endpoint.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| Error("bad bind address".into()))?;
    let socket = UdpSocket::bind(bind).context(|| "cannot open a UDP socket".into())?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context(|| "no randomness from the operating system".into())?;
    let config = Config { accept_unknown_peers: false, ..Config::default() };
    let mut stack = Stack::new(seed, socket, config).context(|| "cannot start the overlay".into())?;
    match stack.add_peer(compiler.endpoint, compiler.key) {
        Ok(()) => {}
        Err(e) => bail!("cannot add the compile service as an overlay peer: {e:?}"),
    }
    let address = overlay::Address(compiler.overlay_address());
    let deadline = Instant::now() + timeout;
    while !stack.has_route(&address) {
        if Instant::now() >= deadline {
            bail!(
                "no overlay link to the compile service {}.. at {} within {} s: is `gridos-compiler` running there \
                 and UDP port {} reachable?",
                hex(&compiler.key[..8]),
                compiler.endpoint,
                timeout.as_secs(),
                compiler.endpoint.port()
            );
        }
        stack.poll(POLL_SLICE).context(|| "overlay socket".into())?;
    }
    let tcp = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 256 << 10]), tcp::SocketBuffer::new(vec![0; 256 << 10]));
    let handle = stack.sockets.add(tcp);
    let remote = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from_octets(address.0)), COMPILE_PORT);
    let mut port_bytes = [0u8; 2];
    getrandom::fill(&mut port_bytes).context(|| "no randomness".into())?;
    let local_port = 49152 + u16::from_le_bytes(port_bytes) % 16384;
    {
        let s = stack.sockets.get_mut::<tcp::Socket>(handle);
        s.set_nagle_enabled(false);
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(timeout.as_secs().max(1))));
        s.connect(stack.iface.context(), remote, local_port).map_err(|e| Error(format!("cannot connect: {e}")))?;
    }
    let mut decoder = compile::response_decoder();
    let mut written = 0usize;
    let mut last_progress = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let result = loop {
        stack.poll(POLL_SLICE).context(|| "overlay socket".into())?;
        let s = stack.sockets.get_mut::<tcp::Socket>(handle);
        let mut moved = false;
        if written < frame.len() && s.can_send() {
            let n = s.send_slice(&frame[written..]).unwrap_or(0);
            written += n;
            moved |= n > 0;
        }
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            moved = true;
            decoder.push(&buf[..n]).map_err(|e| Error(format!("bad answer from the compile service: {e}")))?;
        }
        match decoder.pop() {
            Ok(Some(body)) => {
                break compile::decode_response(&body).map_err(|e| Error(format!("bad answer from the compile service: {e}")))
            }
            Ok(None) => {}
            Err(e) => break Err(Error(format!("bad answer from the compile service: {e}"))),
        }
        match s.state() {
            tcp::State::Closed if written == 0 => {
                break Err(Error(format!("cannot connect to the compile service on overlay TCP port {COMPILE_PORT}")))
            }
            tcp::State::Closed | tcp::State::CloseWait | tcp::State::LastAck | tcp::State::TimeWait | tcp::State::Closing
                if !s.can_recv() =>
            {
                break Err(Error("the compile service closed the connection without answering".into()))
            }
            _ => {}
        }
        if moved {
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= timeout {
            break Err(Error(format!("no answer from the compile service for {} s", timeout.as_secs())));
        }
    };
    let s = stack.sockets.get_mut::<tcp::Socket>(handle);
    s.close();
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until && stack.sockets.get::<tcp::Socket>(handle).is_open() {
        let _ = stack.poll(POLL_SLICE);
    }
    result
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn compile_service_addresses_are_checked() {
        let key = "ab".repeat(32);
        let t = parse_compiler(&format!("{key}@127.0.0.1:7444")).unwrap();
        assert_eq!(t.endpoint.port(), 7444);
        for (bad, says) in [
            ("127.0.0.1:7444".to_string(), "is not KEY@HOST:PORT"),
            ("abc@127.0.0.1:7444".to_string(), "is not 64 hex digits"),
            (format!("{key}@127.0.0.1:0"), "compile service"),
        ] {
            let e = parse_compiler(&bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn compiler_and_bundle_do_not_go_together() {
        let key = "ab".repeat(32);
        let node = format!("{key}@127.0.0.1:7443");
        let compiler = format!("{key}@127.0.0.1:7444");
        let argv = ["gridctl", "deploy", "--node", &node, "--compiler", &compiler, "--bundle", "x.bundle", "x.wasm"];
        assert!(Cli::try_parse_from(argv).is_err());
        let argv = ["gridctl", "deploy", "--node", &node, "--compiler", &compiler, "x.wasm"];
        assert!(Cli::try_parse_from(argv).is_ok());
    }
}
