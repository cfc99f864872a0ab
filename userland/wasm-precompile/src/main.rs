//! `wasm-precompile bundle --key KEYFILE FILE.wasm...`: writes FILE.bundle beside each
//! module: native x86-64 code for the gridos kernel, attested (signed) by the compiler
//! key in KEYFILE (64 hex digits of an ed25519 seed). Reproducible: the same module and
//! key give the same bundle.
//! `wasm-precompile key KEYFILE`: prints the public key of a compiler key file.
//! `wasm-precompile run [--trust PUBKEY] FILE.wasm [ARGS...]`: runs a module on the host
//! (native); with `--trust`, from FILE.bundle's code after verifying it against PUBKEY
//! (64 hex digits), else compiled now.
//! `wasm-precompile bench [--trust PUBKEY] FILE.wasm [ARGS...]`: the same, and prints times.

use std::path::Path;
use std::process::ExitCode;

use workloads::artifact::{self, Backend};
use workloads::manifest::Limits;

const USAGE: &str = "usage: wasm-precompile bundle --key KEYFILE FILE.wasm... | key KEYFILE | \
run [--trust PUBKEY] FILE.wasm [ARGS...] | bench [--trust PUBKEY] FILE.wasm [ARGS...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        #[cfg(feature = "compiler")]
        Some("bundle") => bundle(&args[1..]),
        Some("key") => key(&args[1..]),
        Some("run") => run(&args[1..], false),
        Some("bench") => run(&args[1..], true),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-precompile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(feature = "compiler")]
fn bundle(args: &[String]) -> Result<(), String> {
    let (Some("--key"), Some(key_file)) = (args.first().map(String::as_str), args.get(1)) else {
        return Err(format!("bundle needs --key KEYFILE first\n{USAGE}"));
    };
    let key = wasm_precompile::load_key(Path::new(key_file)).map_err(|e| format!("{key_file}: {e}"))?;
    for f in &args[2..] {
        let wasm = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
        let b = wasm_precompile::bundle(&wasm, &key).map_err(|e| format!("{f}: {e}"))?;
        let out = format!("{}.bundle", f.trim_end_matches(".wasm"));
        std::fs::write(&out, &b).map_err(|e| format!("{out}: {e}"))?;
        println!("{out}: {} bytes, attested by {}", b.len(), hex(key.pk.as_ref()));
    }
    Ok(())
}

fn key(args: &[String]) -> Result<(), String> {
    let file = args.first().ok_or(USAGE)?;
    let key = wasm_precompile::load_key(Path::new(file)).map_err(|e| format!("{file}: {e}"))?;
    println!("{}", hex(key.pk.as_ref()));
    Ok(())
}

fn parse_pubkey(s: &str) -> Result<[u8; 32], String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| format!("--trust {s:?} is not 64 hex digits"))
}

fn run(args: &[String], bench: bool) -> Result<(), String> {
    let (trusted, args) = match args.first().map(String::as_str) {
        Some("--trust") => (Some(parse_pubkey(args.get(1).ok_or(USAGE)?)?), &args[2..]),
        _ => (None, args),
    };
    let file = args.first().ok_or("no module given")?;
    let wasm = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let bundle_file = format!("{}.bundle", file.trim_end_matches(".wasm"));
    let bundle_bytes = match trusted {
        Some(_) => Some(std::fs::read(&bundle_file).map_err(|e| format!("{bundle_file}: {e}"))?),
        None => None,
    };
    let code = match (&bundle_bytes, trusted) {
        (Some(b), Some(key)) => Some(
            artifact::verify(b, blake3::hash(&wasm).as_bytes(), &artifact::engine_fingerprint(), &[key])
                .map_err(|e| format!("{bundle_file}: {e}"))?
                .code,
        ),
        _ => None,
    };
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let limits = Limits { memory_bytes: 256 << 20, ..Limits::default() };
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, code, &argv, &[], &limits)?;
    for (_, line) in &r.lines {
        println!("{line}");
    }
    println!("host: {} ({})", r.reason, if code.is_some() { "attested bundle" } else { "compiled now" });
    if bench {
        println!("host bench: instantiate {} us, run {} us", r.instantiate.as_micros(), r.run.as_micros());
    }
    Ok(())
}
