//! Tests of the operator-side git plumbing against the real git.

#![allow(clippy::unwrap_used)]

use super::testutil::{write, Sandbox};
use super::*;

/// A repository with `deploy/` (a directory), `README` (a blob) and one commit.
fn source_repo(sandbox: &Sandbox, format: ObjectFormat) -> (PathBuf, String) {
    let dir = sandbox.init("src", format, false);
    write(&dir, "README", "hello\n");
    write(&dir, "deploy/app.conf", "port = 80\n");
    write(&dir, "deploy/bin/run", "#!/bin/sh\n");
    let commit = sandbox.commit_all(&dir, "first");
    (dir, commit)
}

#[test]
fn open_rejects_a_plain_directory_and_a_missing_one() {
    let sandbox = Sandbox::new();
    let plain = sandbox.path("plain");
    std::fs::create_dir(&plain).unwrap();
    let err = Git::open_with_env(&plain, sandbox.env()).unwrap_err();
    assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("plain as a git repository: not a git repository"), "{text}");

    let err = Git::open_with_env(&sandbox.path("nowhere"), sandbox.env()).unwrap_err();
    assert!(err.to_string().ends_with("as a git repository: no such directory"));
}

#[test]
fn open_accepts_bare_and_work_tree_repositories() {
    let sandbox = Sandbox::new();
    let bare = sandbox.init("bare.git", ObjectFormat::Sha1, true);
    let git = sandbox.open(&bare);
    assert_eq!(git.object_format().unwrap(), ObjectFormat::Sha1);
    let work = sandbox.init("work", ObjectFormat::Sha256, false);
    assert_eq!(sandbox.open(&work).object_format().unwrap(), ObjectFormat::Sha256);
}

#[test]
fn resolve_commit_peels_tags_and_names_what_is_wrong() {
    let sandbox = Sandbox::new();
    let (dir, head) = source_repo(&sandbox, ObjectFormat::Sha1);
    sandbox.git_ok(&dir, &["tag", "-a", "-m", "v1", "v1"]);
    let git = sandbox.open(&dir);
    assert_eq!(git.resolve_commit("HEAD").unwrap(), head);
    assert_eq!(git.resolve_commit("v1").unwrap(), head);
    assert_eq!(git.resolve_commit(&head[..10]).unwrap(), head);

    let err = git.resolve_commit("nope").unwrap_err();
    assert!(matches!(err, GitError::UnknownRevision { .. }), "{err:?}");
    assert!(err.to_string().starts_with("unknown revision 'nope' in /"), "{err}");
    // Looks like an option: must not be taken as one.
    let err = git.resolve_commit("--all").unwrap_err();
    assert!(matches!(err, GitError::UnknownRevision { .. }), "{err:?}");

    let tree = git.commit_tree_id("HEAD").unwrap();
    let err = git.resolve_commit(&tree).unwrap_err();
    assert!(err.to_string().ends_with("names a tree, not a commit"), "{err}");
    assert!(matches!(git.resolve_commit("a\nb"), Err(GitError::InvalidInput { .. })));
}

#[test]
fn tree_at_finds_directories_and_explains_misses() {
    let sandbox = Sandbox::new();
    let (dir, head) = source_repo(&sandbox, ObjectFormat::Sha1);
    let git = sandbox.open(&dir);
    let root = sandbox.git_ok(&dir, &["rev-parse", "HEAD^{tree}"]);
    let deploy = sandbox.git_ok(&dir, &["rev-parse", "HEAD:deploy"]);
    assert_eq!(git.tree_at("HEAD", None).unwrap(), root);
    assert_eq!(git.tree_at("main", Some("/")).unwrap(), root);
    assert_eq!(git.commit_tree_id(&head).unwrap(), root);
    assert_eq!(git.tree_at("HEAD", Some("deploy")).unwrap(), deploy);
    assert_eq!(git.tree_at("HEAD", Some("./deploy//")).unwrap(), deploy);

    let err = git.tree_at("HEAD", Some("README")).unwrap_err();
    assert!(matches!(err, GitError::NotADirectory { ref kind, .. } if kind == "blob"));
    assert!(err.to_string().starts_with("path 'README' in commit "), "{err}");
    assert!(err.to_string().contains("is a blob, not a directory"), "{err}");

    let err = git.tree_at("HEAD", Some("deploy/missing")).unwrap_err();
    assert!(matches!(err, GitError::PathNotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with("path 'deploy/missing' does not exist in commit"));
    assert!(matches!(git.tree_at("HEAD", Some("../etc")), Err(GitError::InvalidInput { .. })));
    assert!(matches!(git.tree_at("nope", Some("deploy")), Err(GitError::UnknownRevision { .. })));

    // A submodule is named as such, not reported missing.
    let gitlink = format!("160000,{},deploy/sub", "1".repeat(40));
    sandbox.git_ok(&dir, &["update-index", "--add", "--cacheinfo", &gitlink]);
    sandbox.git_ok(&dir, &["commit", "-q", "-m", "submodule"]);
    let err = git.tree_at("HEAD", Some("deploy/sub")).unwrap_err();
    assert!(matches!(err, GitError::NotADirectory { ref kind, .. } if kind == "commit"));
}

#[test]
fn snapshot_is_an_orphan_with_a_fixed_identity_date_and_message() {
    let sandbox = Sandbox::new();
    let (dir, head) = source_repo(&sandbox, ObjectFormat::Sha1);
    let git = sandbox.open(&dir);
    let tree = git.tree_at(&head, Some("deploy")).unwrap();
    let id = git.make_snapshot(&tree, "main", "stable", 7, Some("deploy/")).unwrap();
    let raw = String::from_utf8(git.cat_commit(&id).unwrap()).unwrap();
    let expected = format!(
        "tree {tree}\n\
         author Ferry <ferry@localhost> 1700000000 +0000\n\
         committer Ferry <ferry@localhost> 1700000000 +0000\n\
         \n\
         ferry release stable 7\n\nsource: {head}\npath: deploy\n"
    );
    assert_eq!(raw, expected);

    let root = git.commit_tree_id(&head).unwrap();
    let whole = git.make_snapshot(&root, &head, "stable", 7, None).unwrap();
    assert!(String::from_utf8(git.cat_commit(&whole).unwrap()).unwrap().ends_with("path: /\n"));
}

#[test]
fn snapshot_id_ignores_operator_identity_zone_signing_and_encoding() {
    let sandbox = Sandbox::new();
    let (dir, head) = source_repo(&sandbox, ObjectFormat::Sha1);
    let tree = sandbox.git_ok(&dir, &["rev-parse", "HEAD:deploy"]);
    let plain = sandbox.open(&dir).make_snapshot(&tree, &head, "stable", 3, Some("deploy")).unwrap();

    // An operator with their own identity, zone, signing and commit encoding.
    for (key, value) in [
        ("user.name", "Operator Person"),
        ("user.email", "op@example.com"),
        ("commit.gpgSign", "true"),
        ("user.signingKey", "DEADBEEF"),
        ("i18n.commitEncoding", "ISO-8859-1"),
    ] {
        sandbox.git_ok(&dir, &["config", key, value]);
    }
    let mut env = sandbox.env();
    env.extend([
        ("TZ".into(), "Asia/Kolkata".into()),
        ("GIT_AUTHOR_NAME".into(), "Leaky".into()),
        ("GIT_COMMITTER_DATE".into(), "@1 +0100".into()),
    ]);
    let operator = Git::open_with_env(&dir, env).unwrap();
    let again = operator.make_snapshot(&tree, &head, "stable", 3, Some("deploy")).unwrap();
    assert_eq!(plain, again);

    // A fresh clone of the same source gives the same snapshot too.
    let clone = sandbox.path("clone");
    let out = sandbox.git(sandbox.root.path(), &["clone", "-q", dir.to_str().unwrap(), clone.to_str().unwrap()]);
    assert!(out.status.success());
    let cloned = sandbox.open(&clone).make_snapshot(&tree, &head, "stable", 3, Some("deploy")).unwrap();
    assert_eq!(plain, cloned);

    // A different release number is a different snapshot.
    let other = operator.make_snapshot(&tree, &head, "stable", 4, Some("deploy")).unwrap();
    assert_ne!(plain, other);
}

#[test]
fn snapshot_rejects_a_tree_that_is_not_the_sources() {
    let sandbox = Sandbox::new();
    let (dir, head) = source_repo(&sandbox, ObjectFormat::Sha1);
    let git = sandbox.open(&dir);
    let root = git.commit_tree_id(&head).unwrap();
    let err = git.make_snapshot(&root, &head, "stable", 1, Some("deploy")).unwrap_err();
    assert!(matches!(err, GitError::TreeMismatch { .. }), "{err:?}");
    let err = git.make_snapshot(&root, &head, "has space", 1, None).unwrap_err();
    assert!(matches!(err, GitError::InvalidInput { what: "channel", .. }));
    let err = git.make_snapshot("--help", &head, "s", 1, None).unwrap_err();
    assert!(matches!(err, GitError::InvalidInput { what: "tree id", .. }));
}

#[test]
fn refs_are_written_read_and_listed_by_prefix() {
    let sandbox = Sandbox::new();
    let (dir, head) = source_repo(&sandbox, ObjectFormat::Sha256);
    let git = sandbox.open(&dir);
    let tree = git.commit_tree_id(&head).unwrap();
    let s1 = git.make_snapshot(&tree, &head, "stable", 1, None).unwrap();
    let s2 = git.make_snapshot(&tree, &head, "stable", 2, None).unwrap();
    let b1 = git.make_snapshot(&tree, &head, "beta", 1, None).unwrap();
    assert_eq!(s1.len(), 64);
    git.update_ref("refs/ferry/stable/1", &s1).unwrap();
    git.update_ref("refs/ferry/stable/2", &s2).unwrap();
    git.update_ref("refs/ferry/stable2/1", &s2).unwrap();
    git.update_ref("refs/ferry/beta/1", &b1).unwrap();

    assert_eq!(git.read_ref("refs/ferry/stable/2").unwrap(), Some(s2.clone()));
    assert_eq!(git.read_ref("refs/ferry/stable/3").unwrap(), None);
    // A directory of refs is not a ref.
    assert_eq!(git.read_ref("refs/ferry/stable").unwrap(), None);

    let stable = git.list_refs("refs/ferry/stable/").unwrap();
    assert_eq!(
        stable,
        vec![("refs/ferry/stable/1".to_owned(), s1.clone()), ("refs/ferry/stable/2".to_owned(), s2.clone()),]
    );
    assert_eq!(git.list_refs("refs/ferry/stab").unwrap().len(), 3);
    assert_eq!(git.list_refs("refs/ferry/").unwrap().len(), 4);
    assert!(git.list_refs("refs/nothing/").unwrap().is_empty());
    assert!(git.list_refs("refs/ferry/*").is_err());

    for bad in ["HEAD", "refs/ferry/a..b", "refs/ferry/x.lock", "refs/ferry/a b"] {
        let err = git.update_ref(bad, &s1).unwrap_err();
        assert!(matches!(err, GitError::InvalidInput { what: "ref name", .. }), "{bad}");
    }
    assert!(git.update_ref("refs/ferry/x", "HEAD").is_err());
}

#[test]
fn tree_paths_normalise_to_one_spelling() {
    for root in [None, Some(""), Some("/"), Some("."), Some("./"), Some("//")] {
        assert_eq!(normalize_tree_path(root).unwrap(), None, "{root:?}");
    }
    for same in ["a/b", "/a/b/", "./a//b", "a/./b/."] {
        assert_eq!(normalize_tree_path(Some(same)).unwrap().as_deref(), Some("a/b"));
    }
    assert!(normalize_tree_path(Some("a/../b")).is_err());
    assert!(normalize_tree_path(Some("a\nb")).is_err());
}

#[test]
fn error_lines_prefer_fatal_and_quote_arguments() {
    assert_eq!(stderr_summary(b"warning: x\nfatal: bad revision 'y'\n"), "bad revision 'y'");
    assert_eq!(stderr_summary(b"\n  something odd\n"), "something odd");
    assert_eq!(stderr_summary(b""), "no error message");
    assert_eq!(display_command(&["rev-parse", "nope^{commit}", "it's"]), r"git rev-parse 'nope^{commit}' 'it'\''s'");
}

#[test]
fn committer_time_and_subject_come_from_the_raw_commit() {
    let raw = b"tree 1\nauthor A <a> 5 +0000\ncommitter C <c> d> 1700000000 -0700\n\nsubject\n\nbody\n";
    assert_eq!(committer_time(raw), Some(1_700_000_000));
    assert_eq!(commit_subject(raw), b"subject");
    assert_eq!(commit_subject(b"tree 1\n"), b"");
}
