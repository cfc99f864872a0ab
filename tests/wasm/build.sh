#!/usr/bin/env bash
# Builds the C test programs to WebAssembly (WASI preview 1) with Debian's clang and
# wasi-libc, then compiles them to native code for the kernel and writes v2 bundles
# attested by the TEST-ONLY compiler key in test-compiler.key (never trust that key
# on a real node: it is public).
# Outputs in out/ are committed, so kernel builds and CI need neither clang nor a
# rerun. `./build.sh --bundles` skips clang and only regenerates the bundles from the
# committed .wasm files (reproducible: same modules, key and settings give the same
# bytes); rerun it after changing the engine settings in
# userland/workloads/src/runtime.rs or artifact::NATIVE_ENGINE.
#
# Packages for the C step: clang lld wasi-libc libclang-rt-14-dev-wasm32; for the Rust
# program: rustc libstd-rust-dev-wasm32 (Debian's, used as /usr/bin/rustc).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
mkdir -p out
if [[ "${1:-}" != "--bundles" ]]; then
  # clang 14 (Debian bookworm) knows the triple as wasm32-wasi and finds wasi-libc in the
  # multiarch paths; newer toolchains use wasm32-wasip1 with a sysroot.
  if [[ -d /usr/share/wasi-sysroot ]]; then
    cc=(clang --target=wasm32-wasip1 --sysroot=/usr/share/wasi-sysroot)
  else
    cc=(clang --target=wasm32-wasi)
  fi
  for prog in hello checksum spin membomb fib files echo_server sleep transform; do
    "${cc[@]}" -O2 -Wall -Werror -Wl,--strip-all -o "out/$prog.wasm" "$prog.c"
  done
  # A Rust program with the standard library: Debian's rustc with its wasm32-wasi std
  # (packages rustc libstd-rust-dev-wasm32; rustup's toolchain here has no wasm target).
  /usr/bin/rustc --edition 2021 -O --target wasm32-wasi -C strip=symbols -o out/dirtree.wasm dirtree.rs
fi
# Compile and attest with the host tool (std wasmtime + cranelift, settings from runtime.rs).
cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p wasm-precompile -- \
  bundle --key test-compiler.key out/*.wasm
ls -l out/
