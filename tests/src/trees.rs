//! Comparing a slot with `git archive` of the source tree: same paths, same bytes, same
//! executable bits, same symlink targets (the slot's own `.ferry-slot` aside).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// What one path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A file: executable?, contents.
    File(bool, Vec<u8>),
    /// A symbolic link and its target.
    Link(String),
}

/// Every path under `root` (relative), without following links.
pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out.remove(".ferry-slot");
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).expect("under root").display().to_string();
        let meta = fs::symlink_metadata(&p).expect("metadata");
        if meta.file_type().is_symlink() {
            out.insert(rel, Entry::Link(fs::read_link(&p).expect("link").display().to_string()));
        } else if meta.is_dir() {
            out.insert(rel, Entry::Dir);
            walk(root, &p, out);
        } else {
            let exec = meta.permissions().mode() & 0o111 != 0;
            out.insert(rel, Entry::File(exec, fs::read(&p).expect("read")));
        }
    }
}

/// Extracts `git archive <rev>[:path]` of `repo` into `dest`.
pub fn git_archive(repo: &Path, rev: &str, path: Option<&str>, dest: &Path) {
    fs::create_dir_all(dest).expect("mkdir");
    let treeish = match path {
        Some(p) => format!("{rev}:{p}"),
        None => rev.to_string(),
    };
    let archive = crate::git_cmd(repo).args(["archive", "--format=tar", &treeish]).output().expect("git archive");
    assert!(archive.status.success(), "git archive: {}", String::from_utf8_lossy(&archive.stderr));
    let mut tar =
        Command::new("tar").arg("-x").arg("-C").arg(dest).stdin(std::process::Stdio::piped()).spawn().expect("tar");
    use std::io::Write;
    tar.stdin.take().expect("stdin").write_all(&archive.stdout).expect("pipe");
    assert!(tar.wait().expect("tar").success());
}

/// Panics with the first difference between the two trees.
#[track_caller]
pub fn assert_same(expected: &Path, actual: &Path) {
    let a = snapshot(expected);
    let b = snapshot(actual);
    for (k, v) in &a {
        match b.get(k) {
            None => panic!("{k} missing from {}", actual.display()),
            Some(w) if w != v => panic!("{k} differs: expected {}, found {}", short(v), short(w)),
            _ => {}
        }
    }
    if let Some(extra) = b.keys().find(|k| !a.contains_key(*k)) {
        panic!("{extra} is in {} but not in {}", actual.display(), expected.display());
    }
}

fn short(e: &Entry) -> String {
    match e {
        Entry::Dir => "a directory".into(),
        Entry::File(x, c) => format!("a file (exec {x}, {} bytes)", c.len()),
        Entry::Link(t) => format!("a link to {t}"),
    }
}
