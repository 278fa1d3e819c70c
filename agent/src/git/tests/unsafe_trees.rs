//! Crafted trees, one test per attack: each must be refused by `validate_tree` with the
//! right typed reason before anything is written.

use ferry_proto::Reason;
use gix_hash::Kind;

use super::{oid, store_with, Repo};
use crate::git::{validate_tree, GitError, GitLimits, Limit, PathProblem, SymlinkProblem};

/// Builds a tree with `build`, imports it (as an orphan commit) and validates it.
fn validate_with(limits: &GitLimits, build: impl FnOnce(&Repo) -> String) -> Result<(), GitError> {
    let repo = Repo::new(Kind::Sha1);
    let tree = build(&repo);
    let commit = repo.snapshot(&tree, "crafted");
    let (_dir, store) = store_with(&repo, &commit);
    validate_tree(&store, &oid(&tree), limits).map(|_| ())
}

fn rejected(build: impl FnOnce(&Repo) -> String) -> GitError {
    validate_with(&GitLimits::default(), build).expect_err("crafted tree must be refused")
}

/// A tree holding one file named `name`.
fn file_named(name: &'static [u8]) -> impl FnOnce(&Repo) -> String {
    move |repo| {
        let blob = repo.blob(b"payload\n");
        repo.raw_tree(&[("100644", name, &blob)])
    }
}

/// A tree holding a directory named `name` with a `config` file inside, the classic shape
/// of an attack on `.git`.
fn dir_named(name: &'static [u8]) -> impl FnOnce(&Repo) -> String {
    move |repo| {
        let blob = repo.blob(b"[core]\n\tfsmonitor = evil\n");
        let inner = repo.raw_tree(&[("100644", b"config", &blob)]);
        repo.raw_tree(&[("40000", name, &inner)])
    }
}

/// A tree holding one symlink `name -> target`.
fn link(name: &'static [u8], target: &'static [u8]) -> impl FnOnce(&Repo) -> String {
    move |repo| {
        let blob = repo.blob(target);
        repo.raw_tree(&[("120000", name, &blob)])
    }
}

fn assert_unsafe_name(err: GitError) {
    assert!(matches!(&err, GitError::UnsafePath { problem: PathProblem::Name(_), .. }), "{err}");
    assert_eq!(err.reason(), Reason::UnsafePath);
}

fn assert_unsafe_link(err: GitError, want: SymlinkProblem) {
    assert!(matches!(&err, GitError::UnsafeSymlink { problem, .. } if *problem == want), "{err}");
    assert_eq!(err.reason(), Reason::UnsafeSymlink);
}

#[test]
fn dot_dot_entry() {
    assert_unsafe_name(rejected(dir_named(b"..")));
}

#[test]
fn dot_entry() {
    assert_unsafe_name(rejected(file_named(b".")));
}

#[test]
fn dot_git_directory() {
    assert_unsafe_name(rejected(dir_named(b".git")));
}

#[test]
fn dot_git_upper_case() {
    assert_unsafe_name(rejected(dir_named(b".GIT")));
}

#[test]
fn dot_git_with_hfs_ignorable_zero_width_non_joiner() {
    assert_unsafe_name(rejected(dir_named(".g\u{200c}it".as_bytes())));
}

#[test]
fn dot_git_as_ntfs_short_name() {
    assert_unsafe_name(rejected(dir_named(b"git~1")));
}

#[test]
fn trailing_dot() {
    assert_unsafe_name(rejected(file_named(b"a.")));
}

#[test]
fn trailing_space() {
    assert_unsafe_name(rejected(file_named(b"a ")));
}

#[test]
fn backslash_in_name() {
    assert_unsafe_name(rejected(file_named(b"a\\b")));
}

#[test]
fn slash_in_name() {
    assert_unsafe_name(rejected(file_named(b"etc/passwd")));
}

#[test]
fn gitmodules_as_symlink() {
    assert_unsafe_name(rejected(link(b".gitmodules", b"elsewhere")));
}

#[test]
fn absolute_symlink() {
    assert_unsafe_link(rejected(link(b"l", b"/etc/passwd")), SymlinkProblem::Absolute);
}

#[test]
fn parent_symlink() {
    assert_unsafe_link(rejected(link(b"l", b"../x")), SymlinkProblem::EscapesRoot);
}

#[test]
fn backslash_symlink() {
    assert_unsafe_link(rejected(link(b"l", b"..\\..\\x")), SymlinkProblem::Backslash);
}

#[test]
fn drive_letter_symlink() {
    assert_unsafe_link(rejected(link(b"l", b"C:x")), SymlinkProblem::DrivePrefix);
}

#[test]
fn symlink_into_dot_git() {
    assert_unsafe_link(rejected(link(b"l", b".git/x")), SymlinkProblem::DotGit);
}

#[test]
fn two_hop_escape_through_another_link() {
    // d/l -> .. is harmless alone (it is the root); z -> d/l/../.. then steps above it.
    let err = rejected(|repo| {
        let up = repo.blob(b"..");
        let d = repo.raw_tree(&[("120000", b"l", &up)]);
        let through = repo.blob(b"d/l/../..");
        repo.raw_tree(&[("40000", b"d", &d), ("120000", b"z", &through)])
    });
    assert!(matches!(&err, GitError::UnsafeSymlink { path, .. } if path == "z"), "{err}");
    assert_unsafe_link(err, SymlinkProblem::EscapesRoot);
}

#[test]
fn symlink_and_directory_with_one_name() {
    // A symlink `a -> b` and a file `a/f`: a checkout would write through the link.
    let err = rejected(|repo| {
        let target = repo.blob(b"b");
        let f = repo.blob(b"f\n");
        let a = repo.raw_tree(&[("100644", b"f", &f)]);
        repo.raw_tree(&[("120000", b"a", &target), ("40000", b"a", &a)])
    });
    assert_unsafe_link(err, SymlinkProblem::UsedAsDirectory);
}

#[test]
fn duplicate_file_names() {
    let err = rejected(|repo| {
        let one = repo.blob(b"1");
        let two = repo.blob(b"2");
        repo.raw_tree(&[("100644", b"x", &one), ("100644", b"x", &two)])
    });
    assert!(matches!(&err, GitError::UnsafePath { problem: PathProblem::Duplicate, .. }), "{err}");
}

#[test]
fn submodule_gitlink() {
    let err = rejected(|repo| {
        let file = repo.blob(b"x");
        let some_commit = "0123456789abcdef0123456789abcdef01234567";
        repo.raw_tree(&[("100644", b"a", &file), ("160000", b"sub", some_commit)])
    });
    assert!(matches!(&err, GitError::UnsafePath { problem: PathProblem::Submodule, .. }), "{err}");
    assert_eq!(err.reason(), Reason::UnsafePath);
}

#[test]
fn group_writable_mode() {
    let err = rejected(|repo| {
        let file = repo.blob(b"x");
        repo.raw_tree(&[("100664", b"a", &file)])
    });
    assert!(matches!(&err, GitError::UnsafePath { problem: PathProblem::Mode(0o100664), .. }), "{err}");
}

#[test]
fn slot_record_in_the_tree() {
    let err = rejected(file_named(b".ferry-slot"));
    assert!(matches!(&err, GitError::UnsafePath { problem: PathProblem::Reserved, .. }), "{err}");
}

#[test]
fn missing_blob() {
    // A pack holding only the tree, not the blob it names.
    let repo = Repo::new(Kind::Sha1);
    let blob = repo.blob(b"not shipped\n");
    let tree = repo.raw_tree(&[("100644", b"a", &blob)]);
    let pack = repo.git_bytes(&["pack-objects", "--stdout", "-q"], format!("{tree}\n").as_bytes());
    let (_dir, store) = super::empty_store(&repo);
    store.import_pack(&mut &pack[..], &[], &GitLimits::default()).expect("import");
    let err = validate_tree(&store, &oid(&tree), &GitLimits::default()).expect_err("incomplete");
    assert!(matches!(&err, GitError::MissingObject { path: Some(p), found: None, .. } if p == "a"), "{err}");
    assert_eq!(err.reason(), Reason::MissingObject);
}

#[test]
fn tree_posing_as_a_file() {
    let err = rejected(|repo| {
        let blob = repo.blob(b"x");
        let inner = repo.raw_tree(&[("100644", b"x", &blob)]);
        repo.raw_tree(&[("100644", b"a", &inner)])
    });
    assert!(matches!(&err, GitError::MissingObject { found: Some(gix_object::Kind::Tree), .. }), "{err}");
}

#[test]
fn size_limits() {
    let nested = |repo: &Repo| {
        let blob = repo.blob(b"x");
        let mut tree = repo.raw_tree(&[("100644", b"leaf", &blob)]);
        for _ in 0..5 {
            tree = repo.raw_tree(&[("40000", b"dir", &tree), ("100644", b"f", &blob)]);
        }
        tree
    };
    let check = |limits: GitLimits, want: Limit| {
        let err = validate_with(&limits, nested).expect_err("over the limit");
        assert!(matches!(&err, GitError::SizeExceeded { limit, .. } if *limit == want), "{err}");
        assert_eq!(err.reason(), Reason::SizeExceeded);
    };
    let base = GitLimits::default();
    validate_with(&base, nested).expect("within the defaults");
    check(GitLimits { max_tree_depth: 5, ..base.clone() }, Limit::TreeDepth);
    check(GitLimits { max_path_len: 20, ..base.clone() }, Limit::PathLength);
    check(GitLimits { max_tree_entries: 8, ..base.clone() }, Limit::TreeEntries);
    check(GitLimits { max_total_bytes: 3, ..base.clone() }, Limit::TotalBytes);
    check(GitLimits { max_object_size: 20, ..base }, Limit::ObjectSize);
}
