//! Payload bytes, one file per payload: `<state_dir>/payloads/<sha256 hex>`. The payload's
//! row in `ferry.db` says how many of those bytes count (`stored`) and whether they hashed
//! to the signed digest (`verified`); the file holds the bytes.
//!
//! A piece of a payload counts once it is synced into the file *and* its row says so, both
//! inside one `BEGIN IMMEDIATE` transaction, so two writers (the daemon downloading,
//! `ferry-agent import` copying from a USB stick) never interleave, and a crash between the
//! two leaves bytes past `stored` that the next write cuts off. What counts is the smaller
//! of `stored` and the file's length: a file lost or cut short loses what it lost, never
//! more, and never makes the row lie about bytes that are not there.
//!
//! Payload bytes are copied here before they are verified and verified by reading the file
//! back, so what is applied is exactly what was verified even if the USB stick they came
//! from changes underneath. A verified payload is immutable: nothing writes its file again.
//!
//! Why files, not SQLite blobs (docs/decisions.md, "Payload bytes in files"): in WAL mode
//! SQLite writes every page twice, to the WAL and again when it checkpoints, so a 120 MB
//! payload cost 240 MB of writes and about 2.4 s here against 1.0 s for a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferry_proto::Sha256Digest;
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{now, Store, StoreError};

/// The directory of payload files, under the state directory.
pub(super) const DIR: &str = "payloads";

/// Download piece size: the most one committed write of a download holds.
pub const CHUNK: usize = 1 << 20;

/// Reads a verified payload's bytes, exactly its signed size.
pub type PayloadReader = io::Take<File>;

impl Store {
    fn payload_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.payload_dir.join(digest.to_hex())
    }

    /// True when the payload is stored whole and its digest was verified.
    pub fn payload_verified(&self, digest: &Sha256Digest) -> Result<bool, StoreError> {
        verified_whole(&self.conn, digest, &self.payload_path(digest))
    }

    /// Starts (or restarts from zero) storing a payload. A payload already verified is
    /// left alone (returns false): it is immutable from then on.
    pub fn begin_payload(
        &mut self,
        digest: &Sha256Digest,
        manifest: &Sha256Digest,
        size: u64,
    ) -> Result<bool, StoreError> {
        let path = self.payload_path(digest);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if verified_whole(&tx, digest, &path)? {
            return Ok(false);
        }
        remove_file(&path)?;
        tx.execute(
            "INSERT INTO payloads(digest, manifest, size, stored, verified, updated_at) VALUES(?1, ?2, ?3, 0, 0, ?4)
             ON CONFLICT(digest) DO UPDATE SET stored = 0, verified = 0, validator = NULL, updated_at = excluded.updated_at",
            params![digest.to_hex(), manifest.to_hex(), size as i64, now() as i64],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Registers a payload for a resumable download without discarding what is stored.
    pub fn ensure_payload(&self, digest: &Sha256Digest, manifest: &Sha256Digest, size: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO payloads(digest, manifest, size, stored, verified, updated_at) VALUES(?1, ?2, ?3, 0, 0, ?4)",
            params![digest.to_hex(), manifest.to_hex(), size as i64, now() as i64],
        )?;
        Ok(())
    }

    /// Bytes stored so far and the HTTP validator the download started with.
    pub fn payload_progress(&self, digest: &Sha256Digest) -> Result<Option<(u64, Option<String>)>, StoreError> {
        let row: Option<(i64, Option<String>)> = self
            .conn
            .query_row("SELECT stored, validator FROM payloads WHERE digest = ?1", [digest.to_hex()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((stored, validator)) = row else { return Ok(None) };
        Ok(Some((counted(stored, &self.payload_path(digest))?, validator)))
    }

    /// Remembers the validator (ETag) a download's bytes belong to.
    pub fn set_payload_validator(&self, digest: &Sha256Digest, validator: Option<&str>) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE payloads SET validator = ?2 WHERE digest = ?1 AND verified = 0",
            params![digest.to_hex(), validator],
        )?;
        Ok(())
    }

    /// Appends `data` at `offset`, which must be exactly the bytes stored so far; they
    /// count once this returns. Refused (false) for a verified payload or when `offset` is
    /// not the end of what is stored (another writer got there first).
    pub fn put_chunk(&mut self, digest: &Sha256Digest, offset: u64, data: &[u8]) -> Result<bool, StoreError> {
        Ok(self.append_from(digest, offset, &mut &data[..], data.len() as u64)?.is_some())
    }

    /// Appends up to `len` bytes read from `source` at `offset`, which must be exactly the
    /// bytes stored so far, through a small buffer and with one sync: they count once this
    /// returns. Returns how many were appended (fewer than `len` only where `source`
    /// ended), or `None` when refused, as [`Store::put_chunk`].
    pub fn append_from(
        &mut self,
        digest: &Sha256Digest,
        offset: u64,
        source: &mut dyn Read,
        len: u64,
    ) -> Result<Option<u64>, StoreError> {
        let path = self.payload_path(digest);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(i64, bool)> = tx
            .query_row("SELECT stored, verified FROM payloads WHERE digest = ?1", [digest.to_hex()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match row {
            Some((stored, false)) if counted(stored, &path)? == offset => {}
            _ => return Ok(None),
        }
        let appended = write_at(&self.payload_dir, &path, offset, source, len)?;
        tx.execute(
            "UPDATE payloads SET stored = ?2, updated_at = ?3 WHERE digest = ?1",
            params![digest.to_hex(), (offset + appended) as i64, now() as i64],
        )?;
        tx.commit()?;
        Ok(Some(appended))
    }

    /// Hashes the stored file and marks the payload verified when it is exactly `size`
    /// bytes with digest `digest`, all inside one write transaction so no other writer can
    /// change it in between. What is verified is what is stored.
    pub fn verify_and_mark(&mut self, digest: &Sha256Digest, size: u64) -> Result<bool, StoreError> {
        let path = self.payload_path(digest);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<i64> = tx
            .query_row("SELECT stored FROM payloads WHERE digest = ?1", [digest.to_hex()], |r| r.get(0))
            .optional()?;
        // Every byte counted and none past them: the row's `stored` reaches `size` and the
        // file holds exactly `size` bytes.
        match stored {
            Some(stored) if stored.max(0) as u64 >= size && file_len(&path)? == size => {}
            _ => return Ok(false),
        }
        if hash_file(&path)? != *digest {
            return Ok(false);
        }
        tx.execute(
            "UPDATE payloads SET verified = 1, stored = ?2 WHERE digest = ?1",
            params![digest.to_hex(), size as i64],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Deletes a payload that did not verify (a verified one is left alone).
    pub fn discard_unverified_payload(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM payloads WHERE digest = ?1 AND verified = 0", [digest.to_hex()])? > 0 {
            remove_file(&self.payload_path(digest))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a payload and its file.
    pub fn delete_payload(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM payloads WHERE digest = ?1", [digest.to_hex()])?;
        remove_file(&self.payload_path(digest))?;
        tx.commit()?;
        Ok(())
    }

    /// Removes payload files no row accounts for (a crash between a row's deletion and its
    /// file's, or anything else left in the directory). Returns how many.
    pub fn remove_stray_payload_files(&self) -> Result<usize, StoreError> {
        let entries = match fs::read_dir(&self.payload_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(StoreError::PayloadFile { path: self.payload_dir.clone(), source }),
        };
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::PayloadFile { path: self.payload_dir.clone(), source })?;
            let name = entry.file_name();
            // Only a canonical digest name (lower-case hex) can be a payload's file.
            let digest = name.to_str().and_then(|n| n.parse::<Sha256Digest>().ok().filter(|d| d.to_hex() == n));
            let known = match digest {
                Some(digest) => tx
                    .query_row("SELECT 1 FROM payloads WHERE digest = ?1", [digest.to_hex()], |_| Ok(()))
                    .optional()?
                    .is_some(),
                None => false,
            };
            if !known {
                let path = entry.path();
                let removal = match entry.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                    _ => fs::remove_file(&path),
                };
                removal.map_err(|source| StoreError::PayloadFile { path, source })?;
                removed += 1;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Digests of all stored payloads.
    pub fn payload_digests(&self) -> Result<Vec<Sha256Digest>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT digest FROM payloads")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| r.ok()).filter_map(|h| h.parse().ok()).collect())
    }

    /// The release number of the manifest a stored payload belongs to.
    pub fn payload_manifest_release(&self, digest: &Sha256Digest) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT m.release FROM payloads p JOIN manifests m ON m.digest = p.manifest WHERE p.digest = ?1",
                [digest.to_hex()],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|r| r as u64))
    }

    /// A reader over a verified payload's bytes.
    pub fn payload_reader(&self, digest: &Sha256Digest) -> Result<PayloadReader, StoreError> {
        let path = self.payload_path(digest);
        let size: Option<i64> = self
            .conn
            .query_row("SELECT size FROM payloads WHERE digest = ?1 AND verified = 1", [digest.to_hex()], |r| r.get(0))
            .optional()?;
        let Some(size) = size else {
            let source = io::Error::new(io::ErrorKind::NotFound, "no verified payload with this digest");
            return Err(StoreError::PayloadFile { path, source });
        };
        let file = File::open(&path).map_err(|source| StoreError::PayloadFile { path, source })?;
        Ok(file.take(size as u64))
    }
}

/// True when the payload's row says verified and its file holds the row's size (a file lost
/// since is not a verified payload).
fn verified_whole(conn: &rusqlite::Connection, digest: &Sha256Digest, path: &Path) -> Result<bool, StoreError> {
    let row: Option<(bool, i64)> = conn
        .query_row("SELECT verified, size FROM payloads WHERE digest = ?1", [digest.to_hex()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match row {
        Some((true, size)) => file_len(path)? == size as u64,
        _ => false,
    })
}

/// Bytes of a payload that count: what its row says, as far as its file holds them.
fn counted(stored: i64, path: &Path) -> Result<u64, StoreError> {
    Ok((stored.max(0) as u64).min(file_len(path)?))
}

/// A payload file's length; 0 when there is none.
fn file_len(path: &Path) -> Result<u64, StoreError> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(StoreError::PayloadFile { path: path.to_path_buf(), source }),
    }
}

/// Removes a payload file; none is fine.
fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(StoreError::PayloadFile { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Copies up to `len` bytes of `source` to `offset` of the payload file, cutting off
/// whatever a crash left past `offset`, and syncs it (and, for a new file, its directory).
/// Returns the bytes copied.
fn write_at(dir: &Path, path: &Path, offset: u64, source: &mut dyn Read, len: u64) -> Result<u64, StoreError> {
    let fail = |source| StoreError::PayloadFile { path: path.to_path_buf(), source };
    let new = offset == 0;
    if new {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(fail)?;
    file.set_len(offset).map_err(fail)?;
    file.seek(io::SeekFrom::Start(offset)).map_err(fail)?;
    let copied = copy_exactly(source, &mut file, len).map_err(|e| match e {
        Copy::Read(e) => StoreError::Source(e),
        Copy::Write(e) => fail(e),
    })?;
    file.sync_data().map_err(fail)?;
    if new {
        crate::fsutil::fsync_dir(dir).map_err(fail)?;
        crate::fsutil::fsync_dir(crate::fsutil::parent_dir(dir)).map_err(fail)?;
    }
    Ok(copied)
}

/// Which side of a copy failed.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Copies up to `len` bytes (fewer only where `from` ends) through a 64 KiB buffer.
fn copy_exactly(from: &mut dyn Read, to: &mut File, len: u64) -> Result<u64, Copy> {
    let mut buf = vec![0u8; (64 << 10).min(len as usize)];
    let mut copied = 0u64;
    while copied < len {
        let want = (len - copied).min(buf.len() as u64) as usize;
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        copied += n as u64;
    }
    Ok(copied)
}

/// SHA-256 of a whole file.
fn hash_file(path: &Path) -> Result<Sha256Digest, StoreError> {
    let fail = |source| StoreError::PayloadFile { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(fail)?;
    let mut hash = ferry_proto::digest::DigestWriter::default();
    io::copy(&mut file, &mut hash).map_err(fail)?;
    Ok(hash.finish())
}

/// Migration step: copies the chunks of every payload stored in SQLite into its file and
/// syncs them, inside the migration's transaction (the table is dropped by the migration
/// that follows). Returns the bytes moved.
pub(super) fn move_chunks_to_files(tx: &Transaction<'_>, dir: &Path) -> Result<u64, StoreError> {
    let mut stmt = tx.prepare("SELECT digest, offset, data FROM payload_chunks ORDER BY digest, offset")?;
    let mut rows = stmt.query([])?;
    let mut open: Option<(String, File, PathBuf)> = None;
    let mut moved = 0u64;
    while let Some(row) = rows.next()? {
        let digest: String = row.get(0)?;
        let Ok(parsed) = digest.parse::<Sha256Digest>() else { continue };
        if open.as_ref().is_none_or(|(d, _, _)| *d != digest) {
            if let Some((_, file, path)) = open.take() {
                file.sync_all().map_err(|source| StoreError::PayloadFile { path, source })?;
            }
            let path = dir.join(parsed.to_hex());
            let fail = |source| StoreError::PayloadFile { path: path.clone(), source };
            fs::create_dir_all(dir).map_err(fail)?;
            let file = File::create(&path).map_err(fail)?;
            open = Some((digest.clone(), file, path));
        }
        let offset: i64 = row.get(1)?;
        let data = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        if let Some((_, file, path)) = &open {
            file.write_all_at(data, offset.max(0) as u64)
                .map_err(|source| StoreError::PayloadFile { path: path.clone(), source })?;
        }
        moved += data.len() as u64;
    }
    if let Some((_, file, path)) = open {
        file.sync_all().map_err(|source| StoreError::PayloadFile { path, source })?;
    }
    if moved > 0 {
        crate::fsutil::fsync_dir(dir).map_err(|source| StoreError::PayloadFile { path: dir.to_path_buf(), source })?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests;
