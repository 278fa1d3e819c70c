//! Key files: private keys as PKCS#8 PEM (mode 0600), public keys as SPKI PEM beside them
//! (`FILE.pub`). Either kind of file is accepted where only the public key is needed.

use anyhow::{bail, Context, Result};
use ferry_proto::{PublicKey, SigningKey};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Reads a private key.
pub fn load_private(path: &Path) -> Result<SigningKey> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading private key {}", path.display()))?;
    SigningKey::from_pem(&pem).with_context(|| format!("loading private key {}", path.display()))
}

/// Reads a public key from a public or a private key file.
pub fn load_public(path: &Path) -> Result<PublicKey> {
    let pem = fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    if pem.contains("PRIVATE KEY") {
        return Ok(SigningKey::from_pem(&pem).with_context(|| format!("loading key {}", path.display()))?.public());
    }
    PublicKey::from_pem(&pem).with_context(|| format!("loading public key {}", path.display()))
}

/// Writes a new key pair: `out` (0600, refusing to overwrite) and `out.pub`.
pub fn write_new(out: &Path, key: &SigningKey) -> Result<PathBuf> {
    let pem = key.to_pem()?;
    // A key directory made here is private too (`keys/root` with no `keys/` yet).
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {} (an existing key is never overwritten)", out.display()))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    let pub_path = public_path(out);
    fs::write(&pub_path, key.public().to_pem()).with_context(|| format!("writing {}", pub_path.display()))?;
    Ok(pub_path)
}

/// `FILE.pub`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Fails unless `key` is one of `role`'s keys in `root`.
pub fn ensure_in_role(key: &SigningKey, role: &ferry_proto::Role, role_name: &str, path: &Path) -> Result<()> {
    let id = key.public().id();
    if !role.keys.contains(&id) {
        bail!("key {} (id {}) is not a {role_name} key of the mirror's trust root", path.display(), &id.to_hex()[..16]);
    }
    Ok(())
}

/// Loads the private keys given for a role (`--release-key` or `--index-key`, repeatable),
/// each one of the role's keys, distinct, and at least the role's threshold of them.
pub fn load_role_keys(paths: &[PathBuf], role: &ferry_proto::Role, role_name: &str) -> Result<Vec<SigningKey>> {
    let mut keys: Vec<SigningKey> = Vec::new();
    for path in paths {
        let key = load_private(path)?;
        ensure_in_role(&key, role, role_name, path)?;
        if keys.iter().any(|k| k.public().id() == key.public().id()) {
            bail!("key {} is given twice: a {role_name} signature needs distinct keys", path.display());
        }
        keys.push(key);
    }
    if (keys.len() as u64) < u64::from(role.threshold) {
        bail!(
            "the {role_name} role needs {} distinct signatures: give --{role_name}-key {} times (got {})",
            role.threshold,
            role.threshold,
            keys.len()
        );
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_key_gets_private_directories_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("keys/site/root");
        let key = SigningKey::generate().expect("key");
        let public = write_new(&out, &key).expect("first write");
        assert_eq!(public, dir.path().join("keys/site/root.pub"));
        for (path, mode) in [(dir.path().join("keys"), 0o700), (out.clone(), 0o600)] {
            let got = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(got, mode, "{}", path.display());
        }
        let before = fs::read(&out).expect("read");
        let e = write_new(&out, &SigningKey::generate().expect("key")).expect_err("exists");
        assert!(format!("{e:#}").contains("never overwritten"), "{e:#}");
        assert_eq!(fs::read(&out).expect("read"), before);
    }
}
