//! Helpers for the adversarial tests: trees crafted with git plumbing (names, modes and
//! shapes no porcelain command writes), releases of any ref, byte surgery on `.ferry`
//! files, and a [`Witness`] that proves a rejected import changed nothing: tell-tale files
//! outside the state directory, both slots, `current`, and a fresh typed rejection in
//! `status`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::fixture::{Device, Operator};
use crate::trees::{self, Entry};
use crate::{git, git_cmd, Run};

/// Name of the tell-tale file planted next to the state directory and in an unrelated
/// directory.
pub const TELL_TALE: &str = "tell-tale";
/// What a tell-tale holds until something overwrites it.
const TELL_TALE_CONTENT: &[u8] = b"untouched\n";
/// What the agent makes in its state directory on its first import, whatever the input:
/// the state lock, the (empty) object store it looks delta bases up in and the directory of
/// payload files (left empty by a payload that is refused).
const HOUSEKEEPING: [&str; 3] = ["lock", "objects", "payloads"];

/// Writes `content` as a blob into `repo`; returns its id.
pub fn blob(repo: &Path, content: &[u8]) -> String {
    hash_object(repo, &["hash-object", "-w", "--stdin"], content)
}

/// Writes a tree object made of exactly `entries` (mode as git writes it, e.g. `40000`,
/// name bytes, object id), in the order given, with no validation at all: duplicate
/// names, `..`, `.git`, separators and odd modes all go in as they are. Returns its id.
pub fn raw_tree(repo: &Path, entries: &[(&str, &[u8], &str)]) -> String {
    let mut body = Vec::new();
    for (mode, name, id) in entries {
        body.extend_from_slice(mode.as_bytes());
        body.push(b' ');
        body.extend_from_slice(name);
        body.push(0);
        body.extend_from_slice(&hex_bytes(id));
    }
    hash_object(repo, &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"], &body)
}

/// Commits `tree` (no parent) and points `refs/heads/<branch>` at it; returns the commit.
pub fn commit_branch(repo: &Path, tree: &str, branch: &str) -> String {
    let commit = git(repo, &["commit-tree", "-m", &format!("hostile {branch}"), tree]);
    git(repo, &["update-ref", &format!("refs/heads/{branch}"), &commit]);
    commit
}

/// A `bundler release` of `reference` on `channel` into the operator's mirror, level 1 and
/// without deltas unless `extra` says otherwise; the caller may add environment first.
pub fn release_cmd(op: &Operator, channel: &str, reference: &str, extra: &[&str]) -> Command {
    let mut c = op.bundler(&["release", "--repo"]);
    c.arg(&op.repo).args(["--ref", reference, "--channel", channel, "--mirror"]).arg(&op.mirror);
    c.arg("--release-key").arg(op.key("release")).arg("--index-key").arg(op.key("index"));
    c.args(["--level", "1"]).args(extra);
    c
}

/// Where the payload starts in a `.ferry` file, and where its manifest envelope lies.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Byte range of the manifest envelope.
    pub manifest: std::ops::Range<usize>,
    /// Byte range of the signed document inside the envelope (what the signature covers).
    pub document: std::ops::Range<usize>,
    /// First payload byte.
    pub payload: usize,
}

/// Parses the header of the `.ferry` file `bytes` (see `ferry_proto::container`).
pub fn layout(bytes: &[u8]) -> Layout {
    let limits = ferry_proto::Limits::default();
    let header = ferry_proto::container::ContainerHeader::read_from(&mut &bytes[..], &limits).expect("a .ferry header");
    let start = ferry_proto::container::MAGIC.len() + 2 + 4;
    let manifest = start..start + header.manifest.len();
    let envelope = ferry_proto::Envelope::decode(&header.manifest, &limits).expect("a manifest envelope");
    let at = header
        .manifest
        .windows(envelope.payload.len())
        .position(|w| w == envelope.payload.as_slice())
        .expect("the signed document inside the envelope");
    let document = manifest.start + at..manifest.start + at + envelope.payload.len();
    Layout { manifest, document, payload: header.encoded_len() as usize }
}

/// What a device holds before an attack, and the tell-tales planted around it.
pub struct Witness {
    /// An unrelated directory (in the system temp dir) holding a tell-tale.
    pub outside: tempfile::TempDir,
    device_dir: PathBuf,
    state: PathBuf,
    around: BTreeMap<String, Entry>,
    slots: BTreeMap<String, Entry>,
    state_names: BTreeSet<String>,
    current: Option<String>,
    applied: Option<u64>,
    last_error_seq: Option<i64>,
}

impl Witness {
    /// Plants `tell-tale` next to the device's state directory (`slots/<x>/../../../tell-tale`)
    /// and in a fresh directory elsewhere, then records everything an import must not change.
    pub fn new(dev: &Device) -> Witness {
        let outside = tempfile::Builder::new().prefix("ferry-outside-").tempdir().expect("tempdir");
        fs::write(outside.path().join(TELL_TALE), TELL_TALE_CONTENT).expect("tell-tale");
        fs::write(dev.dir.path().join(TELL_TALE), TELL_TALE_CONTENT).expect("tell-tale");
        let status = dev.status();
        Witness {
            device_dir: dev.dir.path().to_path_buf(),
            state: dev.state.clone(),
            around: around_state(dev),
            slots: trees::snapshot(&dev.state.join("slots")),
            state_names: state_names(&dev.state),
            current: dev.current_target(),
            applied: status["applied"]["release"].as_u64(),
            last_error_seq: status["last_error"]["seq"].as_i64(),
            outside,
        }
    }

    /// The tell-tale next to the state directory, as a path relative to a slot's root.
    pub fn from_slot_to_tell_tale() -> &'static str {
        "../../../tell-tale"
    }

    /// Asserts `run` is a rejection with `reason` whose message contains `needle`, that
    /// `status` reports it as the newest failure, and that nothing else changed.
    #[track_caller]
    pub fn assert_rejected(&self, dev: &Device, run: &Run, reason: &str, needle: &str) {
        assert_eq!(run.code, 1, "expected a rejection ({reason}):\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
        let line = run.stdout.lines().find(|l| l.starts_with("rejected: ")).unwrap_or_else(|| {
            panic!("no `rejected:` line:\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
        });
        assert!(line.starts_with(&format!("rejected: {reason}: ")), "expected reason {reason}, got: {line}");
        assert!(line.contains(needle), "expected {needle:?} in: {line}");

        let status = dev.status();
        let error = &status["last_error"];
        assert_eq!(error["reason"], reason, "status last_error: {error}");
        let seq = error["seq"].as_i64().expect("last_error.seq");
        assert!(self.last_error_seq.is_none_or(|before| seq > before), "no new failure recorded: {error}");
        assert_eq!(status["trial"], "none", "{status}");
        assert_eq!(status["applied"]["release"].as_u64(), self.applied, "applied release changed");
        self.assert_untouched(dev);
    }

    /// Asserts the tell-tales, everything next to the state directory, both slots, `current`
    /// and the state directory's top-level names are as they were.
    #[track_caller]
    pub fn assert_untouched(&self, dev: &Device) {
        assert_eq!(dev.dir.path(), self.device_dir, "witness of another device");
        for dir in [self.outside.path(), &self.device_dir] {
            let content = fs::read(dir.join(TELL_TALE)).expect("tell-tale is still there");
            assert_eq!(content, TELL_TALE_CONTENT, "tell-tale in {} was overwritten", dir.display());
        }
        let outside: Vec<_> = fs::read_dir(self.outside.path()).expect("outside").flatten().map(|e| e.path()).collect();
        assert_eq!(outside, vec![self.outside.path().join(TELL_TALE)], "something appeared outside");
        assert_same_map("next to the state directory", &self.around, &around_state(dev));
        assert_eq!(dev.current_target(), self.current, "current moved");
        assert_same_map("slots/", &self.slots, &trees::snapshot(&self.state.join("slots")));
        let now = state_names(&self.state);
        let gone: Vec<_> = self.state_names.difference(&now).collect();
        let new: Vec<_> = now.difference(&self.state_names).filter(|n| !HOUSEKEEPING.contains(&n.as_str())).collect();
        assert!(gone.is_empty() && new.is_empty(), "state directory: {gone:?} disappeared, {new:?} appeared");
    }
}

/// Everything under the device's directory except the state directory itself.
fn around_state(dev: &Device) -> BTreeMap<String, Entry> {
    let mut all = trees::snapshot(dev.dir.path());
    all.retain(|path, _| path != "state" && !path.starts_with("state/"));
    all
}

/// Top-level names of the state directory, SQLite's transient files aside.
fn state_names(state: &Path) -> BTreeSet<String> {
    fs::read_dir(state)
        .expect("state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ferry.db-"))
        .collect()
}

#[track_caller]
fn assert_same_map(what: &str, before: &BTreeMap<String, Entry>, after: &BTreeMap<String, Entry>) {
    for (path, entry) in before {
        match after.get(path) {
            None => panic!("{what}: {path} disappeared"),
            Some(now) if now != entry => panic!("{what}: {path} changed from {entry:?} to {now:?}"),
            _ => {}
        }
    }
    if let Some(extra) = after.keys().find(|p| !before.contains_key(*p)) {
        panic!("{what}: {extra} appeared");
    }
}

fn hash_object(repo: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = git_cmd(repo)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    child.stdin.take().expect("stdin").write_all(input).expect("feed git");
    let out = child.wait_with_output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|_| panic!("{hex:?} is not hex")))
        .collect()
}
