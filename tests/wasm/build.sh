#!/usr/bin/env bash
# Builds the C test programs to WebAssembly (WASI preview 1) with Debian's clang and
# wasi-libc, then precompiles them for the kernel (native x86-64 + Pulley bundles).
# Outputs in out/ are committed, so kernel builds and CI need neither clang nor a
# rerun; rerun this after changing a program or the engine settings in
# userland/workloads/src/runtime.rs (the kernel reports when a bundle no longer loads
# natively and falls back to Pulley).
#
# Packages: clang lld wasi-libc libclang-rt-14-dev-wasm32 (apt-get install -y ...).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
mkdir -p out
# clang 14 (Debian bookworm) knows the triple as wasm32-wasi and finds wasi-libc in the
# multiarch paths; newer toolchains use wasm32-wasip1 with a sysroot.
if [[ -d /usr/share/wasi-sysroot ]]; then
  cc=(clang --target=wasm32-wasip1 --sysroot=/usr/share/wasi-sysroot)
else
  cc=(clang --target=wasm32-wasi)
fi
for prog in hello checksum spin membomb fib files echo_server sleep; do
  "${cc[@]}" -O2 -Wall -Werror -Wl,--strip-all -o "out/$prog.wasm" "$prog.c"
done
# Precompile with the host tool (std wasmtime + cranelift, settings from runtime.rs).
cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p wasm-precompile -- bundle out/*.wasm
ls -l out/
