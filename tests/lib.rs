//! Integration tests live in tests/*.rs beside this file.

/// Public key (hex) of the TEST-ONLY compiler key in tests/wasm/test-compiler.key, which
/// attests tests/wasm/out/*.bundle. Booted tests pass `gridos.compilers=` this key so
/// the node trusts those bundles. The secret is committed: never trust it on a real node.
pub const TEST_COMPILER_PUBKEY: &str = "58b8134ee126f4e0d73e8305aa4c97b3b98b577616d57e2b0e694f67f19b34fc";

/// [`TEST_COMPILER_PUBKEY`] as bytes.
pub fn test_compiler_pubkey() -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&TEST_COMPILER_PUBKEY[2 * i..2 * i + 2], 16).unwrap_or_default();
    }
    key
}

#[cfg(test)]
mod test {
    #[test]
    fn the_test_compiler_pubkey_is_the_committed_keys() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm/test-compiler.key");
        let text = std::fs::read_to_string(&p).expect("tests/wasm/test-compiler.key");
        assert!(text.contains("TEST-ONLY"));
        let key = wasm_precompile::load_key(&p).expect("a compiler key file");
        assert_eq!(*key.pk, super::test_compiler_pubkey());
    }
}
