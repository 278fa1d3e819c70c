//! Writing a [`ValidatedTree`] into an empty directory, durably (DESIGN "Apply", step 4).
//!
//! Files get the blob's raw bytes, as stored: no `.gitattributes` filter (eol, ident,
//! working-tree-encoding, drivers) ever runs. That is why this module writes the tree itself
//! instead of calling `gix_worktree_state::checkout`: even with options built from plumbing,
//! gix's checkout reads `.gitattributes` from the index it checks out
//! (`State::id_mappings_from_index`) and its filter pipeline then applies `text eol=crlf`,
//! `ident` and `working-tree-encoding`, with no switch to turn attributes off (measured:
//! a file with `* text eol=crlf` came out two bytes longer). Note that `git archive` applies
//! those filters too; a slot matches `git archive` only for trees without such attributes.
//!
//! Directories and symlinks are made in path order (a directory before its contents), then
//! the files up to 4 MiB on up to four threads, each with its own object-store handle
//! (10,034 files, 204 MB: 0.68–0.84 s instead of 0.97–1.40 s on one thread, 2 cores), then
//! the larger ones one at a time. A blob stored whole streams out of its pack through a 64 KiB
//! buffer ([`PackReader`]); only one stored as a delta is read whole first.
//! Files are created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`), so a checkout can never write through a link
//! or over anything already there; validation guarantees no entry lies below a symlink.
//! Files get exactly 0644 or 0755 and directories 0755, whatever the umask. Nothing is
//! fsynced file by file: once everything is written, one `syncfs(2)` on `dest` makes the
//! whole filesystem durable, data and directory entries alike, and reports any writeback
//! error since the checkout began (Linux ≥ 5.8). That is what OSTree does too; an fsync per
//! file was 82 % of a 13,891-file checkout's syscall time (BENCHMARKS.md, "Time to apply").
//!
//! On error `dest` may hold a partial checkout: the caller empties the slot before retrying.

use std::ffi::OsStr;
use std::fs::{DirBuilder, File, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gix_object::bstr::ByteSlice;

use super::error::GitError;
use super::pack_reader::PackReader;
use super::tree::{Entry, EntryKind, ValidatedTree};
use super::{rel_path, ObjectStore};

/// What a checkout or an in-place update wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckoutStats {
    /// Regular files written.
    pub files: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Directories created (`dest` not counted).
    pub dirs: u64,
    /// Bytes written to regular files.
    pub bytes: u64,
    /// Entries of the previous tree removed (an in-place update only; a directory counts once).
    pub removed: u64,
}

/// Checks out `tree` into `dest`, which must be an existing, empty directory (not a
/// symlink). Raw blob bytes, modes 0644/0755, symlinks as symlinks; everything durable (one
/// `syncfs`) before it returns.
pub fn checkout(store: &ObjectStore, tree: &ValidatedTree, dest: &Path) -> Result<CheckoutStats, GitError> {
    ensure_empty_dir(dest)?;
    let mut writer = Writer::new(store, dest);
    for entry in tree.entries() {
        writer.create(entry)?;
    }
    let stats = writer.finish()?;
    tracing::debug!(tree = %tree.id(), dest = %dest.display(), files = stats.files, bytes = stats.bytes, "checked out");
    Ok(stats)
}

/// Most threads writing files at once: file writing is mostly system time (page cache
/// copies, inode allocation), which spreads over cores; more than four gains little on a
/// device and costs a blob buffer each.
const MAX_WRITERS: usize = 4;

/// Largest file written alongside others; larger ones are written one at a time, so that
/// parallel writing adds at most `MAX_WRITERS` × 4 MiB of buffers for blobs stored as deltas.
const MAX_PARALLEL_FILE: u64 = 4 << 20;

/// Creates tree entries under a slot directory and makes them durable: the part a full
/// checkout and an in-place update ([`super::update`]) share. Directories and symlinks are
/// made at once, in path order; files are collected and written by [`Writer::finish`] on
/// up to [`MAX_WRITERS`] threads, once every directory exists.
pub(super) struct Writer<'a> {
    store: &'a ObjectStore,
    dest: &'a Path,
    stats: CheckoutStats,
    dirs: Vec<PathBuf>,
    files: Vec<FileToWrite<'a>>,
}

/// A regular file of the tree, collected by [`Writer::create`] and written by
/// [`Writer::finish`].
struct FileToWrite<'a> {
    entry: &'a Entry,
    executable: bool,
    size: u64,
}

impl<'a> Writer<'a> {
    pub(super) fn new(store: &'a ObjectStore, dest: &'a Path) -> Self {
        Writer { store, dest, stats: CheckoutStats::default(), dirs: Vec::new(), files: Vec::new() }
    }

    /// Creates `entry` under `dest` (a file: later, in [`Writer::finish`]); nothing may exist
    /// at its path yet, and its parent directory must (entries come in path order).
    pub(super) fn create(&mut self, entry: &'a Entry) -> Result<(), GitError> {
        let path = self.dest.join(rel_path(entry.path.as_bstr()));
        let io = |e| GitError::io(&path, e);
        match &entry.kind {
            EntryKind::Dir => {
                DirBuilder::new().mode(0o755).create(&path).map_err(io)?;
                self.stats.dirs += 1;
                self.dirs.push(path);
            }
            EntryKind::File { executable, size } => {
                self.files.push(FileToWrite { entry, executable: *executable, size: *size });
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).map_err(io)?;
                self.stats.symlinks += 1;
            }
        }
        Ok(())
    }

    /// Writes the collected files: those up to [`MAX_PARALLEL_FILE`] bytes on up to
    /// [`MAX_WRITERS`] threads, then the larger ones one at a time, so the buffers of blobs
    /// stored as deltas together hold at most the largest of them plus a few small ones.
    fn write_files(&mut self) -> Result<(), GitError> {
        let files = std::mem::take(&mut self.files);
        let (small, large): (Vec<FileToWrite>, Vec<FileToWrite>) =
            files.into_iter().partition(|f| f.size <= MAX_PARALLEL_FILE);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WRITERS);
        for (list, threads) in [(small, threads), (large, 1)] {
            let (count, bytes) = write_files_on(self.store, self.dest, &list, threads)?;
            self.stats.files += count;
            self.stats.bytes += bytes;
        }
        Ok(())
    }

    /// Counts an entry removed by the caller.
    pub(super) fn count_removed(&mut self) {
        self.stats.removed += 1;
    }

    /// Gives the new directories exactly 0755, makes the whole file system durable with one
    /// `syncfs(2)`, then waits for the file-system clock to pass the present, so that anything
    /// changed in the slot from now on gets a later ctime than everything written here (what
    /// [`super::check_intact`] relies on; the slot record is written after this returns).
    pub(super) fn finish(mut self) -> Result<CheckoutStats, GitError> {
        self.write_files()?;
        set_dir_modes(&self.dirs)?;
        let root = File::open(self.dest).map_err(|e| GitError::io(self.dest, e))?;
        rustix::fs::syncfs(&root).map_err(|e| GitError::io(self.dest, e.into()))?;
        wait_for_file_clock_to_pass_now();
        Ok(self.stats)
    }
}

/// Writes `files` under `dest` on up to `threads` threads (fewer for short lists), each
/// taking the next file from a shared counter with its own object-store handle and blob
/// buffer; the first error stops the others. Returns the files and bytes written.
fn write_files_on(
    store: &ObjectStore,
    dest: &Path,
    files: &[FileToWrite],
    threads: usize,
) -> Result<(u64, u64), GitError> {
    let threads = threads.min(files.len() / 16).max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = |store: &ObjectStore| -> Result<(u64, u64), GitError> {
        let (mut count, mut bytes, mut buf) = (0, 0, Vec::new());
        let mut reader = PackReader::new(store);
        while !failed.load(Ordering::Relaxed) {
            let Some(entry) = files.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
            match write_file(store, &mut reader, dest, entry, &mut buf) {
                Ok(n) => (count, bytes) = (count + 1, bytes + n),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok((count, bytes))
    };
    if threads == 1 {
        return work(store);
    }
    let results: Vec<Result<(u64, u64), GitError>> = std::thread::scope(|scope| {
        let spawned: Vec<_> = (0..threads)
            .map(|_| {
                let store = store.clone();
                scope.spawn(move || work(&store))
            })
            .collect();
        spawned.into_iter().map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    results.into_iter().try_fold((0, 0), |(c, b), r| r.map(|(count, bytes)| (c + count, b + bytes)))
}

/// Writes one regular file exclusively (never through a link, never over anything) with the
/// blob's raw bytes and mode 0644 or 0755; returns the bytes written. A blob stored whole
/// in a pack streams from it ([`PackReader`]); only a delta's or a loose object's is read
/// into memory.
fn write_file(
    store: &ObjectStore,
    reader: &mut PackReader,
    dest: &Path,
    file: &FileToWrite,
    buf: &mut Vec<u8>,
) -> Result<u64, GitError> {
    let FileToWrite { entry, executable, size } = *file;
    let path = dest.join(rel_path(entry.path.as_bstr()));
    let io = |e| GitError::io(&path, e);
    let mode = if executable { 0o755 } else { 0o644 };
    let mut file = gix_fs::open_options_no_follow().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
    if !reader.copy_blob(&entry.id, size, &mut file, &path)? {
        let data = store.read_object(&entry.id, gix_object::Kind::Blob, size, Some(entry.path.as_bstr()), buf)?;
        file.write_all(data).map_err(io)?;
    }
    file.set_permissions(Permissions::from_mode(mode)).map_err(io)?;
    Ok(size)
}

/// Returns once `CLOCK_REALTIME_COARSE`, the clock new file timestamps come from, has
/// passed the precise time of the call. Every timestamp given so far (coarse, or precise
/// where the kernel uses multigrain timestamps) is then strictly earlier than any given
/// from now on. Waiting for the coarse clock to change once is not enough: on a tickless
/// kernel it can lag the precise clock by more than a tick (measured here: 5.6 ms behind a
/// precise directory ctime). Typically one to a few milliseconds.
fn wait_for_file_clock_to_pass_now() {
    use rustix::time::{clock_gettime, ClockId};
    let now = clock_gettime(ClockId::Realtime);
    while clock_gettime(ClockId::RealtimeCoarse) <= now {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn ensure_empty_dir(dest: &Path) -> Result<(), GitError> {
    let not_empty = || GitError::DestinationNotEmpty { path: dest.to_owned() };
    let meta = std::fs::symlink_metadata(dest).map_err(|e| GitError::io(dest, e))?;
    if !meta.is_dir() {
        return Err(not_empty());
    }
    let mut listing = std::fs::read_dir(dest).map_err(|e| GitError::io(dest, e))?;
    match listing.next() {
        None => Ok(()),
        Some(_) => Err(not_empty()),
    }
}

/// Gives `dirs` exactly 0755, whatever the umask made of them.
fn set_dir_modes(dirs: &[PathBuf]) -> Result<(), GitError> {
    for dir in dirs {
        std::fs::set_permissions(dir, Permissions::from_mode(0o755)).map_err(|e| GitError::io(dir, e))?;
    }
    Ok(())
}
