//! The state lock: one apply at a time per state directory, whichever process (daemon,
//! `ferry-agent import` from a shell, the USB unit) wants it. An advisory `flock` on
//! `<state_dir>/lock`, released by the kernel when the holder dies, so a `kill -9` never
//! leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::failure::Failure;
use ferry_proto::Reason;

/// Held while the state directory is being changed.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, waiting up to `wait` for another holder to finish.
    pub fn acquire(state_dir: &Path, wait: Duration) -> Result<StateLock, Failure> {
        let path = state_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Failure::new(Reason::Io, format!("opening {}: {e}", path.display())))?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(StateLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= wait {
                        return Err(Failure::new(
                            Reason::Io,
                            format!(
                                "another ferry-agent holds {} (an apply is running); try again later",
                                path.display()
                            ),
                        ));
                    }
                    if !told {
                        tracing::info!(lock = %path.display(), "waiting for another ferry-agent to finish");
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Failure::new(Reason::Io, format!("locking {}: {e}", path.display())))
                }
            }
        }
    }
}
