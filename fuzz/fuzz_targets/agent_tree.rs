//! The agent's whole-tree validator (`ferry_agent::git::validate_tree`) and checkout.
//!
//! The input is a tree model generated with `arbitrary`: files, symlinks, directories,
//! entries with arbitrary modes and entries pointing at absent objects, with names and link
//! targets picked from a dictionary of dangerous spellings (`.git`, `..`, `git~1`, HFS and
//! NTFS tricks, the slot record) or raw bytes. It is written as raw loose objects (unsorted,
//! duplicate names allowed) into a fresh object store in `$TMPDIR`, then validated under
//! small limits.
//!
//! Properties:
//! * completeness: a tree the model calls plainly safe (plain names, no links, regular
//!   modes, within every limit) is accepted, with the model's counts and byte total;
//! * soundness: an accepted tree has only allowed names and modes and stays within every
//!   limit; checking it out succeeds, puts exactly the counted files, links and
//!   directories on disk, nothing named `.git` in any case, and no symlink that resolves
//!   outside the checkout.
#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use ferry_agent::git::{checkout, validate_tree, GitLimits, ObjectStore};
use gix_object::Write as _;
use libfuzzer_sys::fuzz_target;

const NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"dir",
    b"link",
    b".",
    b"..",
    b"",
    b".git",
    b".GIT",
    b".Git",
    b"git~1",
    b"GIT~1",
    b".gitmodules",
    b".git.",
    b".git ",
    b".g\xe2\x80\x8cit",
    b".git::$INDEX_ALLOCATION",
    b".ferry-slot",
    b"a/b",
    b"x\0y",
    b"con",
    b"aux.txt",
    b"c:",
    b"a\\b",
    b"\xff\xfe",
];

const TARGET_PARTS: &[&[u8]] = &[b"a", b"b", b"dir", b"link", b"..", b".", b".git", b"", b"c:", b"x\\y"];

#[derive(Arbitrary, Debug)]
struct Input {
    sha256: bool,
    root: Vec<Node>,
}

#[derive(Arbitrary, Debug)]
enum Name {
    Pick(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Target {
    Parts(Vec<u8>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Node {
    File { name: Name, exec: bool, content: Vec<u8> },
    Link { name: Name, target: Target },
    Dir { name: Name, children: Vec<Node> },
    Odd { name: Name, mode: u32, content: Vec<u8> },
    Missing { name: Name, mode: u8, id: [u8; 32] },
}

fn limits() -> GitLimits {
    GitLimits {
        max_objects: 1 << 10,
        max_object_size: 2 << 10,
        max_delta_chain: 16,
        max_tree_depth: 5,
        max_path_len: 48,
        max_tree_entries: 40,
        max_total_bytes: 6 << 10,
    }
}

fn name_bytes(name: &Name) -> Vec<u8> {
    match name {
        Name::Pick(i) => NAMES[usize::from(*i) % NAMES.len()].to_vec(),
        Name::Raw(raw) => raw.clone(),
    }
}

/// Names the completeness oracle may call plainly safe: lower-case letters, not a Windows
/// device name.
fn plain(name: &[u8]) -> bool {
    (1..=12).contains(&name.len())
        && name.iter().all(u8::is_ascii_lowercase)
        && !matches!(name, b"con" | b"prn" | b"aux" | b"nul")
}

/// What the model expects, gathered while writing the objects.
#[derive(Default, Debug)]
struct Expect {
    plain: bool,
    files: u64,
    symlinks: u64,
    dirs: u64,
    total_bytes: u64,
    entries: usize,
    budget: usize,
}

struct Writer<'a> {
    odb: &'a gix_odb::loose::Store,
    kind: gix_hash::Kind,
    limits: GitLimits,
}

impl Writer<'_> {
    fn blob(&self, content: &[u8]) -> gix_hash::ObjectId {
        self.odb.write_buf(gix_object::Kind::Blob, content).expect("write blob")
    }

    fn tree(&self, nodes: &[Node], prefix: &[u8], depth: usize, expect: &mut Expect) -> gix_hash::ObjectId {
        let mut raw = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for node in nodes {
            if expect.budget == 0 {
                break;
            }
            expect.budget -= 1;
            let (name, mode, id) = match node {
                Node::File { name, exec, content } => {
                    let size = content.len() as u64;
                    expect.files += 1;
                    expect.total_bytes += size;
                    expect.plain &= size <= self.limits.max_object_size;
                    (name, if *exec { 0o100755 } else { 0o100644 }, self.blob(content))
                }
                Node::Link { name, target } => {
                    let target = match target {
                        Target::Parts(parts) => parts
                            .iter()
                            .take(8)
                            .map(|p| TARGET_PARTS[usize::from(*p) % TARGET_PARTS.len()])
                            .collect::<Vec<_>>()
                            .join(&b'/'),
                        Target::Raw(raw) => raw.clone(),
                    };
                    expect.symlinks += 1;
                    expect.plain = false;
                    (name, 0o120000, self.blob(&target))
                }
                Node::Dir { name, children } => {
                    let mut path = prefix.to_vec();
                    path.extend_from_slice(&name_bytes(name));
                    path.push(b'/');
                    expect.dirs += 1;
                    (name, 0o40000, self.tree(children, &path, depth + 1, expect))
                }
                Node::Odd { name, mode, content } => {
                    expect.plain = false;
                    (name, *mode, self.blob(content))
                }
                Node::Missing { name, mode, id } => {
                    expect.plain = false;
                    let mode = [0o100644, 0o100755, 0o120000, 0o40000, 0o160000][usize::from(*mode) % 5];
                    let id = gix_hash::ObjectId::from_bytes_or_panic(&id[..self.kind.len_in_bytes()]);
                    (name, mode, id)
                }
            };
            let name = name_bytes(name);
            expect.entries += 1;
            expect.plain &= plain(&name)
                && seen.insert(name.clone())
                && prefix.len() + name.len() <= self.limits.max_path_len
                && depth < self.limits.max_tree_depth;
            raw.extend_from_slice(format!("{mode:o} ").as_bytes());
            raw.extend_from_slice(&name);
            raw.push(0);
            raw.extend_from_slice(id.as_bytes());
        }
        expect.plain &= raw.len() as u64 <= self.limits.max_object_size;
        self.odb.write_buf(gix_object::Kind::Tree, &raw).expect("write tree")
    }
}

/// Counts (files, symlinks, dirs) under `dir` and checks every entry on disk.
fn scan(dir: &Path, root: &Path, counts: &mut (u64, u64, u64)) {
    for entry in std::fs::read_dir(dir).expect("read checkout") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let name = entry.file_name();
        assert!(!name.as_encoded_bytes().eq_ignore_ascii_case(b".git"), "{path:?} checked out");
        let ty = entry.file_type().expect("file type");
        if ty.is_symlink() {
            counts.1 += 1;
            if let Ok(resolved) = std::fs::canonicalize(&path) {
                assert!(resolved.starts_with(root), "symlink {path:?} resolves to {resolved:?}, outside {root:?}");
            }
        } else if ty.is_dir() {
            counts.2 += 1;
            scan(&path, root, counts);
        } else {
            assert!(ty.is_file(), "{path:?} is neither file, link nor directory");
            counts.0 += 1;
        }
    }
}

fuzz_target!(|input: Input| {
    let kind = if input.sha256 { gix_hash::Kind::Sha256 } else { gix_hash::Kind::Sha1 };
    let tmp = tempfile::tempdir().expect("tempdir");
    let objects = tmp.path().join("objects");
    std::fs::create_dir_all(&objects).expect("mkdir objects");
    let odb = gix_odb::loose::Store::at(&objects, kind);
    let limits = limits();
    let writer = Writer { odb: &odb, kind, limits: limits.clone() };
    let mut expect = Expect { plain: true, budget: 200, ..Expect::default() };
    let root_id = writer.tree(&input.root, b"", 0, &mut expect);
    let plain = expect.plain
        && expect.entries <= limits.max_tree_entries
        && expect.total_bytes <= limits.max_total_bytes
        && expect.budget > 0;

    let store = ObjectStore::open(&objects, kind).expect("open store");
    let validated = match validate_tree(&store, &root_id, &limits) {
        Ok(tree) => tree,
        Err(e) => {
            let _ = e.to_string();
            assert!(!plain, "a plainly safe tree was refused ({}): {e}\n{expect:?}", e.reason());
            return;
        }
    };
    let total = validated.files() + validated.symlinks() + validated.dirs();
    assert!(total <= limits.max_tree_entries as u64);
    assert!(validated.total_bytes() <= limits.max_total_bytes);
    assert_eq!(validated.id(), root_id.as_ref());
    if plain {
        assert_eq!(
            (validated.files(), validated.symlinks(), validated.dirs(), validated.total_bytes()),
            (expect.files, expect.symlinks, expect.dirs, expect.total_bytes),
            "counts differ from the model"
        );
    }

    let dest = tmp.path().join("slot");
    std::fs::create_dir(&dest).expect("mkdir slot");
    let stats = checkout(&store, &validated, &dest).expect("a validated tree checks out");
    assert_eq!((stats.files, stats.symlinks, stats.dirs), (validated.files(), validated.symlinks(), validated.dirs()));
    assert_eq!(stats.bytes, validated.total_bytes());
    let root = std::fs::canonicalize(&dest).expect("canonical slot");
    let mut counts = (0, 0, 0);
    scan(&root, &root, &mut counts);
    assert_eq!(counts, (validated.files(), validated.symlinks(), validated.dirs()), "files on disk");
});
