//! Payload hashing throughput: Ferry's SHA-256 (`ferry_proto::digest::DigestWriter`, the
//! hasher `ferry-agent` verifies payloads with, in this binary's release build) against
//! `sha256sum` on the same file, both reading it from the page cache.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_proto::digest::DigestWriter;

use crate::rng::Rng;
use crate::util;

/// Medians of both, and the file size.
#[derive(Debug)]
pub struct Hashing {
    /// Bytes hashed.
    pub bytes: u64,
    /// Ferry's hasher, per run.
    pub ferry: Vec<Duration>,
    /// `sha256sum`, whole process, per run.
    pub sha256sum: Vec<Duration>,
    /// Whether this binary was built with optimisations.
    pub optimised: bool,
}

/// Writes `mib` MiB of random bytes to `file` and hashes it `runs` times with each.
pub fn measure(file: &Path, mib: usize, runs: usize) -> Result<Hashing> {
    let mut rng = Rng::new(9);
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
        for _ in 0..mib {
            out.write_all(&rng.bytes(1 << 20))?;
        }
        out.flush()?;
    }
    let bytes = std::fs::metadata(file)?.len();
    // Warm the page cache so both read memory, not the disk.
    ferry_hash(file)?;
    let mut result = Hashing { bytes, ferry: Vec::new(), sha256sum: Vec::new(), optimised: !cfg!(debug_assertions) };
    for _ in 0..runs {
        let started = Instant::now();
        let ours = ferry_hash(file)?;
        result.ferry.push(started.elapsed());
        let started = Instant::now();
        let out = util::output(Command::new("sha256sum").arg(file))?;
        result.sha256sum.push(started.elapsed());
        if !out.starts_with(&ours) {
            bail!("sha256sum says {} but Ferry's hasher {ours}", out.split_whitespace().next().unwrap_or(""));
        }
    }
    std::fs::remove_file(file)?;
    Ok(result)
}

/// The file's digest, read in 64 KiB blocks.
fn ferry_hash(file: &Path) -> Result<String> {
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut hash = DigestWriter::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hash.finish().to_hex())
}
