//! Reports on a USB stick: `ferry-agent export-reports DIR` writes the pending outbox as
//! batch files, and the acknowledgement that comes back on the same stick (written by the
//! operator's `bundler reports import`) removes what the operator stored.
//!
//! Layout on the medium:
//!
//! * `DIR/reports/<device_id>/<first_seq>-<last_seq>.batch`: zstd (level 3) of a signed
//!   [`ferry_proto::report::ReportBatch`] envelope, exactly what an upload sends; written
//!   atomically, so a stick pulled mid-export holds whole files or none.
//! * `DIR/acks/<device_id>.ack`: `{"device_id": "...", "acked": N}`. Applied (records up to
//!   `N` removed) only when `device_id` is this device's; read first by `export-reports` and
//!   by `ferry-agent import DIR`.
//!
//! Exported records stay in the outbox until an acknowledgement (from a later round trip or
//! a network upload) removes them, so a lost stick loses nothing; exporting again writes
//! them again (the receiver skips what it already stored). Batch files fully covered by the
//! acknowledgement are removed from the stick. The ack file is not signed: whoever holds the
//! stick can make the device forget reports (never beyond what it exported), not forge them.
//! `DIR` must exist: a stick that is not mounted must not turn into a directory on the
//! device's own disk.

use std::io::Read;
use std::path::{Path, PathBuf};

use ferry_proto::Reason;

use crate::config::Config;
use crate::failure::Failure;
use crate::identity::Identity;
use crate::outbox::{Ack, BatchPlan, Outbox};
use crate::store::Store;

/// Largest ack file read.
pub const MAX_ACK_FILE: u64 = 64 << 10;

/// What an ack file said, and whether it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckFileOutcome {
    /// No ack file for this device.
    Absent,
    /// The file names another device; ignored.
    OtherDevice {
        /// The file.
        path: PathBuf,
        /// The device it names.
        device_id: String,
    },
    /// Applied.
    Applied {
        /// The file.
        path: PathBuf,
        /// What it did.
        ack: Ack,
    },
}

impl AckFileOutcome {
    /// One line for a person, if there is anything to say.
    pub fn describe(&self) -> Option<String> {
        match self {
            AckFileOutcome::Absent => None,
            AckFileOutcome::OtherDevice { path, device_id } => {
                Some(format!("ignored {}: it acknowledges device {device_id:?}, not this one", path.display()))
            }
            AckFileOutcome::Applied { path, ack } => Some(format!(
                "acknowledged through #{}: removed {} report record(s) ({}){}",
                ack.acked,
                ack.removed,
                path.display(),
                if ack.clamped { "; it named records never exported, so it was lowered" } else { "" }
            )),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct AckFile {
    device_id: String,
    acked: u64,
}

/// `DIR/acks/<device_id>.ack`.
pub fn ack_file_path(dir: &Path, device_id: &str) -> PathBuf {
    dir.join("acks").join(format!("{device_id}.ack"))
}

/// `DIR/reports/<device_id>`.
pub fn reports_dir(dir: &Path, device_id: &str) -> PathBuf {
    dir.join("reports").join(device_id)
}

/// Reads `DIR/acks/<device_id>.ack` and applies it when it names this device.
pub fn apply_ack_file(store: &Store, device_id: &str, dir: &Path) -> Result<AckFileOutcome, Failure> {
    let path = ack_file_path(dir, device_id);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AckFileOutcome::Absent),
        Err(e) => return Err(Failure::new(Reason::Io, format!("{}: {e}", path.display()))),
    };
    let mut text = Vec::new();
    file.take(MAX_ACK_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| Failure::new(Reason::Io, format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_ACK_FILE {
        return Err(Failure::new(
            Reason::SizeExceeded,
            format!("{}: larger than {MAX_ACK_FILE} bytes", path.display()),
        ));
    }
    let ack: AckFile = serde_json::from_slice(&text).map_err(|e| {
        Failure::new(
            Reason::Malformed,
            format!("{}: expected {{\"device_id\": ..., \"acked\": N}}: {e}", path.display()),
        )
    })?;
    if ack.device_id != device_id {
        tracing::warn!(path = %path.display(), named = %ack.device_id, "ack file for another device ignored");
        return Ok(AckFileOutcome::OtherDevice { path, device_id: ack.device_id });
    }
    let applied = Outbox::new(store).acknowledge(ack.acked)?;
    Ok(AckFileOutcome::Applied { path, ack: applied })
}

/// One batch file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The file.
    pub path: PathBuf,
    /// First record's sequence number.
    pub first_seq: u64,
    /// Last record's sequence number.
    pub last_seq: u64,
    /// Records in it.
    pub records: usize,
    /// File size.
    pub bytes: usize,
}

/// `ferry-agent export-reports DIR`: applies the ack file, compacts, then writes every
/// pending record as batch files. Tells `say` what it did.
pub fn export_reports(cfg: &Config, dir: &Path, say: &mut dyn FnMut(String)) -> Result<Vec<Exported>, Failure> {
    if !dir.is_dir() {
        return Err(Failure::new(Reason::Io, format!("{} is not a directory (is the stick mounted?)", dir.display())));
    }
    std::fs::create_dir_all(&cfg.state_dir)?;
    let identity = Identity::load_or_create(&cfg.state_dir)?;
    let store = Store::open(&cfg.state_dir)?;
    match apply_ack_file(&store, &cfg.device_id, dir) {
        Ok(outcome) => outcome.describe().into_iter().for_each(&mut *say),
        Err(f) => say(format!("note: ack file not applied: {f}")),
    }
    let outbox = Outbox::new(&store);
    outbox.compact(cfg.reports.max_outbox_bytes)?;
    let out_dir = reports_dir(dir, &cfg.device_id);
    let removed = remove_acknowledged(&out_dir, outbox.state()?.acked)?;
    if removed > 0 {
        say(format!("removed {removed} acknowledged batch file(s) from {}", out_dir.display()));
    }
    let plan = BatchPlan::new(cfg, identity.key(), &store)?;
    let mut written = Vec::new();
    let mut after = 0;
    while let Some(batch) = outbox.make_batch(after, &plan, written.is_empty())? {
        if written.is_empty() {
            std::fs::create_dir_all(&out_dir)
                .map_err(|e| Failure::new(Reason::Io, format!("creating {}: {e}", out_dir.display())))?;
        }
        let path = out_dir.join(format!("{}-{}.batch", batch.first_seq, batch.last_seq));
        crate::fsutil::write_file_atomically(&path, &batch.body)
            .map_err(|e| Failure::new(Reason::Io, format!("writing {}: {e}", path.display())))?;
        say(format!("wrote {} ({} records, {} bytes)", path.display(), batch.records, batch.body.len()));
        after = batch.last_seq;
        written.push(Exported {
            path,
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            records: batch.records,
            bytes: batch.body.len(),
        });
    }
    if written.is_empty() {
        say("nothing to export: no report is pending".into());
    } else {
        let records: usize = written.iter().map(|e| e.records).sum();
        say(format!(
            "{records} record(s) in {} batch file(s); they stay on this device until acknowledged",
            written.len()
        ));
    }
    Ok(written)
}

/// Removes `<first>-<last>.batch` files in `dir` with `last <= acked`; returns how many.
fn remove_acknowledged(dir: &Path, acked: u64) -> Result<usize, Failure> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Failure::new(Reason::Io, format!("{}: {e}", dir.display()))),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(range) = name.to_str().and_then(|n| n.strip_suffix(".batch")) else { continue };
        let Some(last) = range.split_once('-').and_then(|(_, last)| last.parse::<u64>().ok()) else { continue };
        if last <= acked && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Failure::new(Reason::Io, format!("removing {}: {e}", entry.path().display())))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::BatchPlan;

    fn cfg(state: &Path) -> Config {
        let text = format!(
            "channel = \"stable\"\ntrust_root = \"root.1\"\nstate_dir = \"{}\"\ndevice_id = \"pump-17\"\n",
            state.display()
        );
        Config::parse(&text, Path::new("/etc/ferry/agent.toml")).expect("config")
    }

    #[test]
    fn ack_files_apply_only_to_their_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = cfg(&dir.path().join("state"));
        let id = Identity::load_or_create(&cfg.state_dir).expect("identity");
        let store = Store::open(&cfg.state_dir).expect("store");
        for i in 0..5 {
            store.record_event("fetched", Some(i), None, "ok").expect("event");
        }
        let plan = BatchPlan::new(&cfg, id.key(), &store).expect("plan");
        Outbox::new(&store).make_batch(0, &plan, true).expect("batch").expect("some");
        let stick = dir.path().join("stick");
        std::fs::create_dir_all(stick.join("acks")).expect("mkdir");
        assert_eq!(apply_ack_file(&store, "pump-17", &stick).expect("absent"), AckFileOutcome::Absent);

        let write = |json: &str| std::fs::write(ack_file_path(&stick, "pump-17"), json).expect("write");
        write(r#"{"device_id": "pump-18", "acked": 5}"#);
        let other = apply_ack_file(&store, "pump-17", &stick).expect("other");
        assert!(matches!(other, AckFileOutcome::OtherDevice { ref device_id, .. } if device_id == "pump-18"));
        assert_eq!(Outbox::new(&store).state().expect("state").records, 5, "nothing removed");

        write("not json");
        assert_eq!(apply_ack_file(&store, "pump-17", &stick).expect_err("garbage").reason, Reason::Malformed);

        write(r#"{"device_id": "pump-17", "acked": 3, "written_by": "bundler"}"#);
        let AckFileOutcome::Applied { ack, .. } = apply_ack_file(&store, "pump-17", &stick).expect("applied") else {
            panic!("not applied")
        };
        assert_eq!((ack.acked, ack.removed, ack.clamped), (3, 3, false));
        assert_eq!(Outbox::new(&store).state().expect("state").first_seq, Some(4));
    }

    #[test]
    fn export_needs_an_existing_directory_and_prunes_acknowledged_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = cfg(&dir.path().join("state"));
        let missing = dir.path().join("not-mounted");
        assert_eq!(export_reports(&cfg, &missing, &mut |_| {}).expect_err("missing").reason, Reason::Io);
        assert!(!missing.exists());

        let stick = dir.path().join("stick");
        std::fs::create_dir_all(&stick).expect("mkdir");
        std::fs::create_dir_all(&cfg.state_dir).expect("mkdir");
        let store = Store::open(&cfg.state_dir).expect("store");
        store.record_event("agent-start", None, None, "started").expect("event");
        store.record_event("fetched", Some(1), None, "ok").expect("event");
        let mut lines = Vec::new();
        let files = export_reports(&cfg, &stick, &mut |l| lines.push(l)).expect("export");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, stick.join("reports/pump-17/1-2.batch"));
        assert!(lines.iter().any(|l| l.contains("stay on this device")), "{lines:?}");

        std::fs::create_dir_all(stick.join("acks")).expect("mkdir");
        std::fs::write(ack_file_path(&stick, "pump-17"), r#"{"device_id":"pump-17","acked":2}"#).expect("write");
        let mut lines = Vec::new();
        assert!(export_reports(&cfg, &stick, &mut |l| lines.push(l)).expect("export").is_empty());
        assert!(!files[0].path.exists(), "the acknowledged batch file is removed");
        assert!(lines.iter().any(|l| l.contains("removed 2 report record(s)")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("nothing to export")), "{lines:?}");
    }
}
