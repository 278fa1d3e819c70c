//! The device's own identity: an Ed25519 key made on first use and kept at
//! `<state_dir>/identity.key` (PKCS#8 PEM, mode 0600). It signs report batches, so the
//! operator's side can tell which device a batch came from and that nobody altered it on
//! the way (DESIGN "Reports").
//!
//! The key is created at most once: it is written under a temporary name with mode 0600 and
//! hard-linked into place, which never replaces an existing file, so two processes starting
//! together (the service and an operator's `ferry-agent identity`) end up with the same key.
//! A lost key means a new identity the operator must enrol again; the file is never rewritten.
//! The private key is never printed or logged; `ferry-agent identity` shows the public half.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_proto::keys::KeyError;
use ferry_proto::{KeyId, PublicKey, Reason, SigningKey};

use crate::fsutil;

/// The key file's name in the state directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Largest key file read (a PKCS#8 PEM Ed25519 key is about 120 bytes).
const MAX_KEY_FILE: u64 = 16 << 10;

/// Why the device identity is unusable.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or creating the key file failed.
    #[error("device key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not an Ed25519 private key (or no key could be made).
    #[error("device key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: KeyError,
    },
}

impl IdentityError {
    /// `io` for file problems, `malformed` for a file that holds no usable key.
    pub fn reason(&self) -> Reason {
        match self {
            IdentityError::Io { .. } => Reason::Io,
            IdentityError::Key { source: KeyError::Random(_), .. } => Reason::Io,
            IdentityError::Key { .. } => Reason::Malformed,
        }
    }
}

impl From<IdentityError> for crate::failure::Failure {
    fn from(e: IdentityError) -> Self {
        crate::failure::Failure::new(e.reason(), e)
    }
}

/// The device's signing key.
#[derive(Debug)]
pub struct Identity {
    key: SigningKey,
    path: PathBuf,
    created: bool,
}

impl Identity {
    /// Loads `<state_dir>/identity.key`, creating the state directory and the key the first
    /// time. Removes a temporary an interrupted creation left behind.
    pub fn load_or_create(state_dir: &Path) -> Result<Identity, IdentityError> {
        let path = state_dir.join(IDENTITY_FILE);
        let io_err = |source| IdentityError::Io { path: path.clone(), source };
        std::fs::create_dir_all(state_dir).map_err(io_err)?;
        fsutil::remove_atomic_temporaries(state_dir, IDENTITY_FILE).map_err(io_err)?;
        let mut created = false;
        if !path.exists() {
            let key = SigningKey::generate().map_err(|source| IdentityError::Key { path: path.clone(), source })?;
            let pem = key.to_pem().map_err(|source| IdentityError::Key { path: path.clone(), source })?;
            created = fsutil::create_file_atomically(&path, pem.as_bytes(), 0o600).map_err(io_err)?;
            if created {
                tracing::info!(key_id = %key.public().id(), path = %path.display(), "device identity created");
                return Ok(Identity { key, path, created });
            }
        }
        let key = read_key(&path)?;
        Ok(Identity { key, path, created })
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key (what the operator enrols).
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// The key's id: SHA-256 of the raw public key.
    pub fn key_id(&self) -> KeyId {
        self.key.public().id()
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when this call made the key.
    pub fn created(&self) -> bool {
        self.created
    }
}

fn read_key(path: &Path) -> Result<SigningKey, IdentityError> {
    use std::io::Read;
    let io_err = |source| IdentityError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mode = file.metadata().map_err(io_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "device key is readable by others; chmod 600 it");
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut text).map_err(io_err)?;
    if text.len() as u64 > MAX_KEY_FILE {
        let source = KeyError::BadPrivateKey(format!("larger than {MAX_KEY_FILE} bytes"));
        return Err(IdentityError::Key { path: path.to_path_buf(), source });
    }
    SigningKey::from_pem(&text).map_err(|source| IdentityError::Key { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_stable_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let first = Identity::load_or_create(&state).expect("create");
        assert!(first.created());
        let mode = std::fs::metadata(first.path()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(first.path()).expect("read");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
        let again = Identity::load_or_create(&state).expect("load");
        assert!(!again.created());
        assert_eq!(again.public(), first.public());
        assert_eq!(again.key_id(), first.public().id());
        assert_eq!(std::fs::read_to_string(again.path()).expect("read"), text, "never rewritten");
        assert_eq!(std::fs::read_dir(&state).expect("ls").count(), 1, "only the key file");
    }

    #[test]
    fn an_interrupted_creation_leaves_nothing_behind_and_a_bad_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".identity.key.1-2-3.tmp"), "half a key").expect("write");
        let id = Identity::load_or_create(dir.path()).expect("create");
        assert!(id.created());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1, "the stray temporary is gone");
        std::fs::write(id.path(), "not a key").expect("write");
        let err = Identity::load_or_create(dir.path()).expect_err("garbage");
        assert_eq!(err.reason(), Reason::Malformed);
        assert!(err.to_string().contains("identity.key"), "{err}");
    }
}
