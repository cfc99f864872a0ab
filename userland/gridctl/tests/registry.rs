//! Pulling wasm modules from a real OCI registry on the host (Debian's `docker-registry`,
//! started here on a free loopback port; the test says so and passes without checking
//! anything when the package is missing and cannot be installed): a module pushed in the
//! `wasm-to-oci` layout comes back by tag and by digest with the image's digest; a layer
//! or manifest changed in the registry's storage is refused with a digest error, and so
//! is a digest reference that names other bytes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gridctl::registry::{pull, push_wasm, sha256_digest};

struct Registry {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn have_registry() -> bool {
    if Command::new("docker-registry").arg("--version").output().is_ok() {
        return true;
    }
    let root = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    if root {
        eprintln!("registry test: installing Debian package docker-registry with apt-get");
        let _ = Command::new("apt-get").args(["install", "-y", "-q", "docker-registry"]).env("DEBIAN_FRONTEND", "noninteractive").status();
    }
    Command::new("docker-registry").arg("--version").output().is_ok()
}

fn start_registry(name: &str) -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let root = std::env::temp_dir().join(format!("gridctl-registry-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("registry dir");
    let config = root.join("config.yml");
    std::fs::write(&config, format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        root.join("data").display()
    ))
    .expect("config");
    let child = Command::new("docker-registry").arg("serve").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let registry = Registry { child, port, root };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return registry;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("docker-registry did not listen on 127.0.0.1:{port}");
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    root.join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(path, bytes).expect("tamper");
}

fn module() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wasm/out/hello.wasm")).expect("hello.wasm")
}

const T: Duration = Duration::from_secs(30);

#[test]
fn pulls_by_tag_and_digest_and_refuses_changed_bytes() {
    if !have_registry() {
        println!("registry test: SKIPPED: docker-registry is not installed and could not be installed (apt-get install docker-registry)");
        return;
    }
    let registry = start_registry("pull");
    let wasm = module();
    let tag = format!("127.0.0.1:{}/grid/hello:v1", registry.port);
    let digest = push_wasm(&tag, &wasm, T).unwrap_or_else(|e| panic!("{e}"));
    let by_digest = format!("127.0.0.1:{}/grid/hello@{digest}", registry.port);
    for reference in [&tag, &by_digest] {
        let pulled = pull(reference, T).unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert!(pulled.module == wasm, "{reference}: another module came back");
        assert_eq!(pulled.image, by_digest);
        assert_eq!(pulled.manifest_digest, digest);
        assert_eq!(pulled.layer_media_type, "application/vnd.wasm.content.layer.v1+wasm");
    }
    // A digest reference naming bytes the registry does not have.
    let other = format!("127.0.0.1:{}/grid/hello@{}", registry.port, sha256_digest(b"other"));
    assert!(pull(&other, T).is_err());
    // A changed layer: the registry serves it, the pull refuses it.
    flip_last_byte(&blob_path(&registry.root, &sha256_digest(&wasm)));
    for reference in [&tag, &by_digest] {
        let e = pull(reference, T).err().unwrap_or_else(|| panic!("{reference}: a changed layer was accepted")).0;
        assert!(e.contains(&sha256_digest(&wasm)) && e.to_lowercase().contains("digest"), "{e}");
    }
}

#[test]
fn a_changed_manifest_is_refused() {
    if !have_registry() {
        println!("registry test: SKIPPED: docker-registry is not installed and could not be installed (apt-get install docker-registry)");
        return;
    }
    let registry = start_registry("manifest");
    let tag = format!("127.0.0.1:{}/grid/hello:v2", registry.port);
    let digest = push_wasm(&tag, &module(), T).unwrap_or_else(|e| panic!("{e}"));
    // Still valid JSON (a space after the first brace), but other bytes.
    let path = blob_path(&registry.root, &digest);
    let mut bytes = std::fs::read(&path).expect("manifest blob");
    assert_eq!(bytes.first(), Some(&b'{'));
    bytes.insert(1, b' ');
    std::fs::write(&path, bytes).expect("tamper");
    let by_digest = format!("127.0.0.1:{}/grid/hello@{digest}", registry.port);
    for reference in [&tag, &by_digest] {
        let e = pull(reference, T).err().unwrap_or_else(|| panic!("{reference}: a changed manifest was accepted")).0;
        assert!(e.to_lowercase().contains("digest"), "{reference}: {e}");
    }
}
