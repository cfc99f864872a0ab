//! The compile service over a real overlay on loopback UDP, in-process: gridctl's client
//! gets hello.wasm compiled and the bundle verifies against the service's key; wrong
//! engines, garbage, oversize frames, idle and surplus connections are refused or cut off
//! within the service's bounds, and the service keeps serving afterwards.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use compiler::service::{self, Options, Running};
use control::compile::{self, CompileRequest, CompileResponse, COMPILE_PORT};
use hostnet::Stack;
use gridctl::target::Target;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};
use workloads::artifact;
use workloads::ed25519_compact::{KeyPair, Seed};

const TIMEOUT: Duration = Duration::from_secs(20);

fn hello() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wasm/out/hello.wasm")).unwrap()
}

fn start(seed: u8, options: Options) -> (Running, Target) {
    let key = KeyPair::from_seed(Seed::new([seed; 32]));
    let running = service::spawn(&key, UdpSocket::bind("127.0.0.1:0").unwrap(), options).unwrap();
    let target = Target::parse(&running.address()).unwrap();
    (running, target)
}

#[test]
fn hello_is_compiled_and_attested_by_the_service_key() {
    let (running, target) = start(0x31, Options::default());
    let wasm = hello();
    let bundle = gridctl::compiler::compile(&target, &wasm, TIMEOUT).unwrap();
    let a = artifact::verify(&bundle, blake3::hash(&wasm).as_bytes(), &artifact::engine_fingerprint(), &[running.key]).unwrap();
    assert_eq!(a.compiler_key, running.key);
    // The same code the host tool makes (compilation is deterministic).
    assert_eq!(a.code, wasm_precompile::compile(&wasm).unwrap());
    // Another key does not verify it.
    let other = *KeyPair::from_seed(Seed::new([0x32; 32])).pk;
    assert_eq!(
        artifact::verify(&bundle, blake3::hash(&wasm).as_bytes(), &artifact::engine_fingerprint(), &[other]).unwrap_err(),
        artifact::ArtifactError::UntrustedCompiler
    );
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let (_running, target) = start(0x33, Options::default());
    let ask = |frame: Vec<u8>| gridctl::compiler::exchange(&target, &frame, TIMEOUT).unwrap();
    let refused = |r: CompileResponse| match r {
        CompileResponse::Refused { reason } => reason,
        other => panic!("not refused: {other:?}"),
    };
    let r = ask(compile::request_frame(&CompileRequest { module: hello(), engine: [9; 32] }));
    assert!(refused(r).starts_with("this service compiles for engine"));
    let r = ask(compile::request_frame(&CompileRequest { module: b"\0asm junk".to_vec(), engine: artifact::engine_fingerprint() }));
    assert!(refused(r).starts_with("cannot compile the module:"));
    let r = ask(control::frame::encode(b"\x01\x02\x03"));
    assert_eq!(refused(r), "bad request: malformed message");
    // A header announcing more than a request may hold is refused before its body.
    let r = ask((compile::COMPILE_REQUEST_MAX_BYTES as u32 + 1).to_le_bytes().to_vec());
    assert!(refused(r).starts_with("bad request: bad framing"));
    // And gridctl's client says so plainly.
    let e = gridctl::compiler::compile(&target, &vec![0; compile::COMPILE_MODULE_MAX_BYTES + 1], TIMEOUT).unwrap_err();
    assert!(e.0.contains("compile services take at most"), "{e}");
    // Still serving.
    gridctl::compiler::compile(&target, &hello(), TIMEOUT).unwrap();
}

/// A raw overlay client with `n` TCP connections to the service.
struct Raw {
    stack: Stack,
    conns: Vec<SocketHandle>,
}

impl Raw {
    fn connect(target: &Target, n: usize) -> Raw {
        let config = overlay::Config { accept_unknown_peers: false, ..overlay::Config::default() };
        let mut stack = Stack::new([0x77; 32], UdpSocket::bind("127.0.0.1:0").unwrap(), config).unwrap();
        stack.add_peer(target.endpoint, target.key).unwrap();
        let address = overlay::Address(target.overlay_address());
        let deadline = Instant::now() + TIMEOUT;
        while !stack.has_route(&address) {
            assert!(Instant::now() < deadline, "no link");
            stack.poll(Duration::from_millis(10)).unwrap();
        }
        let remote = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from_octets(address.0)), COMPILE_PORT);
        let conns = (0..n)
            .map(|i| {
                let s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4096]), tcp::SocketBuffer::new(vec![0; 4096]));
                let h = stack.sockets.add(s);
                stack.sockets.get_mut::<tcp::Socket>(h).connect(stack.iface.context(), remote, 50000 + i as u16).unwrap();
                h
            })
            .collect();
        Raw { stack, conns }
    }

    fn states(&mut self, for_: Duration) -> Vec<tcp::State> {
        let until = Instant::now() + for_;
        while Instant::now() < until {
            self.stack.poll(Duration::from_millis(10)).unwrap();
        }
        self.conns.iter().map(|h| self.stack.sockets.get::<tcp::Socket>(*h).state()).collect()
    }
}

#[test]
fn connections_and_time_are_bounded() {
    // Idle connections are cut after 3 s; compiling (slow in a debug build on a busy
    // machine) is not what this test bounds.
    let options = Options {
        connections_max: 2,
        queue_max: 1,
        request_time: Duration::from_secs(3),
        compile_time: Duration::from_secs(300),
        verbose: true,
    };
    let (_running, target) = start(0x34, options);
    // Three idle connections: two are taken, the third finds no listener.
    let mut raw = Raw::connect(&target, 3);
    let states = raw.states(Duration::from_secs(1));
    let established = states.iter().filter(|s| **s == tcp::State::Established).count();
    assert_eq!(established, 2, "{states:?}");
    // While both slots are held, a real request cannot get in.
    let e = gridctl::compiler::compile(&target, &hello(), Duration::from_secs(2)).unwrap_err();
    assert!(e.0.contains("compile service"), "{e}");
    // The idle connections are cut after the request time ...
    let states = raw.states(Duration::from_secs(4));
    assert!(states.iter().all(|s| *s != tcp::State::Established), "{states:?}");
    // ... and the service serves again.
    gridctl::compiler::compile(&target, &hello(), TIMEOUT).unwrap();
}

#[test]
fn an_unreachable_service_is_a_clear_error() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let key = KeyPair::from_seed(Seed::new([0x35; 32]));
    let target = Target { key: *key.pk, endpoint: silent.local_addr().unwrap() };
    let e = gridctl::compiler::compile(&target, &hello(), Duration::from_secs(1)).unwrap_err();
    assert!(e.0.contains("no overlay link to the compile service"), "{e}");
}
