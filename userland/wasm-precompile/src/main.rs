//! `wasm-precompile bundle FILE.wasm...`: writes FILE.bundle beside each module
//! (native x86-64 + Pulley code for the gridos kernel, bound to the module hash).
//! `wasm-precompile run FILE.wasm [ARGS...]`: runs a module on the host (native).
//! `wasm-precompile bench FILE.wasm [ARGS...]`: times `_start` on the host from the
//! committed bundle's native code, the same machine code the kernel runs.

use std::process::ExitCode;

use workloads::artifact::{self, Backend};
use workloads::manifest::Limits;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bundle") => bundle(&args[1..]),
        Some("run") => run(&args[1..], false),
        Some("bench") => run(&args[1..], true),
        _ => Err("usage: wasm-precompile bundle FILE.wasm... | run FILE.wasm [ARGS...] | bench FILE.wasm [ARGS...]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-precompile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bundle(files: &[String]) -> Result<(), String> {
    for f in files {
        let wasm = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
        let b = wasm_precompile::bundle(&wasm).map_err(|e| format!("{f}: {e}"))?;
        let out = format!("{}.bundle", f.trim_end_matches(".wasm"));
        std::fs::write(&out, &b).map_err(|e| format!("{out}: {e}"))?;
        println!("{out}: {} bytes", b.len());
    }
    Ok(())
}

fn run(args: &[String], bench: bool) -> Result<(), String> {
    let file = args.first().ok_or("no module given")?;
    let wasm = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let bundle_bytes = std::fs::read(format!("{}.bundle", file.trim_end_matches(".wasm"))).ok();
    let bundle = bundle_bytes.as_deref().map(|b| artifact::parse(b, Some(blake3::hash(&wasm).as_bytes())));
    let code = match &bundle {
        Some(Ok(b)) => b.sections.iter().find(|(k, _)| *k == Backend::NativeX86_64).map(|(_, c)| *c),
        _ => None,
    };
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let limits = Limits { memory_bytes: 256 << 20, ..Limits::default() };
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, code, &argv, &[], &limits)?;
    for (_, line) in &r.lines {
        println!("{line}");
    }
    println!("host: {} ({})", r.reason, if code.is_some() { "precompiled bundle" } else { "compiled now" });
    if bench {
        println!("host bench: instantiate {} us, run {} us", r.instantiate.as_micros(), r.run.as_micros());
    }
    Ok(())
}
