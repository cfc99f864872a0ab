//! Network services for tests and measurements, enabled with
//! `gridos.services=echo` (UDP and TCP echo on port 7, TCP discard on 9 that
//! answers the byte count, TCP source on 19), and an echo client enabled with
//! `gridos.echo_client=ADDR:PORT` that checks a peer echoes data intact.
//!
//! Nothing here listens unless the command line asks for it.

use alloc::vec;

use smoltcp::wire::IpEndpoint;

use crate::cmdline::Cmdline;
use crate::executor;
use crate::net::socket::{NetError, TcpListener, TcpStream, UdpSocket};
use crate::net::Network;
use crate::power;

/// Starts the services the command line asks for, on each of `networks`.
pub fn start(cmdline: &Cmdline<'_>, networks: &[Network]) {
    if let Some(list) = cmdline.get("gridos.services") {
        for name in list.split(',') {
            match name {
                "echo" => {
                    for &network in networks {
                        executor::spawn("udp-echo", udp_echo(network, 7));
                        executor::spawn("tcp-echo", serve_tcp(network, 7, Service::Echo));
                        executor::spawn("tcp-discard", serve_tcp(network, 9, Service::Discard));
                        executor::spawn("tcp-source", serve_tcp(network, 19, Service::Source));
                    }
                    log::info!("services: echo (udp+tcp 7), discard (tcp 9), source (tcp 19) on {networks:?}");
                }
                other => log::warn!("services: unknown service {other:?}"),
            }
        }
    }
    if let Some(target) = cmdline.get("gridos.echo_client") {
        let total_bytes = cmdline.get_u64("gridos.echo_bytes").unwrap_or(1 << 20) as usize;
        match target.parse::<IpEndpoint>() {
            Ok(remote) => executor::spawn("echo-client", echo_client(remote, total_bytes, power::test_mode())),
            Err(()) => log::warn!("gridos.echo_client={target:?} is not an address:port"),
        }
    }
}

async fn udp_echo(network: Network, port: u16) {
    let mut socket = match UdpSocket::bind(network, port) {
        Ok(s) => s,
        Err(e) => return log::warn!("udp echo: cannot bind port {port}: {e:?}"),
    };
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if let Err(e) = socket.send_to(&buf[..n], from).await {
                    log::debug!("udp echo: reply to {from} failed: {e:?}");
                }
            }
            Err(e) => return log::warn!("udp echo: {e:?}"),
        }
    }
}

#[derive(Clone, Copy)]
enum Service {
    Echo,
    Discard,
    Source,
}

async fn serve_tcp(network: Network, port: u16, service: Service) {
    let mut listener = match TcpListener::bind(network, port) {
        Ok(l) => l,
        Err(e) => return log::warn!("tcp {port}: cannot listen: {e:?}"),
    };
    loop {
        match listener.accept().await {
            Ok(stream) => executor::spawn("tcp-conn", async move {
                let result = match service {
                    Service::Echo => echo(stream).await,
                    Service::Discard => discard(stream).await,
                    Service::Source => source(stream).await,
                };
                if let Err(e) = result {
                    log::debug!("tcp {port}: connection ended: {e:?}");
                }
            }),
            Err(e) => {
                log::warn!("tcp {port}: accept failed: {e:?}");
                executor::sleep_ms(100).await;
            }
        }
    }
}

async fn echo(mut stream: TcpStream) -> Result<(), NetError> {
    let mut buf = vec![0u8; 32 * 1024];
    let before = crate::net::timing::snapshot();
    let mut total: u64 = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            stream.shutdown();
            // Where this node's time went while it echoed (see `net::timing`).
            for line in crate::net::timing::report(&before, total).lines() {
                log::info!("echo server: {line}");
            }
            return Ok(());
        }
        total += n as u64;
        stream.write_all(&buf[..n]).await?;
    }
}

async fn discard(mut stream: TcpStream) -> Result<(), NetError> {
    let mut buf = vec![0u8; 64 * 1024];
    let start = executor::now_ns();
    let mut total: u64 = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let us = (executor::now_ns() - start) / 1000;
    log::info!("discard: received {total} bytes in {us} us");
    stream.write_all(&total.to_be_bytes()).await?;
    stream.shutdown();
    Ok(())
}

/// The byte at stream offset `i` of the source service.
pub fn source_byte(i: u64) -> u8 {
    (i % 251) as u8
}

async fn source(mut stream: TcpStream) -> Result<(), NetError> {
    // A whole number of pattern periods, so the same buffer continues the stream.
    let buf: alloc::vec::Vec<u8> = (0..251 * 256).map(source_byte).collect();
    loop {
        stream.write_all(&buf).await?;
    }
}

/// Connects to `remote` (retrying while the peer boots), sends `total_bytes` and checks the echo.
/// `addr:port`, with IPv6 addresses in brackets.
struct Endpoint(IpEndpoint);

impl core::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0.addr {
            smoltcp::wire::IpAddress::Ipv6(a) => write!(f, "[{a}]:{}", self.0.port),
            smoltcp::wire::IpAddress::Ipv4(a) => write!(f, "{a}:{}", self.0.port),
        }
    }
}

async fn echo_client(remote: IpEndpoint, total_bytes: usize, exit_when_done: bool) {
    let result = echo_client_run(remote, total_bytes).await;
    let remote = Endpoint(remote);
    match &result {
        Ok((bytes, us)) => log::info!("echo client: {bytes} bytes echoed intact by {remote} in {us} us"),
        Err(reason) => log::error!("echo client: {remote}: {reason}"),
    }
    if exit_when_done {
        crate::kprintln!("gridos test echo-client: {}", if result.is_ok() { "pass" } else { "FAIL" });
        power::exit_qemu(if result.is_ok() { power::EXIT_SUCCESS_VALUE } else { power::EXIT_FAILURE_VALUE });
    }
}

async fn echo_client_run(remote: IpEndpoint, total_bytes: usize) -> Result<(usize, u64), &'static str> {
    const CHUNK_BYTES: usize = 16 * 1024;
    let total_bytes = total_bytes.div_ceil(CHUNK_BYTES) * CHUNK_BYTES;
    let deadline = executor::now_ns() + 120_000_000_000;
    let mut stream = loop {
        match TcpStream::connect(remote).await {
            Ok(s) => break s,
            Err(_) if executor::now_ns() < deadline => executor::sleep_ms(500).await,
            Err(_) => return Err("could not connect within 120 s"),
        }
    };
    log::info!("echo client: connected to {}", Endpoint(remote));
    let before = crate::net::timing::snapshot();
    let start = executor::now_ns();
    let mut out = vec![0u8; CHUNK_BYTES];
    let mut back = vec![0u8; CHUNK_BYTES];
    for chunk in 0..total_bytes / CHUNK_BYTES {
        for (i, b) in out.iter_mut().enumerate() {
            *b = source_byte((chunk * CHUNK_BYTES + i) as u64);
        }
        stream.write_all(&out).await.map_err(|_| "write failed")?;
        let mut got = 0;
        while got < CHUNK_BYTES {
            let Some(read) = executor::timeout(20_000, stream.read(&mut back[got..])).await else {
                // No progress for 20 s: say where things stand, then keep waiting.
                log::warn!(
                    "echo client: no data for 20 s at byte {}; {}; overlay {:?}",
                    chunk * CHUNK_BYTES + got,
                    crate::net::diagnostics(),
                    *crate::overlay::STATS.lock()
                );
                continue;
            };
            let n = read.map_err(|_| "read failed")?;
            if n == 0 {
                return Err("peer closed early");
            }
            got += n;
        }
        if back != out {
            return Err("echoed bytes differ");
        }
    }
    let took_us = (executor::now_ns() - start) / 1000;
    // Where the time went (this node's share of it; the echo server prints its own).
    for line in crate::net::timing::report(&before, total_bytes as u64).lines() {
        log::info!("{line}");
    }
    log::info!("{}", crate::overlay::seal_bench());
    // A clean close: send our FIN, then wait (briefly) for the peer's, so a server that
    // echoes until end of stream sees it before this node goes away.
    stream.shutdown();
    let mut tail = [0u8; 256];
    let _ = executor::timeout(5_000, async {
        while let Ok(n) = stream.read(&mut tail).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok((total_bytes, took_us))
}
