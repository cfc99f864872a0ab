//! The compile service's key file: 64 hex digits of a 32-byte ed25519 seed (lines starting
//! with `#` are comments), as `wasm_precompile::load_key` reads it. Made with mode 0600 on
//! first run and never overwritten. The key attests compiled code and is the service's
//! overlay identity.

use std::path::Path;

use workloads::ed25519_compact::{KeyPair, Seed};

/// Why the key could not be had.
#[derive(Debug)]
pub enum KeyError {
    /// An existing file is unreadable or not a key.
    Load(wasm_precompile::KeyFileError),
    /// A new file could not be written.
    Create(String),
    /// No randomness for a new key.
    Entropy(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Load(e) => write!(f, "{e}"),
            KeyError::Create(e) => write!(f, "cannot create the key file: {e}"),
            KeyError::Entropy(e) => write!(f, "no randomness for a new key: {e}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The key in `path`, made first if the file does not exist; `true` when it was made now.
pub fn load_or_create(path: &Path) -> Result<(KeyPair, bool), KeyError> {
    if path.exists() {
        return wasm_precompile::load_key(path).map(|k| (k, false)).map_err(KeyError::Load);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Entropy(e.to_string()))?;
    let text = format!("# gridos compile service key (ed25519 seed); keep it secret\n{}\n", crate::hex(&seed));
    match gridctl::key::write_new_secret(path, &text) {
        Ok(()) => {}
        // Someone made it between our check and now: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return wasm_precompile::load_key(path).map(|k| (k, false)).map_err(KeyError::Load)
        }
        Err(e) => return Err(KeyError::Create(format!("{}: {e}", path.display()))),
    }
    Ok((KeyPair::from_seed(Seed::new(seed)), true))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn made_once_then_reused_and_junk_is_refused() {
        let dir = std::env::temp_dir().join(format!("gridos-compiler-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/key");
        let (a, made) = load_or_create(&path).unwrap();
        assert!(made);
        let (b, made) = load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(a.pk, b.pk);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyError::Load(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
