//! The gridos compile service (`gridos-compiler`): compiles wasm modules to native x86-64
//! code for the nodes' engine with wasmtime and Cranelift (`wasm_precompile`, settings
//! from `workloads::runtime::base_config`) and attests each result with its ed25519 key
//! (`workloads::artifact::attest`). A node runs native code only when it trusts the key
//! that attested it (`gridos.compilers`); everything else runs in the node's interpreter.
//!
//! - [`key`]: the service's key file (made on first run), which is also its overlay identity,
//!   so clients that reach it over the overlay know which key must sign their bundles;
//! - [`compile_request`]: one request to one answer, no I/O;
//! - [`service`]: the overlay stack (`gridctl::stack`), up to [`service::Options::connections_max`]
//!   connections on overlay TCP [`control::compile::COMPILE_PORT`], a bounded queue in front
//!   of one compile thread, and a time limit per connection.
//!
//! The wire protocol is [`control::compile`]; the client is `gridctl::compiler`.

pub mod key;
pub mod service;

use control::compile::{CompileRequest, CompileResponse, COMPILE_MODULE_MAX_BYTES};
use workloads::artifact;
use workloads::ed25519_compact::KeyPair;

/// Largest bundle the service returns (it must fit one response frame).
pub const BUNDLE_MAX_BYTES: usize = control::MAX_FRAME_BYTES - 64;

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a request is refused before any compiling, if it is.
pub fn precheck(request: &CompileRequest) -> Option<String> {
    let ours = artifact::engine_fingerprint();
    if request.engine != ours {
        return Some(format!(
            "this service compiles for engine {} and the request is for engine {}: the node runs a different \
             gridos version; use a compile service of the same version",
            hex(&ours[..8]),
            hex(&request.engine[..8])
        ));
    }
    if request.module.len() > COMPILE_MODULE_MAX_BYTES {
        return Some(format!(
            "the module has {} bytes; this service compiles modules of at most {COMPILE_MODULE_MAX_BYTES} bytes",
            request.module.len()
        ));
    }
    None
}

/// Compiles `request` and attests the code with `key`, or says why not.
pub fn compile_request(key: &KeyPair, request: &CompileRequest) -> CompileResponse {
    if let Some(reason) = precheck(request) {
        return CompileResponse::Refused { reason };
    }
    match wasm_precompile::bundle(&request.module, key) {
        Ok(bundle) if bundle.len() > BUNDLE_MAX_BYTES => CompileResponse::Refused {
            reason: format!("the compiled code has {} bytes, more than the {BUNDLE_MAX_BYTES} a response carries", bundle.len()),
        },
        Ok(bundle) => CompileResponse::Compiled { bundle },
        // `{e:#}` includes wasmtime's cause (e.g. the validation error and its offset).
        Err(e) => CompileResponse::Refused { reason: format!("cannot compile the module: {e:#}") },
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use workloads::ed25519_compact::Seed;

    fn key() -> KeyPair {
        KeyPair::from_seed(Seed::new([0x42; 32]))
    }

    fn hello() -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wasm/out/hello.wasm");
        std::fs::read(p).unwrap()
    }

    #[test]
    fn compiles_and_attests_a_module() {
        let module = hello();
        let r = compile_request(&key(), &CompileRequest { module: module.clone(), engine: artifact::engine_fingerprint() });
        let CompileResponse::Compiled { bundle } = r else { panic!("{r:?}") };
        let a = artifact::verify(&bundle, blake3::hash(&module).as_bytes(), &artifact::engine_fingerprint(), &[*key().pk]).unwrap();
        assert!(!a.code.is_empty());
    }

    #[test]
    fn refuses_other_engines_big_modules_and_invalid_wasm() {
        let r = compile_request(&key(), &CompileRequest { module: hello(), engine: [0; 32] });
        assert!(matches!(&r, CompileResponse::Refused { reason } if reason.starts_with("this service compiles for engine")), "{r:?}");
        let big = vec![0u8; COMPILE_MODULE_MAX_BYTES + 1];
        let r = compile_request(&key(), &CompileRequest { module: big, engine: artifact::engine_fingerprint() });
        assert!(matches!(&r, CompileResponse::Refused { reason } if reason.contains("at most")), "{r:?}");
        let half = hello()[..1000].to_vec();
        let r = compile_request(&key(), &CompileRequest { module: half, engine: artifact::engine_fingerprint() });
        assert!(matches!(&r, CompileResponse::Refused { reason } if reason.starts_with("cannot compile the module:")), "{r:?}");
        let r = compile_request(&key(), &CompileRequest { module: Vec::new(), engine: artifact::engine_fingerprint() });
        assert!(matches!(&r, CompileResponse::Refused { .. }), "{r:?}");
    }
}
