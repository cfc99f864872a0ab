//! The user's key file: one line, 64 hex digits of a random 32-byte ed25519 seed.
//!
//! The seed makes the owner key that signs manifests and control requests, and with
//! `--user-overlay-key` the CLI's overlay identity too (so a node can list the user's key
//! as an overlay peer). The file is created with mode 0600 and never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_compact::{KeyPair, Seed};

use crate::{bail, hex, parse_hex, Context, Result};

/// Environment variable naming the key file.
pub const KEY_ENV: &str = "GRIDCTL_KEY";

/// The user's secret key.
#[derive(Clone)]
pub struct UserKey {
    seed: [u8; 32],
    keypair: KeyPair,
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserKey({})", hex(&self.public_key()))
    }
}

impl UserKey {
    /// The key of `seed`; the all-zero seed is refused (it is what a broken source gives).
    pub fn from_seed(seed: [u8; 32]) -> Result<UserKey> {
        if seed == [0; 32] {
            bail!("the key's seed is all zeros; make a new key");
        }
        let keypair = KeyPair::from_seed(Seed::new(seed));
        let key = UserKey { seed, keypair };
        debug_assert_eq!(overlay::Identity::from_seed(seed).public_key().0, key.public_key());
        Ok(key)
    }

    /// A fresh random key.
    pub fn generate() -> Result<UserKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).context(|| "no randomness from the operating system".into())?;
        UserKey::from_seed(seed)
    }

    /// The secret seed (the overlay identity seed too).
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// The ed25519 key pair.
    pub fn keypair(&self) -> &KeyPair {
        &self.keypair
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.keypair.pk
    }

    /// The overlay address this key owns.
    pub fn overlay_address(&self) -> [u8; 16] {
        overlay::Address::from_public_key(&overlay::PublicKey(self.public_key())).0
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<UserKey> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no key file at {} (make one with `gridctl key new`)", path.display())
            }
            Err(e) => bail!("cannot read key file {}: {e}", path.display()),
        };
        let Some(seed) = parse_hex::<32>(&text) else {
            bail!("key file {} does not hold 64 hex digits", path.display());
        };
        UserKey::from_seed(seed)
    }

    /// Writes a new key file; refuses to replace an existing one.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        match write_new_secret(path, &format!("{}\n", hex(&self.seed))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("{} already exists; not overwriting a key (remove it first if you mean to)", path.display())
            }
            Err(e) => bail!("cannot create {}: {e}", path.display()),
        }
    }
}

/// Creates `path` (and its folder) readable by its owner only, writes `text` and syncs
/// it; never replaces an existing file (the error's kind is then `AlreadyExists`).
/// Shared by every tool that keeps a secret key on disk.
pub fn write_new_secret(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The key file to use: `explicit`, else `$GRIDCTL_KEY`, else `~/.config/gridos/key`.
pub fn key_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(KEY_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config/gridos/key")),
        None => bail!("no key file given: use --key FILE, set {KEY_ENV}, or set HOME"),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gridctl-key-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn new_key_saves_loads_and_is_not_overwritten() {
        let dir = temp_dir("save");
        let path = dir.join("sub/key");
        let key = UserKey::generate().unwrap();
        key.save_new(&path).unwrap();
        assert_eq!(UserKey::load(&path).unwrap().public_key(), key.public_key());
        let other = UserKey::generate().unwrap();
        let e = other.save_new(&path).unwrap_err();
        assert!(e.0.contains("already exists"), "{e}");
        assert_eq!(UserKey::load(&path).unwrap().public_key(), key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        let dir = temp_dir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(UserKey::load(&dir.join("missing")).unwrap_err().0.contains("gridctl key new"));
        for junk in ["", "abc", &"g".repeat(64), &"0".repeat(64), &"a".repeat(66)] {
            std::fs::write(dir.join("k"), junk).unwrap();
            assert!(UserKey::load(&dir.join("k")).is_err(), "{junk:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn overlay_identity_matches_the_owner_key() {
        let key = UserKey::from_seed([5; 32]).unwrap();
        assert_eq!(overlay::Identity::from_seed([5; 32]).public_key().0, key.public_key());
        assert_eq!(key.overlay_address()[..2], overlay::address::PREFIX);
    }
}
