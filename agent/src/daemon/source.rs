//! Where a poll cycle reads a mirror from: an HTTP(S) base URL through the
//! [`crate::fetch::Fetcher`], or a directory in the mirror layout (a USB stick's mount
//! point), read with the same verification. Both hand payload bytes to a
//! [`ChunkSink`] and never trust what the mirror says about sizes.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use ferry_proto::Reason;
use url::Url;

use crate::config::Mirror;
use crate::failure::Failure;
use crate::fetch::{ChunkSink, Conditional, FetchError, Fetcher, Resume, RetryPolicy};

/// One mirror, ready to read.
pub enum Source {
    /// An HTTP mirror.
    Http {
        /// Base URL, ending in `/`.
        base: Url,
        /// The shared client.
        fetcher: Fetcher,
        /// Retry policy for small documents.
        policy: RetryPolicy,
    },
    /// A mirror directory.
    Dir(PathBuf),
}

impl Source {
    /// A source for `mirror`.
    pub fn new(mirror: &Mirror, fetcher: &Fetcher, policy: &RetryPolicy) -> Source {
        match mirror {
            Mirror::Http(base) => Source::Http { base: base.clone(), fetcher: fetcher.clone(), policy: policy.clone() },
            Mirror::Dir(dir) => Source::Dir(dir.clone()),
        }
    }

    /// The key under which per-mirror state (ETags) is stored.
    pub fn key(&self) -> String {
        match self {
            Source::Http { base, .. } => base.to_string(),
            Source::Dir(d) => d.display().to_string(),
        }
    }

    /// False for a directory mirror that is not there right now (stick not plugged in).
    pub fn is_present(&self) -> bool {
        match self {
            Source::Http { .. } => true,
            Source::Dir(d) => d.is_dir(),
        }
    }

    fn url(base: &Url, rel: &str) -> Result<Url, Failure> {
        base.join(rel).map_err(|e| Failure::new(Reason::Malformed, format!("{base}{rel}: {e}")))
    }

    /// A small document, `None` when absent. At most `cap` bytes.
    pub async fn get_optional(&self, rel: &str, cap: usize) -> Result<Option<Vec<u8>>, Failure> {
        match self {
            Source::Http { base, fetcher, policy } => {
                let url = Self::url(base, rel)?;
                Ok(crate::fetch::with_backoff(policy, rel, || fetcher.get_optional(&url, cap)).await?)
            }
            Source::Dir(dir) => read_capped(dir.join(rel), cap),
        }
    }

    /// A small document fetched conditionally on `etag`.
    pub async fn get_conditional(&self, rel: &str, etag: Option<&str>, cap: usize) -> Result<Conditional, Failure> {
        match self {
            Source::Http { base, fetcher, policy } => {
                let url = Self::url(base, rel)?;
                Ok(crate::fetch::with_backoff(policy, rel, || fetcher.get_conditional(&url, etag, cap)).await?)
            }
            Source::Dir(dir) => match read_capped(dir.join(rel), cap)? {
                Some(bytes) => Ok(Conditional::Body { bytes, etag: None }),
                None => Err(Failure::new(Reason::Io, format!("{} has no {rel}", dir.display()))),
            },
        }
    }

    /// One attempt at the payload region `[resume.start, resume.start + size)` of `rel`,
    /// resuming at `resume.offset`. Returns the bytes that came over the wire.
    pub async fn download(
        &self,
        rel: &str,
        size: u64,
        resume: Resume,
        sink: &mut dyn ChunkSink,
    ) -> Result<u64, FetchError> {
        match self {
            Source::Http { base, fetcher, .. } => {
                let url = Self::url(base, rel)?;
                fetcher.download(&url, size, resume, sink).await.map(|o| o.bytes_received)
            }
            Source::Dir(dir) => copy_region(dir.join(rel), resume.start, size, resume.offset, sink),
        }
    }
}

fn read_capped(path: PathBuf, cap: usize) -> Result<Option<Vec<u8>>, Failure> {
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Failure::new(Reason::Io, format!("{}: {e}", path.display()))),
    };
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(Reason::Io, format!("{}: {e}", path.display())))?;
    if bytes.len() > cap {
        return Err(Failure::new(Reason::SizeExceeded, format!("{} is larger than {cap} bytes", path.display())));
    }
    Ok(Some(bytes))
}

/// Copies a file region into the sink in 1 MiB pieces, refusing anything past `size`.
fn copy_region(
    path: PathBuf,
    start: u64,
    size: u64,
    mut offset: u64,
    sink: &mut dyn ChunkSink,
) -> Result<u64, FetchError> {
    let io = |e: std::io::Error| FetchError::Sink(Failure::new(Reason::Io, format!("{}: {e}", path.display())));
    let mut file = std::fs::File::open(&path).map_err(io)?;
    file.seek(SeekFrom::Start(start + offset)).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0;
    while offset < size {
        let want = (size - offset).min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Err(FetchError::Sink(Failure::new(
                Reason::DigestMismatch,
                format!("{} ends before the signed payload size", path.display()),
            )));
        }
        sink.write(offset, &buf[..n])?;
        offset += n as u64;
        copied += n as u64;
    }
    if file.read(&mut [0u8; 1]).map_err(io)? != 0 {
        return Err(FetchError::Sink(Failure::new(
            Reason::SizeExceeded,
            format!("{} is longer than its signed payload size", path.display()),
        )));
    }
    Ok(copied)
}
