//! Tests of the object-store module against fixtures made at test time with the real git
//! CLI (`GIT_CONFIG_NOSYSTEM`, `HOME` in the temp dir), in SHA-1 and SHA-256 repositories.
//! Crafted (malicious) trees are written with `git hash-object -t tree --literally`.

mod checkout;
mod import;
mod patches;
mod reader;
mod resolve;
mod unsafe_trees;
mod update;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gix_hash::ObjectId;

use super::{GitLimits, ObjectStore};

/// A throw-away git repository driven through the git CLI.
pub(super) struct Repo {
    _tmp: tempfile::TempDir,
    pub work: PathBuf,
    home: PathBuf,
    pub kind: gix_hash::Kind,
}

impl Repo {
    pub fn new(kind: gix_hash::Kind) -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        let work = tmp.path().join("repo");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&work).expect("work");
        let repo = Repo { _tmp: tmp, work, home, kind };
        let format = match kind {
            gix_hash::Kind::Sha1 => "--object-format=sha1",
            _ => "--object-format=sha256",
        };
        repo.git(&["init", "-q", format, "."]);
        repo
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.home)
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
            .args(["-c", "user.name=Ferry Test", "-c", "user.email=test@ferry.invalid"])
            .args(["-c", "init.defaultBranch=main", "-c", "core.autocrlf=false"])
            .args(args);
        cmd
    }

    /// Runs git, asserts success, returns stdout.
    pub fn git_bytes(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn git");
        child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
        let out = child.wait_with_output().expect("git output");
        assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    pub fn git(&self, args: &[&str]) -> String {
        String::from_utf8(self.git_bytes(args, b"")).expect("utf8").trim().to_owned()
    }

    pub fn write(&self, rel: &str, content: &[u8]) {
        let path = self.work.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }

    pub fn write_exec(&self, rel: &str, content: &[u8]) {
        self.write(rel, content);
        let path = self.work.join(rel);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    pub fn symlink(&self, rel: &str, target: &str) {
        let path = self.work.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, path).expect("symlink");
    }

    /// Commits everything in the worktree; returns the commit id.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// An orphan snapshot commit of `tree`, as the bundler makes them.
    pub fn snapshot(&self, tree: &str, message: &str) -> String {
        self.git(&["commit-tree", tree, "-m", message])
    }

    pub fn tree_of(&self, commit: &str) -> String {
        self.git(&["rev-parse", &format!("{commit}^{{tree}}")])
    }

    /// A full pack of everything `commit` reaches.
    pub fn pack_full(&self, commit: &str) -> Vec<u8> {
        self.git_bytes(&["pack-objects", "--revs", "--stdout", "-q"], format!("{commit}\n").as_bytes())
    }

    /// A thin pack of `new` against `old` (unrelated orphan commits), DESIGN's delta payload.
    pub fn pack_thin(&self, new: &str, old: &str) -> Vec<u8> {
        let revs = format!("{new}\n^{old}\n");
        self.git_bytes(&["pack-objects", "--revs", "--thin", "--shallow", "--stdout", "-q"], revs.as_bytes())
    }

    pub fn blob(&self, content: &[u8]) -> String {
        String::from_utf8(self.git_bytes(&["hash-object", "-w", "--stdin"], content)).expect("utf8").trim().to_owned()
    }

    /// Writes a tree from raw `(mode, name, id)` entries, bypassing every check git has.
    pub fn raw_tree(&self, entries: &[(&str, &[u8], &str)]) -> String {
        let mut bytes = Vec::new();
        for (mode, name, id) in entries {
            bytes.extend_from_slice(mode.as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(oid(id).as_slice());
        }
        let out = self.git_bytes(&["hash-object", "-t", "tree", "--literally", "-w", "--stdin"], &bytes);
        String::from_utf8(out).expect("utf8").trim().to_owned()
    }

    /// Extracts `git archive <commit>` into `dest`.
    pub fn archive_into(&self, commit: &str, dest: &Path) {
        let tar = self.git_bytes(&["archive", "--format=tar", commit], b"");
        std::fs::create_dir_all(dest).expect("mkdir");
        let mut child = Command::new("tar").args(["-x", "-C"]).arg(dest).stdin(Stdio::piped()).spawn().expect("tar");
        child.stdin.take().expect("stdin").write_all(&tar).expect("tar stdin");
        assert!(child.wait().expect("tar").success());
    }
}

pub(super) fn oid(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.as_bytes()).expect("hex id")
}

/// The names in the store's `objects/pack`, sorted.
pub(super) fn pack_files(store: &ObjectStore) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.objects_dir().join("pack"))
        .expect("pack dir")
        .map(|e| e.expect("dirent").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A fresh, empty store of the repo's object format.
pub(super) fn empty_store(repo: &Repo) -> (tempfile::TempDir, ObjectStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ObjectStore::open(&dir.path().join("objects"), repo.kind).expect("open store");
    (dir, store)
}

/// A fresh store holding everything `commit` reaches.
pub(super) fn store_with(repo: &Repo, commit: &str) -> (tempfile::TempDir, ObjectStore) {
    let (dir, store) = empty_store(repo);
    store.import_pack(&mut &repo.pack_full(commit)[..], &[], &GitLimits::default()).expect("import full pack");
    (dir, store)
}

/// What a directory holds, for comparing checkouts.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Node {
    Dir,
    File { content: Vec<u8>, executable: bool },
    Symlink(PathBuf),
}

pub(super) fn snapshot_dir(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for dirent in std::fs::read_dir(dir).expect("read_dir") {
            let path = dirent.expect("dirent").path();
            let rel = path.strip_prefix(root).expect("under root").to_owned();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Symlink(std::fs::read_link(&path).expect("readlink")));
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                walk(root, &path, out);
            } else {
                let content = std::fs::read(&path).expect("read");
                let executable = meta.permissions().mode() & 0o111 != 0;
                out.insert(rel, Node::File { content, executable });
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A repository with the kinds of entries a real release has: text, binary, empty and
/// executable files, nested directories, and relative symlinks to files and directories.
pub(super) fn sample_repo(kind: gix_hash::Kind) -> (Repo, String) {
    let repo = Repo::new(kind);
    repo.write("README.md", b"# Ferry sample\n");
    repo.write("config/app.toml", b"port = 8080\nname = \"demo\"\n");
    repo.write("config/empty", b"");
    repo.write("data/blob.bin", &(0..=255u8).cycle().take(70_000).collect::<Vec<_>>());
    repo.write_exec("bin/start.sh", b"#!/bin/sh\necho start\n");
    repo.write("deep/a/b/c/d/leaf.txt", b"leaf\n");
    repo.symlink("link-to-readme", "README.md");
    repo.symlink("config/current", "app.toml");
    repo.symlink("deep/a/up", "../../config");
    repo.symlink("dangling", "not-there/yet");
    let commit = repo.commit_all("sample");
    let snapshot = repo.snapshot(&repo.tree_of(&commit), "snapshot 1");
    (repo, snapshot)
}

#[test]
fn object_store_can_move_to_a_blocking_thread() {
    fn is_send<T: Send>() {}
    is_send::<ObjectStore>();
    is_send::<super::ValidatedTree>();
}
