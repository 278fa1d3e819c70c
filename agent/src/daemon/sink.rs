//! The download sink: payload bytes go into the store's payload file chunk by chunk, each
//! synced and counted (its row in SQLite) on its own, so a resume after a dropped link, a
//! restart or a reboot never fetches a counted byte again. The store's calls block; they
//! run under `block_in_place`, which the daemon's multi-threaded runtime allows.

use ferry_proto::Sha256Digest;

use crate::fetch::{ChunkSink, FetchError};
use crate::store::Store;

/// Writes one payload's bytes into the store.
pub struct StoreSink<'a> {
    store: &'a mut Store,
    digest: Sha256Digest,
    manifest: Sha256Digest,
    size: u64,
    /// Payload bytes written through this sink.
    pub written: u64,
    /// The store refused a chunk: another writer (`ferry-agent import`) is storing, or has
    /// stored and verified, the same payload.
    pub refused: bool,
}

impl<'a> StoreSink<'a> {
    /// A sink for payload `digest` of `size` bytes, part of manifest `manifest`.
    pub fn new(store: &'a mut Store, digest: Sha256Digest, manifest: Sha256Digest, size: u64) -> Self {
        StoreSink { store, digest, manifest, size, written: 0, refused: false }
    }
}

fn local(e: impl std::fmt::Display) -> FetchError {
    FetchError::Sink(crate::failure::Failure::new(ferry_proto::Reason::Io, e))
}

impl ChunkSink for StoreSink<'_> {
    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FetchError> {
        let accepted =
            tokio::task::block_in_place(|| self.store.put_chunk(&self.digest, offset, bytes)).map_err(local)?;
        if !accepted {
            self.refused = true;
            return Err(local(format!(
                "payload {} changed under the download (another writer, or already verified)",
                self.digest
            )));
        }
        self.written += bytes.len() as u64;
        crate::crash_point!("download::after-chunk");
        Ok(())
    }

    fn restart(&mut self) -> Result<(), FetchError> {
        tokio::task::block_in_place(|| self.store.begin_payload(&self.digest, &self.manifest, self.size))
            .map_err(local)?;
        Ok(())
    }

    fn set_validator(&mut self, v: Option<String>) -> Result<(), FetchError> {
        tokio::task::block_in_place(|| self.store.set_payload_validator(&self.digest, v.as_deref())).map_err(local)
    }
}
