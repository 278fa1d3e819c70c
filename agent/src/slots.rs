//! The two A/B slots under the state directory and the `current` link that picks one.
//!
//! ```text
//! <state_dir>/slots/a        a full checkout plus its `.ferry-slot` record
//! <state_dir>/slots/b        the other one
//! <state_dir>/current        relative symlink: `slots/a` or `slots/b`
//! ```
//!
//! `current` is the truth about what runs. It is only ever replaced by `rename(2)` of a
//! freshly made link over it, so a reader (or a crash, or a power cut once the directory is
//! fsynced) sees the old target or the new one, never a missing link. A slot is switched to
//! only once its `.ferry-slot` record exists, and the record is written (atomically) after
//! the checkout has been fsynced: "has a record" means "is a complete tree". The active slot
//! is never emptied.
//!
//! Emptying a slot must not follow symbolic links: a stale slot holds whatever tree was
//! checked out into it, links included, and a crash may have left it half-written. So the
//! slot directory itself is renamed to `slots/.trash-<id>-<nonce>` (atomic, never follows a
//! link), a fresh empty directory takes its name, and the trash is removed with
//! `remove_dir_all`, which removes links rather than following them. Trash a crash leaves
//! behind is cleared by [`Slots::remove_stray_temporaries`] on start.
//!
//! Failpoints (compiled in with the agent's `failpoints` feature, see the `fail` crate;
//! each supports `panic`, `sleep`, `pause` and `return`, the latter as an injected error):
//!
//! * `slots::prepare::after-trash-rename`: the old slot is renamed to trash, the fresh
//!   directory not yet made;
//! * `slots::record::before-rename`: the record's temporary is written and fsynced, not yet
//!   renamed to `.ferry-slot`;
//! * `slots::switch::before-rename`: the new `current.tmp-*` link exists, `current` is
//!   untouched;
//! * `slots::switch::after-rename`: `current` points at the new slot, the state directory
//!   is not yet fsynced.
//!
//! Nothing here talks to SQLite: journalling a switch is the caller's step 5.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Name of the record file at the root of each slot.
pub const RECORD_FILE_NAME: &str = ".ferry-slot";

/// Name of the directory holding the slots, inside the state directory.
pub const SLOTS_DIR_NAME: &str = "slots";

/// Name of the link to the active slot, inside the state directory.
pub const CURRENT_LINK_NAME: &str = "current";

/// Format version written into every record.
const RECORD_FORMAT: u32 = 1;

/// A record is a few hundred bytes; anything larger is not one of ours.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// How many fresh names are tried for the `current.tmp-*` link.
const MAX_LINK_ATTEMPTS: u32 = 16;

const CURRENT_TEMP_PREFIX: &str = "current.tmp-";
const TRASH_PREFIX: &str = ".trash-";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotId {
    /// `slots/a`
    A,
    /// `slots/b`
    B,
}

impl SlotId {
    /// Both slots, A first.
    pub const ALL: [SlotId; 2] = [SlotId::A, SlotId::B];

    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    /// The directory name under `slots/`: `a` or `b`.
    pub fn as_dir_name(self) -> &'static str {
        match self {
            SlotId::A => "a",
            SlotId::B => "b",
        }
    }

    /// The target `current` holds when this slot is active: `slots/a` or `slots/b`.
    fn link_target(self) -> PathBuf {
        Path::new(SLOTS_DIR_NAME).join(self.as_dir_name())
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_dir_name())
    }
}

impl FromStr for SlotId {
    type Err = UnknownSlot;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" | "A" => Ok(SlotId::A),
            "b" | "B" => Ok(SlotId::B),
            _ => Err(UnknownSlot(s.to_owned())),
        }
    }
}

/// A slot name other than `a` or `b`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown slot `{0}`: expected `a` or `b`")]
pub struct UnknownSlot(pub String);

/// What a slot holds, written to its `.ferry-slot` once the checkout is complete and durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Release number on the channel.
    pub release: u64,
    /// Snapshot commit id (hex).
    pub commit: String,
    /// Tree id of the snapshot (hex).
    pub tree: String,
    /// Channel the release came from.
    pub channel: String,
    /// When the record was written, seconds since the Unix epoch.
    pub written_at: u64,
}

/// On-disk shape of the record: a format version, then the record as a `[slot]` table.
/// Unknown keys are ignored so that an agent downgraded after an upgrade can still read a
/// record; an incompatible change bumps `format`.
#[derive(Serialize, Deserialize)]
struct RecordFile {
    format: u32,
    slot: SlotRecord,
}

/// Just the format version, read before the rest so a newer format gets a clear error.
#[derive(Deserialize)]
struct RecordFormat {
    format: u32,
}

/// Whether a name at the root of a release tree would collide with the slot's own files.
/// Tree validation (apply step 3) must refuse such a tree.
pub fn is_reserved_root_name(name: &str) -> bool {
    name == RECORD_FILE_NAME || fsutil::is_atomic_temporary_of(RECORD_FILE_NAME, name)
}

/// A failure managing the slots or the `current` link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// A file-system call failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "rename".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `current` exists but is not a symbolic link.
    #[error("{} is not a symbolic link; refusing to guess the active slot", path.display())]
    CurrentNotALink {
        /// The `current` path.
        path: PathBuf,
    },
    /// `current` points somewhere other than `slots/a` or `slots/b`.
    #[error("{} points at {}, expected slots/a or slots/b", path.display(), target.display())]
    UnexpectedCurrent {
        /// The `current` path.
        path: PathBuf,
        /// What it points at.
        target: PathBuf,
    },
    /// Refused to empty the slot `current` points at.
    #[error("refusing to empty slot {slot}: it is the active slot")]
    SlotIsCurrent {
        /// The active slot.
        slot: SlotId,
    },
    /// Refused to switch to a slot without a record (an incomplete checkout).
    #[error("refusing to switch to slot {slot}: {} has no {RECORD_FILE_NAME} record", path.display())]
    SlotIncomplete {
        /// The slot.
        slot: SlotId,
        /// The slot's directory.
        path: PathBuf,
    },
    /// A `.ferry-slot` record that does not parse.
    #[error("bad slot record {}: {message}", path.display())]
    BadRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong, one line.
        message: String,
    },
    /// An error injected at a failpoint (tests only).
    #[error("failpoint {point} fired")]
    Injected {
        /// The failpoint name.
        point: &'static str,
    },
}

impl SlotError {
    fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> SlotError {
        let path = path.into();
        move |source| SlotError::Io { action, path, source }
    }

    /// The typed reason reported for this failure: always a local problem.
    pub fn reason(&self) -> ferry_proto::Reason {
        ferry_proto::Reason::Io
    }
}

/// The slots of one state directory. Holds no state of its own: every call reads the disk.
#[derive(Debug, Clone)]
pub struct Slots {
    state_dir: PathBuf,
}

impl Slots {
    /// Opens the slots under `state_dir`, creating `state_dir/slots/` if needed.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<Slots, SlotError> {
        let slots = Slots { state_dir: state_dir.into() };
        let dir = slots.slots_dir();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(SlotError::io("create", &dir))?;
            fsutil::fsync_dir(&slots.state_dir).map_err(SlotError::io("fsync", &slots.state_dir))?;
        }
        Ok(slots)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `<state_dir>/slots`.
    pub fn slots_dir(&self) -> PathBuf {
        self.state_dir.join(SLOTS_DIR_NAME)
    }

    /// `<state_dir>/current`.
    pub fn current_link(&self) -> PathBuf {
        self.state_dir.join(CURRENT_LINK_NAME)
    }

    /// `<state_dir>/slots/<id>`.
    pub fn slot_path(&self, id: SlotId) -> PathBuf {
        self.slots_dir().join(id.as_dir_name())
    }

    /// The active slot, read from the `current` link; `None` when there is no link yet
    /// (a fresh device). A link that is not one of ours is an error, never a guess.
    pub fn current(&self) -> Result<Option<SlotId>, SlotError> {
        let link = self.current_link();
        let target = match fs::read_link(&link) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Err(SlotError::CurrentNotALink { path: link }),
            Err(e) => return Err(SlotError::io("read link", link)(e)),
        };
        SlotId::ALL
            .into_iter()
            .find(|id| target == id.link_target())
            .map(Some)
            .ok_or(SlotError::UnexpectedCurrent { path: link, target })
    }

    /// The slot to apply into: the one `current` does not point at, A when there is none.
    pub fn inactive(&self) -> Result<SlotId, SlotError> {
        Ok(self.current()?.map_or(SlotId::A, SlotId::other))
    }

    /// Empties slot `id` and recreates it as an empty directory, without following any
    /// symbolic link inside it (or the slot itself being one), and returns its path.
    /// Refuses the active slot.
    pub fn prepare_empty(&self, id: SlotId) -> Result<PathBuf, SlotError> {
        if self.current()? == Some(id) {
            return Err(SlotError::SlotIsCurrent { slot: id });
        }
        let slots_dir = self.slots_dir();
        let path = self.slot_path(id);

        // 1. Move whatever holds the slot's name out of the way, atomically.
        let trash = match fs::symlink_metadata(&path) {
            Ok(_) => {
                let trash = slots_dir.join(format!("{TRASH_PREFIX}{id}-{}", fsutil::nonce()));
                fs::rename(&path, &trash).map_err(SlotError::io("rename", &path))?;
                fail::fail_point!("slots::prepare::after-trash-rename", |_| {
                    Err(SlotError::Injected { point: "slots::prepare::after-trash-rename" })
                });
                Some(trash)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(SlotError::io("inspect", &path)(e)),
        };

        // 2. A fresh, empty directory under the slot's name, durably.
        fs::create_dir(&path).map_err(SlotError::io("create", &path))?;
        fsutil::fsync_dir(&slots_dir).map_err(SlotError::io("fsync", &slots_dir))?;

        // 3. Drop the old contents. Failing here costs only disk space until the next
        // start's cleanup, so the slot is still handed out.
        if let Some(trash) = trash {
            if let Err(e) = remove_without_following(&trash) {
                tracing::warn!(slot = %id, path = %trash.display(), error = %e,
                    "could not remove the old slot contents; will retry on next start");
            }
        }
        tracing::debug!(slot = %id, "slot emptied");
        Ok(path)
    }

    /// Writes slot `id`'s record atomically and durably (temporary, fsync, rename, fsync).
    pub fn write_record(&self, id: SlotId, record: &SlotRecord) -> Result<(), SlotError> {
        let path = self.slot_path(id).join(RECORD_FILE_NAME);
        let file = RecordFile { format: RECORD_FORMAT, slot: record.clone() };
        let text =
            toml::to_string(&file).map_err(|e| SlotError::BadRecord { path: path.clone(), message: e.to_string() })?;
        fsutil::write_file_atomically_with(&path, text.as_bytes(), || {
            fail::fail_point!("slots::record::before-rename", |_| {
                Err(io::Error::other("failpoint slots::record::before-rename fired"))
            });
            Ok(())
        })
        .map_err(SlotError::io("write", &path))
    }

    /// Reads slot `id`'s record; `None` when the slot or its record does not exist.
    pub fn read_record(&self, id: SlotId) -> Result<Option<SlotRecord>, SlotError> {
        let path = self.slot_path(id).join(RECORD_FILE_NAME);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SlotError::io("open", path)(e)),
        };
        let mut text = String::new();
        file.take(MAX_RECORD_BYTES + 1).read_to_string(&mut text).map_err(SlotError::io("read", &path))?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            let message = format!("larger than {MAX_RECORD_BYTES} bytes");
            return Err(SlotError::BadRecord { path, message });
        }
        let bad =
            |e: toml::de::Error| SlotError::BadRecord { path: path.clone(), message: e.message().replace('\n', "; ") };
        let RecordFormat { format } = toml::from_str(&text).map_err(bad)?;
        if format != RECORD_FORMAT {
            let message = format!("format {format} is not {RECORD_FORMAT}");
            return Err(SlotError::BadRecord { path, message });
        }
        let file: RecordFile = toml::from_str(&text).map_err(bad)?;
        Ok(Some(file.slot))
    }

    /// The status-change time (ctime) of slot `id`'s record: the instant after which
    /// nothing in the slot may have changed for it to be updated in place
    /// ([`crate::git::check_intact`]). `None` when there is no record.
    pub fn record_ctime(&self, id: SlotId) -> Result<Option<crate::git::Ctime>, SlotError> {
        let path = self.slot_path(id).join(RECORD_FILE_NAME);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(crate::git::ctime(&meta))),
            Ok(_) => Err(SlotError::BadRecord { path, message: "not a regular file".into() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SlotError::io("inspect", path)(e)),
        }
    }

    /// Atomically points `current` at slot `id`: makes `current.tmp-<nonce>` -> `slots/<id>`,
    /// renames it over `current` and fsyncs the state directory. The slot must hold a record.
    pub fn switch_to(&self, id: SlotId) -> Result<(), SlotError> {
        let slot_path = self.slot_path(id);
        if self.read_record(id)?.is_none() {
            return Err(SlotError::SlotIncomplete { slot: id, path: slot_path });
        }
        let link = self.current_link();
        let temp = self.make_temp_link(id)?;

        if let Err(e) = rename_link(&temp, &link) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        fail::fail_point!("slots::switch::after-rename", |_| {
            Err(SlotError::Injected { point: "slots::switch::after-rename" })
        });
        fsutil::fsync_dir(&self.state_dir).map_err(SlotError::io("fsync", &self.state_dir))?;
        tracing::info!(slot = %id, "current switched");
        Ok(())
    }

    /// Removes a slot's record, so the slot no longer counts as a complete release: used
    /// on the slot of a release that failed its trial, which must never become a rollback
    /// target. Refuses the active slot. Fsyncs the slot directory.
    pub fn discard_record(&self, id: SlotId) -> Result<(), SlotError> {
        if self.current()? == Some(id) {
            return Err(SlotError::SlotIsCurrent { slot: id });
        }
        let dir = self.slot_path(id);
        let record = dir.join(RECORD_FILE_NAME);
        match fs::remove_file(&record) {
            Ok(()) => fsutil::fsync_dir(&dir).map_err(SlotError::io("fsync", &dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SlotError::io("remove", &record)(e)),
        }
        Ok(())
    }

    /// Removes slot `id` altogether, without following any link in it (or the slot itself
    /// being one): the half-written slot of a failed apply, whose space a full disk needs
    /// back before anything else can be written. No rename and no new directory, so it
    /// needs no free space; a crash midway leaves a slot without a record, which is
    /// emptied before its next use anyway. Refuses the active slot. Absent is fine.
    pub fn remove(&self, id: SlotId) -> Result<(), SlotError> {
        if self.current()? == Some(id) {
            return Err(SlotError::SlotIsCurrent { slot: id });
        }
        let path = self.slot_path(id);
        remove_without_following(&path).map_err(SlotError::io("remove", &path))?;
        let slots_dir = self.slots_dir();
        fsutil::fsync_dir(&slots_dir).map_err(SlotError::io("fsync", &slots_dir))?;
        tracing::debug!(slot = %id, "slot removed");
        Ok(())
    }

    /// Removes `current` (a device back to "no release"), used when the very first
    /// release fails its trial and there is no slot to switch back to. Fsyncs the state
    /// directory. Absent `current` is fine.
    pub fn clear_current(&self) -> Result<(), SlotError> {
        let link = self.current_link();
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SlotError::io("remove", &link)(e)),
        }
        fsutil::fsync_dir(&self.state_dir).map_err(SlotError::io("fsync", &self.state_dir))?;
        tracing::info!("current removed");
        Ok(())
    }

    fn make_temp_link(&self, id: SlotId) -> Result<PathBuf, SlotError> {
        let target = id.link_target();
        let mut attempt = 0;
        loop {
            let temp = self.state_dir.join(format!("{CURRENT_TEMP_PREFIX}{}", fsutil::nonce()));
            match symlink(&target, &temp) {
                Ok(()) => return Ok(temp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < MAX_LINK_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(SlotError::io("create link", temp)(e)),
            }
        }
    }

    /// Removes what an interrupted operation leaves behind: `current.tmp-*` links,
    /// `slots/.trash-*` and record temporaries inside the slots. Call on start, before any
    /// apply. Returns how many entries were removed.
    pub fn remove_stray_temporaries(&self) -> Result<usize, SlotError> {
        let mut removed = 0;
        removed += remove_entries(&self.state_dir, |name| name.starts_with(CURRENT_TEMP_PREFIX))?;
        removed += remove_entries(&self.slots_dir(), |name| name.starts_with(TRASH_PREFIX))?;
        for id in SlotId::ALL {
            let slot = self.slot_path(id);
            // Only a real directory: never list (and delete in) a place a link points at.
            if fs::symlink_metadata(&slot).is_ok_and(|m| m.is_dir()) {
                removed += fsutil::remove_atomic_temporaries(&slot, RECORD_FILE_NAME)
                    .map_err(SlotError::io("clean", &slot))?;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed stray temporaries");
        }
        Ok(removed)
    }
}

/// Step 2 of a switch: the new link replaces `current` in one `rename(2)`.
fn rename_link(temp: &Path, link: &Path) -> Result<(), SlotError> {
    fail::fail_point!("slots::switch::before-rename", |_| {
        Err(SlotError::Injected { point: "slots::switch::before-rename" })
    });
    fs::rename(temp, link).map_err(SlotError::io("rename", temp))
}

/// Removes the entries of `dir` whose UTF-8 name matches, without following links.
fn remove_entries(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<usize, SlotError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(SlotError::io("list", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(SlotError::io("list", dir))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(&matches) {
            let path = entry.path();
            remove_without_following(&path).map_err(SlotError::io("remove", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes `path`, a directory tree or a single entry, never following a symbolic link.
fn remove_without_following(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn record(release: u64) -> SlotRecord {
        SlotRecord {
            release,
            commit: "3f1c0e4b9a7d2c5e8f6a1b0c9d8e7f6a5b4c3d2e".into(),
            tree: "8d4e2b1a0f9c8e7d6c5b4a392817f6e5d4c3b2a1".into(),
            channel: "stable".into(),
            written_at: 1_700_000_000,
        }
    }

    fn ready_slot(slots: &Slots, id: SlotId, release: u64) {
        slots.prepare_empty(id).unwrap();
        slots.write_record(id, &record(release)).unwrap();
    }

    #[test]
    fn fresh_state_dir_has_no_current_and_applies_into_a() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path().join("state")).unwrap();
        assert!(slots.slots_dir().is_dir());
        assert_eq!(slots.current().unwrap(), None);
        assert_eq!(slots.inactive().unwrap(), SlotId::A);
    }

    #[test]
    fn switch_leaves_current_a_relative_link_to_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path()).unwrap();
        ready_slot(&slots, SlotId::A, 1);
        slots.switch_to(SlotId::A).unwrap();
        let link = dir.path().join("current");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("slots/a"));
        assert_eq!(slots.current().unwrap(), Some(SlotId::A));
        assert_eq!(slots.inactive().unwrap(), SlotId::B);

        ready_slot(&slots, SlotId::B, 2);
        slots.switch_to(SlotId::B).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("slots/b"));
        assert!(fs::read_to_string(link.join(".ferry-slot")).unwrap().contains("release = 2"));
        assert_eq!(slots.current().unwrap(), Some(SlotId::B));
        assert_eq!(slots.remove_stray_temporaries().unwrap(), 0, "switch leaves no temporaries");
    }

    #[test]
    fn switch_refuses_a_slot_without_record() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path()).unwrap();
        slots.prepare_empty(SlotId::B).unwrap();
        let err = slots.switch_to(SlotId::B).unwrap_err();
        assert!(matches!(err, SlotError::SlotIncomplete { slot: SlotId::B, .. }), "{err}");
        assert_eq!(slots.current().unwrap(), None);
    }

    #[test]
    fn current_is_never_missing_while_switching() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path()).unwrap();
        ready_slot(&slots, SlotId::A, 1);
        ready_slot(&slots, SlotId::B, 2);
        slots.switch_to(SlotId::A).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            let slots = slots.clone();
            std::thread::spawn(move || {
                let (mut reads, mut bad) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match slots.current() {
                        Ok(Some(_)) => {}
                        other => bad.push(format!("{other:?}")),
                    }
                    reads += 1;
                }
                (reads, bad)
            })
        };
        let mut id = SlotId::A;
        for _ in 0..200 {
            id = id.other();
            slots.switch_to(id).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let (reads, bad) = reader.join().unwrap();
        assert!(reads > 0);
        assert!(bad.is_empty(), "reader saw {} bad states, first: {}", bad.len(), bad[0]);
        assert_eq!(slots.current().unwrap(), Some(SlotId::A));
    }

    #[test]
    fn current_pointing_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path()).unwrap();
        symlink("/etc", dir.path().join("current")).unwrap();
        let err = slots.current().unwrap_err();
        assert!(matches!(err, SlotError::UnexpectedCurrent { .. }), "{err}");
        assert!(slots.inactive().is_err());
        assert!(slots.prepare_empty(SlotId::A).is_err(), "no slot is emptied while unsure");

        fs::remove_file(dir.path().join("current")).unwrap();
        fs::create_dir(dir.path().join("current")).unwrap();
        let err = slots.current().unwrap_err();
        assert!(matches!(err, SlotError::CurrentNotALink { .. }), "{err}");
    }

    /// A stale slot may hold links pointing outside it; emptying it must not touch their targets.
    #[test]
    fn prepare_empty_does_not_follow_links_out_of_a_stale_slot() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("tell-tale"), b"still here").unwrap();
        let slots = Slots::open(dir.path().join("state")).unwrap();

        let stale = slots.slot_path(SlotId::B);
        fs::create_dir_all(stale.join("etc/deep")).unwrap();
        fs::write(stale.join("etc/deep/file"), b"old").unwrap();
        symlink(&outside, stale.join("escape")).unwrap();
        symlink(&outside, stale.join("etc/deep/escape")).unwrap();
        symlink(outside.join("tell-tale"), stale.join("file-link")).unwrap();

        let path = slots.prepare_empty(SlotId::B).unwrap();
        assert_eq!(path, stale);
        assert!(fs::symlink_metadata(&path).unwrap().is_dir());
        assert_eq!(fs::read_dir(&path).unwrap().count(), 0);
        assert_eq!(fs::read(outside.join("tell-tale")).unwrap(), b"still here");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "nothing written outside");
        assert_eq!(fs::read_dir(slots.slots_dir()).unwrap().count(), 1, "no trash left");
    }

    /// The slot directory itself replaced by a link: the link goes, its target stays.
    #[test]
    fn prepare_empty_replaces_a_slot_that_is_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("tell-tale"), b"still here").unwrap();
        let slots = Slots::open(dir.path().join("state")).unwrap();
        symlink(&outside, slots.slot_path(SlotId::A)).unwrap();

        let path = slots.prepare_empty(SlotId::A).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().is_dir());
        assert_eq!(fs::read_dir(&path).unwrap().count(), 0);
        assert_eq!(fs::read(outside.join("tell-tale")).unwrap(), b"still here");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn prepare_empty_refuses_the_active_slot() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path()).unwrap();
        ready_slot(&slots, SlotId::A, 1);
        slots.switch_to(SlotId::A).unwrap();
        let err = slots.prepare_empty(SlotId::A).unwrap_err();
        assert!(matches!(err, SlotError::SlotIsCurrent { slot: SlotId::A }), "{err}");
        assert_eq!(slots.read_record(SlotId::A).unwrap(), Some(record(1)));
    }

    #[test]
    fn remove_takes_the_slot_away_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("tell-tale"), b"still here").unwrap();
        let slots = Slots::open(dir.path().join("state")).unwrap();
        ready_slot(&slots, SlotId::A, 1);
        slots.switch_to(SlotId::A).unwrap();
        let half = slots.prepare_empty(SlotId::B).unwrap();
        fs::create_dir_all(half.join("etc/deep")).unwrap();
        fs::write(half.join("etc/deep/file"), b"half written").unwrap();
        symlink(&outside, half.join("etc/escape")).unwrap();

        slots.remove(SlotId::B).unwrap();
        assert!(fs::symlink_metadata(&half).is_err(), "slot b is gone");
        assert_eq!(fs::read(outside.join("tell-tale")).unwrap(), b"still here");
        slots.remove(SlotId::B).unwrap();
        let err = slots.remove(SlotId::A).unwrap_err();
        assert!(matches!(err, SlotError::SlotIsCurrent { slot: SlotId::A }), "{err}");
        assert_eq!(slots.read_record(SlotId::A).unwrap(), Some(record(1)));
        assert_eq!(slots.prepare_empty(SlotId::B).unwrap(), half, "a removed slot is prepared again");
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path()).unwrap();
        assert_eq!(slots.read_record(SlotId::A).unwrap(), None, "no slot yet");
        slots.prepare_empty(SlotId::A).unwrap();
        assert_eq!(slots.read_record(SlotId::A).unwrap(), None, "empty slot");
        slots.write_record(SlotId::A, &record(7)).unwrap();
        assert_eq!(slots.read_record(SlotId::A).unwrap(), Some(record(7)));
        let mut newer = record(8);
        newer.channel = "beta".into();
        slots.write_record(SlotId::A, &newer).unwrap();
        assert_eq!(slots.read_record(SlotId::A).unwrap(), Some(newer.clone()));
        assert_eq!(fs::read_dir(slots.slot_path(SlotId::A)).unwrap().count(), 1);

        // A record from a newer agent of the same format, with a key this one does not know.
        let path = slots.slot_path(SlotId::A).join(RECORD_FILE_NAME);
        let text = fs::read_to_string(&path).unwrap() + "signed_by = \"ops\"\n";
        fs::write(&path, text).unwrap();
        assert_eq!(slots.read_record(SlotId::A).unwrap(), Some(newer));
        assert_eq!(fs::read_dir(slots.slot_path(SlotId::A)).unwrap().count(), 1);
    }

    #[test]
    fn bad_records_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(dir.path()).unwrap();
        let path = slots.prepare_empty(SlotId::B).unwrap().join(RECORD_FILE_NAME);
        fs::write(&path, "format = 1\nrelease = \"x\"\n").unwrap();
        let err = slots.read_record(SlotId::B).unwrap_err().to_string();
        assert!(err.contains(".ferry-slot") && !err.contains('\n'), "{err}");

        fs::write(&path, "format = 1\n[slot]\nrelease = \"x\"\n").unwrap();
        let err = slots.read_record(SlotId::B).unwrap_err().to_string();
        assert!(err.contains(".ferry-slot") && err.contains("u64"), "{err}");

        slots.write_record(SlotId::B, &record(1)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("format = 1\n"), "{text}");
        let text = text.replace("format = 1", "format = 2").replace("[slot]", "[slot-v2]");
        fs::write(&path, text).unwrap();
        let err = slots.read_record(SlotId::B).unwrap_err().to_string();
        assert!(err.contains("format 2"), "{err}");
    }

    #[test]
    fn stray_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("tell-tale"), b"still here").unwrap();
        let state = dir.path().join("state");
        let slots = Slots::open(&state).unwrap();
        ready_slot(&slots, SlotId::A, 1);
        slots.switch_to(SlotId::A).unwrap();

        // What crashes leave: a temp link, a trash dir (holding an escaping link), a record temp.
        symlink("slots/b", state.join("current.tmp-123-0-0")).unwrap();
        let trash = state.join("slots/.trash-b-123-0-0");
        fs::create_dir_all(trash.join("sub")).unwrap();
        symlink(&outside, trash.join("sub/escape")).unwrap();
        fs::write(slots.slot_path(SlotId::A).join(".ferry-slot.123-0-0.tmp"), b"half").unwrap();
        // Not ours: must survive.
        fs::write(slots.slot_path(SlotId::A).join("notes.tmp"), b"user data").unwrap();
        fs::write(state.join("ferry.db"), b"db").unwrap();

        assert_eq!(slots.remove_stray_temporaries().unwrap(), 3);
        assert_eq!(slots.remove_stray_temporaries().unwrap(), 0);
        assert!(!trash.exists());
        assert_eq!(fs::read(outside.join("tell-tale")).unwrap(), b"still here");
        assert!(slots.slot_path(SlotId::A).join("notes.tmp").exists());
        assert!(state.join("ferry.db").exists());
        assert_eq!(slots.current().unwrap(), Some(SlotId::A));
        assert_eq!(slots.read_record(SlotId::A).unwrap(), Some(record(1)));
    }

    #[test]
    fn reserved_root_names() {
        assert!(is_reserved_root_name(".ferry-slot"));
        assert!(is_reserved_root_name(".ferry-slot.1-2-3.tmp"));
        assert!(!is_reserved_root_name("ferry.toml"));
        assert_eq!("b".parse::<SlotId>().unwrap(), SlotId::B);
        assert!("c".parse::<SlotId>().is_err());
        assert_eq!(SlotId::A.other().to_string(), "b");
    }
}
