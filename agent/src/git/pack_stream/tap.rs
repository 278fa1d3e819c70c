//! The byte-level side of [`super::PackStream`]: [`Tap`], the source as the entry reader
//! sees it (every consumed byte goes to the pack file, the stream and the current entry are
//! capped), and [`PackFile`], the file being written with its running checksum and the
//! current entry's CRC-32 and length.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use gix_hash::ObjectId;

use super::{compressed_bound, entry_error};
use crate::git::error::{GitError, Limit};

/// The pack source as the stream reads it: every byte consumed is written to the pack file
/// (while `record`), the stream's size is capped, and so is the current entry's.
pub(super) struct Tap<'a> {
    source: &'a mut dyn BufRead,
    pub(super) out: PackFile,
    pub(super) record: bool,
    pub(super) served: u64,
    max_bytes: u64,
    /// The entry being inflated, whose bytes are capped.
    pub(super) entry: Option<EntryBudget>,
    pub(super) failure: Option<GitError>,
}

/// The entry a [`Tap`] is serving: where it starts, the size it declares, and the most bytes
/// (header included, counted by [`PackFile::entry_len`]) it may take.
pub(super) struct EntryBudget {
    pub(super) at: u64,
    pub(super) declared: u64,
    pub(super) limit: u64,
}

impl<'a> Tap<'a> {
    pub(super) fn new(source: &'a mut dyn BufRead, out: PackFile, max_bytes: u64) -> Self {
        Tap { source, out, record: true, served: 0, max_bytes, entry: None, failure: None }
    }

    /// Fills `buf` completely; a stream ending first is a truncated pack.
    pub(super) fn read_exact_checked(&mut self, buf: &mut [u8]) -> Result<(), GitError> {
        self.read_exact(buf).map_err(|err| {
            self.failure.take().unwrap_or_else(|| match err.kind() {
                io::ErrorKind::UnexpectedEof => GitError::malformed("pack stream ends early (truncated pack)"),
                _ => GitError::PackRead { source: err },
            })
        })
    }

    /// How many bytes the source has ready (0: it is at its end).
    pub(super) fn ready(&mut self) -> Result<usize, GitError> {
        loop {
            match self.source.fill_buf() {
                Ok(rest) => return Ok(rest.len()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(GitError::PackRead { source: err }),
            }
        }
    }

    /// After the pack (and its patch section, if any): the source must hold nothing more.
    pub(super) fn ensure_at_end(&mut self) -> Result<(), GitError> {
        match self.ready()? {
            0 => Ok(()),
            n => Err(GitError::malformed(format!(
                "junk after the pack: at least {n} byte(s) follow it at offset {}",
                self.served
            ))),
        }
    }

    /// Records `err` as the reason reading stopped, and returns the error gix sees.
    fn refuse(&mut self, err: GitError) -> io::Error {
        let kind = match &err {
            GitError::PackRead { source } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        self.failure = Some(err);
        io::Error::new(kind, "pack stream refused")
    }
}

impl BufRead for Tap<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failure.is_some() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "pack stream refused"));
        }
        let available = loop {
            match self.source.fill_buf() {
                Ok(chunk) => break chunk.len(),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.refuse(GitError::PackRead { source: err })),
            }
        };
        if available == 0 {
            return Ok(&[]);
        }
        let stream_room = self.max_bytes.saturating_sub(self.served);
        if stream_room == 0 {
            return Err(self.refuse(GitError::size(Limit::TotalBytes, self.max_bytes, None, "pack stream")));
        }
        let mut serve = available.min(usize::try_from(stream_room).unwrap_or(usize::MAX));
        if let Some(&EntryBudget { at, declared, limit }) = self.entry.as_ref() {
            let entry_room = limit.saturating_sub(self.out.entry_len);
            if entry_room == 0 {
                return Err(self.refuse(entry_error(
                    at,
                    format!(
                        "its zlib stream is longer than {} bytes, more than a {declared}-byte object can need \
                         (padded stream)",
                        compressed_bound(declared)
                    ),
                )));
            }
            serve = serve.min(usize::try_from(entry_room).unwrap_or(usize::MAX));
        }
        let chunk = self.source.fill_buf()?;
        Ok(&chunk[..serve.min(chunk.len())])
    }

    fn consume(&mut self, amt: usize) {
        if amt == 0 {
            return;
        }
        if self.record {
            let written = match self.source.fill_buf() {
                Ok(chunk) => self.out.write_all(&chunk[..amt.min(chunk.len())]),
                Err(err) => Err(err),
            };
            if let Err(err) = written {
                let err = self.out.io_error(err);
                self.failure.get_or_insert(err);
            }
        }
        self.source.consume(amt);
        self.served += amt as u64;
    }
}

impl Read for Tap<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let ahead = self.fill_buf()?;
        let n = ahead.len().min(out.len());
        out[..n].copy_from_slice(&ahead[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The pack file being written: hashes everything written to it, and keeps the CRC-32 and
/// length of the current entry.
pub(super) struct PackFile {
    file: BufWriter<File>,
    path: PathBuf,
    hash: Option<gix_hash::Hasher>,
    kind: gix_hash::Kind,
    crc: crc32fast::Hasher,
    pub(super) entry_len: u64,
    pub(super) len: u64,
}

impl PackFile {
    pub(super) fn new(file: File, path: PathBuf, kind: gix_hash::Kind) -> Self {
        PackFile {
            file: BufWriter::with_capacity(64 << 10, file),
            path,
            hash: Some(gix_hash::hasher(kind)),
            kind,
            crc: crc32fast::Hasher::new(),
            entry_len: 0,
            len: 0,
        }
    }

    pub(super) fn io_error(&self, err: io::Error) -> GitError {
        GitError::io(&self.path, err)
    }

    pub(super) fn begin_entry(&mut self) {
        self.crc = crc32fast::Hasher::new();
        self.entry_len = 0;
    }

    pub(super) fn entry_crc(&self) -> u32 {
        self.crc.clone().finalize()
    }

    /// The checksum of everything written so far; what is written next is not hashed.
    pub(super) fn take_hash(&mut self) -> Result<ObjectId, GitError> {
        let hash = self.hash.take().unwrap_or_else(|| gix_hash::hasher(self.kind));
        hash.try_finalize().map_err(|e| GitError::Store { detail: format!("hashing the pack: {e:#}") })
    }

    /// Sets the header's object count to `count` and hashes the whole file again.
    pub(super) fn rewrite_count_and_hash(&mut self, count: u32) -> Result<ObjectId, GitError> {
        self.file.flush().map_err(|e| self.io_error(e))?;
        let file = self.file.get_ref();
        file.write_all_at(&count.to_be_bytes(), 8).map_err(|e| self.io_error(e))?;
        let mut hash = gix_hash::hasher(self.kind);
        let mut buf = vec![0; 256 << 10];
        let mut at = 0;
        while at < self.len {
            let n = file.read_at(&mut buf, at).map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(io::ErrorKind::UnexpectedEof.into()));
            }
            let n = n.min((self.len - at) as usize);
            hash.update(&buf[..n]);
            at += n as u64;
        }
        hash.try_finalize().map_err(|e| GitError::Store { detail: format!("hashing the pack: {e:#}") })
    }

    /// Appends the trailing checksum and flushes the file.
    pub(super) fn write_trailer(&mut self, checksum: &[u8]) -> Result<(), GitError> {
        self.file.write_all(checksum).and_then(|()| self.file.flush()).map_err(|e| self.io_error(e))?;
        self.len += checksum.len() as u64;
        Ok(())
    }
}

impl Write for PackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(hash) = self.hash.as_mut() {
            hash.update(&buf[..n]);
        }
        self.crc.update(&buf[..n]);
        self.entry_len += n as u64;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
