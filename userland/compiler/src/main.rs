//! `gridos-compiler --key FILE --listen UDPADDR`: the compile service (see the library).
//! Makes the key file on first run, prints its public key and overlay address, and serves
//! on overlay TCP port 7071 until killed.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use compiler::{hex, key, service};

const USAGE: &str = "usage: gridos-compiler --key FILE --listen UDPADDR (e.g. 0.0.0.0:7444) [--quiet]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridos-compiler: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut key_file: Option<PathBuf> = None;
    let mut listen: Option<String> = None;
    let mut options = service::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--key" => key_file = Some(args.next().ok_or(USAGE)?.into()),
            "--listen" => listen = Some(args.next().ok_or(USAGE)?),
            "--quiet" => options.verbose = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (Some(key_file), Some(listen)) = (key_file, listen) else { return Err(USAGE.into()) };
    let (key, made) = key::load_or_create(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let socket = UdpSocket::bind(&listen).map_err(|e| format!("cannot listen on UDP {listen}: {e}"))?;
    let endpoint = socket.local_addr().map_err(|e| e.to_string())?;
    let mut service = service::Service::new(&key, socket, options).map_err(|e| e.to_string())?;
    if made {
        println!("new key in {}", key_file.display());
    }
    let address = std::net::Ipv6Addr::from(service.stack().address().0);
    println!("compiler key     {}", hex(key.pk.as_ref()));
    println!("overlay address  {address} (TCP port {})", control::compile::COMPILE_PORT);
    println!("underlay         udp {endpoint}");
    println!("engine           {}", hex(&workloads::artifact::engine_fingerprint()));
    println!("nodes trust it with gridos.compilers={}", hex(key.pk.as_ref()));
    println!("use it with      gridctl deploy --compiler {}@HOST:{} ...", hex(key.pk.as_ref()), endpoint.port());
    service.run(&AtomicBool::new(false)).map_err(|e| e.to_string())
}
