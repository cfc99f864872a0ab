//! Link flags for the bare-metal kernel binary only (see ../shared/DESIGN.md, "Build recipe").
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed={dir}/linker.ld");
    for arg in [
        format!("-T{dir}/linker.ld"),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=4096".into(),
        "-Wl,--gc-sections".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
