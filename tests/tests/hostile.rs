//! Hostile input leaves the device untouched. Each test stages one attack against a device
//! that already runs a good release 1 (`current -> slots/a`), imports it with the real
//! `ferry-agent`, and checks the rejection: exit code 1, `rejected: <reason>` on stdout, the
//! same reason as the newest failure in `status --json`, `current` and both slots as they
//! were, and tell-tale files outside the state directory (next to it, where
//! `slots/b/../../../tell-tale` lands, and in an unrelated directory) unchanged.
//!
//! Trees are crafted with git plumbing (`hash-object -t tree --literally`), so they hold
//! what no porcelain command would write; each case of DESIGN "Apply" step 3 has one.

use std::fs;
use std::path::{Path, PathBuf};

use ferry_tests::fixture::{Device, Operator};
use ferry_tests::hostile::{self, Witness, TELL_TALE};
use ferry_tests::run;

const FILE: &str = "100644";
const EXEC: &str = "100755";
const LINK: &str = "120000";
const DIR: &str = "40000";

/// An operator and a device running the operator's release 1 of `stable`.
struct Scene {
    op: Operator,
    dev: Device,
    /// The full `.ferry` of release 1.
    release1: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        Scene::with_device_config("")
    }

    /// A scene whose device has `extra_toml` in its config.
    fn with_device_config(extra_toml: &str) -> Scene {
        let op = Operator::new();
        op.write(&[("app.conf", Some("port = 8080\n")), ("bin/start.sh", Some("#!/bin/sh\necho start\n"))]);
        op.make_executable("bin/start.sh");
        op.commit("one");
        op.release("stable", None, &["--level", "1"]).ok();
        let release1 = op.latest_payloads("stable")["full"].clone();
        let dev = Device::new("stable", &op.root1(), extra_toml);
        let r = dev.import(&release1).ok();
        assert!(r.stdout.contains("applied release 1"), "{}", r.stdout);
        assert_eq!(dev.current_target().as_deref(), Some("slots/a"));
        Scene { op, dev, release1 }
    }

    fn blob(&self, content: &[u8]) -> String {
        hostile::blob(&self.op.repo, content)
    }

    fn tree(&self, entries: &[(&str, &[u8], &str)]) -> String {
        hostile::raw_tree(&self.op.repo, entries)
    }

    /// Publishes a good release 2 of `stable` (full and a delta from 1); returns its payloads.
    fn release2(&self) -> std::collections::BTreeMap<String, PathBuf> {
        self.op.write(&[("app.conf", Some("port = 9090\n"))]);
        self.op.commit("two");
        self.op.release("stable", None, &["--level", "1"]).ok();
        self.op.latest_payloads("stable")
    }

    /// Releases `tree` as the next release of `stable`, imports its full payload and
    /// checks it is rejected with `reason` (message containing `needle`) leaving the device
    /// untouched.
    #[track_caller]
    fn assert_tree_rejected(&self, tree: &str, reason: &str, needle: &str) {
        hostile::commit_branch(&self.op.repo, tree, "hostile");
        run(&mut hostile::release_cmd(&self.op, "stable", "hostile", &["--deltas", "0"])).ok();
        let payload = self.op.latest_payloads("stable")["full"].clone();
        let witness = Witness::new(&self.dev);
        let r = self.dev.import(&payload);
        witness.assert_rejected(&self.dev, &r, reason, needle);
    }

    /// A tree whose root holds `app.conf` and one more entry.
    fn tree_with(&self, mode: &str, name: &[u8], id: &str) -> String {
        let conf = self.blob(b"port = 8080\n");
        self.tree(&[(FILE, b"app.conf", &conf), (mode, name, id)])
    }

    /// `name/tell-tale`, a directory holding a file that would overwrite a tell-tale.
    fn dir_with_payload(&self, name: &[u8]) -> String {
        let pwned = self.blob(b"pwned\n");
        let inner = self.tree(&[(FILE, TELL_TALE.as_bytes(), &pwned)]);
        self.tree_with(DIR, name, &inner)
    }

    /// A root-level symlink `name -> target`.
    fn link(&self, name: &[u8], target: &str) -> String {
        let target = self.blob(target.as_bytes());
        self.tree_with(LINK, name, &target)
    }

    /// Imports `path`, expecting it to be rejected with `reason` and to change nothing.
    #[track_caller]
    fn assert_file_rejected(&self, path: &Path, reason: &str, needle: &str) {
        let witness = Witness::new(&self.dev);
        let r = self.dev.import(path);
        witness.assert_rejected(&self.dev, &r, reason, needle);
    }

    /// A copy of `src` under the operator's directory, with `edit` applied to its bytes.
    fn doctored(&self, src: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let mut bytes = fs::read(src).expect("read .ferry");
        edit(&mut bytes);
        let dest = self.op.dir.path().join(name);
        fs::write(&dest, bytes).expect("write .ferry");
        dest
    }

    /// After a rejected doctored copy, the pristine file still applies: the rejection left
    /// no state behind that gets in the way.
    #[track_caller]
    fn assert_pristine_applies(&self, pristine: &Path, release: u64) {
        let r = self.dev.import(pristine).ok();
        assert!(r.stdout.contains(&format!("applied release {release}")), "{}", r.stdout);
        assert_eq!(self.dev.applied_release(), Some(release));
    }
}

// ---- Tree names (DESIGN "Apply" step 3) -------------------------------------------------

#[test]
fn dot_dot_directories_climbing_to_a_tell_tale() {
    let s = Scene::new();
    // `../../../tell-tale` from slots/b is the tell-tale next to the state directory.
    let pwned = s.blob(b"pwned\n");
    let mut tree = s.tree(&[(FILE, TELL_TALE.as_bytes(), &pwned)]);
    for _ in 0..3 {
        tree = s.tree(&[(DIR, b"..", &tree)]);
    }
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \"..\": forbidden name: Relative");
}

#[test]
fn dot_directory() {
    let s = Scene::new();
    let tree = s.dir_with_payload(b".");
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \".\": forbidden name: Relative");
}

#[test]
fn slash_inside_a_name() {
    let s = Scene::new();
    let tree = s.tree_with(FILE, b"../../../tell-tale", &s.blob(b"pwned\n"));
    s.assert_tree_rejected(&tree, "unsafe-path", "forbidden name: Path separators");
}

#[test]
fn backslash_inside_a_name() {
    let s = Scene::new();
    let tree = s.tree_with(FILE, b"..\\..\\..\\tell-tale", &s.blob(b"pwned\n"));
    s.assert_tree_rejected(&tree, "unsafe-path", "forbidden name: Path separators");
}

#[test]
fn dot_git_directory_with_a_hook() {
    let s = Scene::new();
    let hook = s.blob(b"#!/bin/sh\ntouch /tmp/pwned\n");
    let hooks = s.tree(&[(EXEC, b"post-checkout", &hook)]);
    let git_dir = s.tree(&[(DIR, b"hooks", &hooks)]);
    let tree = s.tree_with(DIR, b".git", &git_dir);
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \".git\": forbidden name: The .git name");
}

#[test]
fn dot_git_in_upper_case() {
    let s = Scene::new();
    let tree = s.dir_with_payload(b".GIT");
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \".GIT\": forbidden name: The .git name");
}

#[test]
fn dot_git_with_an_hfs_ignorable_code_point() {
    let s = Scene::new();
    let tree = s.dir_with_payload(".g\u{200c}it".as_bytes());
    s.assert_tree_rejected(&tree, "unsafe-path", "forbidden name: The .git name");
}

#[test]
fn dot_git_as_an_ntfs_short_name() {
    let s = Scene::new();
    let tree = s.dir_with_payload(b"git~1");
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \"git~1\": forbidden name: The .git name");
}

#[test]
fn trailing_dot_in_a_name() {
    let s = Scene::new();
    let tree = s.tree_with(FILE, b"a.", &s.blob(b"x\n"));
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \"a.\": forbidden name: Trailing spaces or dots");
}

#[test]
fn trailing_space_in_a_name() {
    let s = Scene::new();
    let tree = s.tree_with(FILE, b"a ", &s.blob(b"x\n"));
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \"a \": forbidden name: Trailing spaces or dots");
}

#[test]
fn slot_record_forged_at_the_root() {
    let s = Scene::new();
    let forged = s.blob(b"format = 1\nrelease = 99\n");
    let tree = s.tree_with(FILE, b".ferry-slot", &forged);
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \".ferry-slot\": name reserved");
}

#[test]
fn two_files_with_one_name() {
    let s = Scene::new();
    let (one, two) = (s.blob(b"one\n"), s.blob(b"two\n"));
    let tree = s.tree(&[(FILE, b"a", &one), (FILE, b"a", &two)]);
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \"a\": two entries of one tree share this name");
}

// ---- Tree modes -------------------------------------------------------------------------

#[test]
fn submodule_entry() {
    let s = Scene::new();
    let commit = ferry_tests::git(&s.op.repo, &["rev-parse", "HEAD"]);
    let tree = s.tree_with("160000", b"vendor", &commit);
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \"vendor\": submodule");
}

#[test]
fn group_writable_file_mode() {
    let s = Scene::new();
    let tree = s.tree_with("100664", b"shared.conf", &s.blob(b"x\n"));
    s.assert_tree_rejected(&tree, "unsafe-path", "unsafe path \"shared.conf\": forbidden mode 100664");
}

// ---- Tree sizes ---------------------------------------------------------------------------

#[test]
fn name_longer_than_name_max() {
    let s = Scene::new();
    let tree = s.tree_with(FILE, &[b'n'; 256], &s.blob(b"x\n"));
    s.assert_tree_rejected(&tree, "size-exceeded", "file name length limit of 255 exceeded (256)");
}

#[test]
fn path_longer_than_the_limit() {
    let s = Scene::new();
    // Nine levels of 250-byte names make a 2258-byte path; the default limit is 2048.
    let mut tree = s.tree(&[(FILE, b"f", &s.blob(b"x\n"))]);
    for _ in 0..9 {
        tree = s.tree(&[(DIR, &[b'p'; 250], &tree)]);
    }
    s.assert_tree_rejected(&tree, "size-exceeded", "path length limit of 2048 exceeded (2258)");
}

#[test]
fn tree_deeper_than_the_limit() {
    let s = Scene::new();
    let mut tree = s.tree(&[(FILE, b"f", &s.blob(b"x\n"))]);
    for _ in 0..129 {
        tree = s.tree(&[(DIR, b"d", &tree)]);
    }
    s.assert_tree_rejected(&tree, "size-exceeded", "tree depth limit of 128 exceeded (129)");
}

#[test]
fn file_larger_than_the_limit() {
    let s = Scene::with_device_config("[limits]\nmax_object_size = 4096\n");
    let tree = s.tree_with(FILE, b"big", &s.blob(&[b'b'; 8192]));
    s.assert_tree_rejected(&tree, "size-exceeded", "object size limit of 4096 exceeded");
}

#[test]
fn more_entries_than_the_limit() {
    let s = Scene::with_device_config("[limits]\nmax_tree_entries = 8\n");
    let x = s.blob(b"x\n");
    let names: Vec<String> = (0..9).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, &[u8], &str)> = names.iter().map(|n| (FILE, n.as_bytes(), x.as_str())).collect();
    s.assert_tree_rejected(&s.tree(&entries), "size-exceeded", "tree entry count limit of 8 exceeded");
}

// ---- Symlink targets --------------------------------------------------------------------

#[test]
fn absolute_symlink_to_etc_passwd() {
    let s = Scene::new();
    let tree = s.link(b"passwd", "/etc/passwd");
    s.assert_tree_rejected(&tree, "unsafe-symlink", "\"passwd\" -> \"/etc/passwd\": absolute target");
}

#[test]
fn relative_symlink_climbing_out_of_the_slot() {
    let s = Scene::new();
    let tree = s.link(b"outside", "../outside");
    s.assert_tree_rejected(&tree, "unsafe-symlink", "\"outside\" -> \"../outside\": target resolves outside the slot");
}

#[test]
fn relative_symlink_climbing_to_the_tell_tale() {
    let s = Scene::new();
    let tree = s.link(b"config", Witness::from_slot_to_tell_tale());
    s.assert_tree_rejected(&tree, "unsafe-symlink", "target resolves outside the slot");
}

#[test]
fn two_hop_symlink_escape_through_another_link() {
    let s = Scene::new();
    // `d/l -> ..` is the slot root; `d/l/../..` from there is above it, although the text
    // `d/l/../..` alone never climbs out.
    let up = s.blob(b"..");
    let d = s.tree(&[(LINK, b"l", &up)]);
    let z = s.blob(b"d/l/../..");
    let tree = s.tree(&[(DIR, b"d", &d), (LINK, b"z", &z)]);
    s.assert_tree_rejected(&tree, "unsafe-symlink", "\"z\" -> \"d/l/../..\": target resolves outside the slot");
}

#[test]
fn symlink_into_a_dot_git_directory() {
    let s = Scene::new();
    let tree = s.link(b"cfg", ".git/x");
    s.assert_tree_rejected(&tree, "unsafe-symlink", "\"cfg\" -> \".git/x\": target has a .git component");
}

#[test]
fn symlink_and_directory_sharing_a_name() {
    let s = Scene::new();
    // Checked out naively, `a -> ../../..` is made first and `a/tell-tale` then written
    // through it, onto the tell-tale next to the state directory.
    let up = s.blob(b"../../..");
    let pwned = s.blob(b"pwned\n");
    let a = s.tree(&[(FILE, TELL_TALE.as_bytes(), &pwned)]);
    let tree = s.tree(&[(LINK, b"a", &up), (DIR, b"a", &a)]);
    s.assert_tree_rejected(&tree, "unsafe-symlink", "\"a\" -> \"../../..\": link is also a directory");
}

// ---- Release policy ---------------------------------------------------------------------

#[test]
fn older_release_replayed() {
    let s = Scene::new();
    let release2 = s.release2();
    s.assert_pristine_applies(&release2["full"], 2);
    assert_eq!(s.dev.current_target().as_deref(), Some("slots/b"));
    s.assert_file_rejected(&s.release1, "rollback", "release 1 is not newer than release 2");
}

#[test]
fn applied_release_replayed() {
    let s = Scene::new();
    s.assert_file_rejected(&s.release1, "rollback", "release 1 is not newer than release 1");
}

#[test]
fn release_of_another_channel() {
    let s = Scene::new();
    s.op.release("beta", None, &["--level", "1"]).ok();
    let beta = s.op.latest_payloads("beta")["full"].clone();
    s.assert_file_rejected(&beta, "wrong-channel", "channel \"beta\", this device follows \"stable\"");
}

#[test]
fn expired_release() {
    let s = Scene::new();
    s.op.write(&[("app.conf", Some("port = 9090\n"))]);
    s.op.commit("two");
    // Signed an hour ago, valid for one second.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let mut release = hostile::release_cmd(&s.op, "stable", "HEAD", &["--not-after", "1s"]);
    release.env("SOURCE_DATE_EPOCH", (now - 3600).to_string());
    run(&mut release).ok();
    let payload = s.op.latest_payloads("stable")["full"].clone();
    s.assert_file_rejected(&payload, "expired", "release 2 expired at");
}

// ---- Signatures -------------------------------------------------------------------------

#[test]
fn manifest_signature_with_a_flipped_byte() {
    let s = Scene::new();
    let pristine = s.release2()["full"].clone();
    let layout = hostile::layout(&fs::read(&pristine).expect("read"));
    // The envelope ends with the last signature's 64 bytes.
    let doctored = s.doctored(&pristine, "bad-sig.ferry", |b| b[layout.manifest.end - 1] ^= 0x01);
    s.assert_file_rejected(&doctored, "signature", "carries no valid signature by a release key");
    s.assert_pristine_applies(&pristine, 2);
}

#[test]
fn signed_manifest_with_a_flipped_byte() {
    let s = Scene::new();
    let pristine = s.release2()["full"].clone();
    let layout = hostile::layout(&fs::read(&pristine).expect("read"));
    // Any byte of the signed document, e.g. one inside the payload list, breaks the signature.
    let at = layout.document.end - 8;
    let doctored = s.doctored(&pristine, "bad-doc.ferry", |b| b[at] ^= 0x01);
    s.assert_file_rejected(&doctored, "signature", "carries no valid signature by a release key");
    s.assert_pristine_applies(&pristine, 2);
}

#[test]
fn release_signed_by_a_key_outside_the_trust_root() {
    let s = Scene::new();
    let rogue = Operator::new();
    rogue.write(&[("app.conf", Some("port = 6666\n"))]);
    rogue.commit("rogue");
    rogue.release("stable", None, &["--level", "1"]).ok();
    rogue.release("stable", None, &["--level", "1"]).ok();
    let payload = rogue.latest_payloads("stable")["full"].clone();
    s.assert_file_rejected(&payload, "signature", "carries no valid signature by a release key");
}

// ---- Payload bytes ----------------------------------------------------------------------

#[test]
fn payload_with_a_flipped_byte() {
    let s = Scene::new();
    let pristine = s.release2()["full"].clone();
    let bytes = fs::read(&pristine).expect("read");
    let payload = hostile::layout(&bytes).payload;
    let at = payload + (bytes.len() - payload) / 2;
    let doctored = s.doctored(&pristine, "flipped.ferry", |b| b[at] ^= 0x01);
    s.assert_file_rejected(&doctored, "digest-mismatch", "signed");
    s.assert_pristine_applies(&pristine, 2);
}

#[test]
fn truncated_payload() {
    let s = Scene::new();
    let pristine = s.release2()["full"].clone();
    let doctored = s.doctored(&pristine, "truncated.ferry", |b| b.truncate(b.len() - 7));
    s.assert_file_rejected(&doctored, "digest-mismatch", "payload is truncated");
    s.assert_pristine_applies(&pristine, 2);
}

#[test]
fn truncated_header() {
    let s = Scene::new();
    let pristine = s.release2()["full"].clone();
    let layout = hostile::layout(&fs::read(&pristine).expect("read"));
    let doctored = s.doctored(&pristine, "header-cut.ferry", |b| b.truncate(layout.manifest.start + 10));
    s.assert_file_rejected(&doctored, "malformed", "header is truncated");
    s.assert_pristine_applies(&pristine, 2);
}

#[test]
fn payload_with_junk_appended() {
    let s = Scene::new();
    let pristine = s.release2()["full"].clone();
    let doctored = s.doctored(&pristine, "junk.ferry", |b| b.extend_from_slice(b"junk"));
    s.assert_file_rejected(&doctored, "size-exceeded", "longer than its signed size");
    s.assert_pristine_applies(&pristine, 2);
}

// ---- Prerequisites ----------------------------------------------------------------------

#[test]
fn delta_without_its_base() {
    let s = Scene::new();
    let release2 = s.release2();
    let delta = release2.get("delta-1").expect("a delta from release 1");
    let fresh = Device::new("stable", &s.op.root1(), "");
    let witness = Witness::new(&fresh);
    let r = fresh.import(delta);
    witness.assert_rejected(&fresh, &r, "missing-prerequisite", "release 2 is here only as deltas");
    assert_eq!(fresh.current_target(), None);
    // The device that holds the base takes the same delta.
    let r = s.dev.import(delta).ok();
    assert!(r.stdout.contains("release 2 (delta from release 1"), "{}", r.stdout);
}

// ---- The witness itself -----------------------------------------------------------------

/// Something done to a device behind the witness's back.
type Change<'a> = Box<dyn Fn(&Witness) + 'a>;

/// Each check of [`Witness`] fails when the thing it watches changes, so a passing attack
/// test means the attack really changed nothing.
#[test]
fn witness_notices_every_change_it_watches() {
    let s = Scene::new();
    let state = s.dev.state.clone();
    let near = s.dev.dir.path().join(TELL_TALE);
    let changes: Vec<(&str, Change)> = vec![
        ("tell-tale next to the state directory", Box::new(|_| fs::write(&near, "pwned").expect("write"))),
        ("tell-tale elsewhere", Box::new(|w| fs::write(w.outside.path().join(TELL_TALE), "pwned").expect("write"))),
        ("new file elsewhere", Box::new(|w| fs::write(w.outside.path().join("new"), "x").expect("write"))),
        ("new file next to the state directory", Box::new(|_| fs::write(near.with_file_name("new"), "x").expect("w"))),
        ("file in the active slot", Box::new(|_| fs::write(state.join("slots/a/app.conf"), "x").expect("write"))),
        ("file in the inactive slot", Box::new(|_| fs::create_dir_all(state.join("slots/b")).expect("mkdir"))),
        ("current", Box::new(|_| fs::remove_file(state.join("current")).expect("unlink"))),
        ("stray link", Box::new(|_| std::os::unix::fs::symlink("x", state.join("current.tmp-1")).expect("ln"))),
    ];
    for (what, change) in changes {
        let witness = Witness::new(&s.dev);
        witness.assert_untouched(&s.dev);
        change(&witness);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| witness.assert_untouched(&s.dev)));
        assert!(caught.is_err(), "the witness missed a change of {what}");
        // Undo, so the next case starts from a device the witness accepts.
        let _ = fs::write(&near, "untouched\n");
        let _ = fs::remove_file(near.with_file_name("new"));
        let _ = fs::write(state.join("slots/a/app.conf"), "port = 8080\n");
        let _ = fs::remove_dir(state.join("slots/b"));
        let _ = std::os::unix::fs::symlink("slots/a", state.join("current"));
        let _ = fs::remove_file(state.join("current.tmp-1"));
    }
}
