//! Operator-side git plumbing: resolve revisions, make deterministic orphan snapshot
//! commits, manage `refs/ferry/*` and stream packs out of `git pack-objects`.
//!
//! This shells out to the real `git` CLI (only the operator side may; the agent never
//! needs a git binary). The operator's own configuration mostly applies, but everything
//! that changes *output bytes* is pinned with `-c` flags ([`PINNED_CONFIG`]) and command
//! line options, so the same inputs give the same snapshot id and the same pack bytes on
//! any operator machine with the same git version. Snapshot ids do not depend on the git
//! version at all; pack bytes may (git's delta search is not a stable format), which is why
//! payload digests are recorded in the signed manifest rather than recomputed.
//!
//! Trade-off: every call spawns a process. Releases make a handful of calls, so the
//! simplicity wins over linking a git library (gix writes no deltas, see
//! `shared/notes/gix.md`).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// Author and committer identity of every snapshot commit.
pub const SNAPSHOT_NAME: &str = "Ferry";
/// Author and committer e-mail of every snapshot commit.
pub const SNAPSHOT_EMAIL: &str = "ferry@localhost";

/// Config forced on every git invocation because it changes the bytes git writes.
/// Defaults are spelled out so an operator's `~/.gitconfig` cannot change them.
const PINNED_CONFIG: &[&str] = &[
    // Snapshot commits: no signature, no `encoding` header.
    "commit.gpgSign=false",
    "i18n.commitEncoding=UTF-8",
    // Packs: uncompressed (zstd compresses the whole bundle), single-threaded delta
    // search (deterministic), git's default window/depth, no memory-bounded window. Blobs
    // over 16 MiB are never deltas (nor bases): a device resolves a delta with its base and
    // result in memory, but streams a whole blob (docs/decisions.md, "Memory of an apply").
    "pack.compression=0",
    "pack.threads=1",
    "pack.window=10",
    "pack.depth=50",
    "pack.windowMemory=0",
    "core.bigFileThreshold=16m",
    // Object selection: the exact (non-sparse) walk, no bitmaps or verbatim pack reuse.
    "pack.useSparse=false",
    "pack.useBitmaps=false",
    "pack.allowPackReuse=false",
    // Path patterns (the sparse filter leaving patched blobs out of a delta) match case.
    "core.ignoreCase=false",
];

/// Environment variables that would point git somewhere other than `-C <repo>` or change
/// what it reads; removed from every invocation.
const SCRUBBED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_REPLACE_REF_BASE",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
];

/// Bytes of git's stderr kept for error messages; the rest is drained and dropped.
const STDERR_KEEP: usize = 64 * 1024;

/// Hash function of a repository's objects (`sha1`/`sha256`, with `as_str()` and
/// `hex_len()`): the wire contract's type, so manifests and bundles agree on it.
pub use ferry_proto::ObjectFormat;

/// A failed git operation, worded for the operator at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run git ({source}); is git installed and on PATH?")]
    Spawn {
        #[source]
        source: io::Error,
    },
    #[error("cannot use {repo} as a git repository: {reason}")]
    NotARepository { repo: PathBuf, reason: String },
    #[error("`{command}` failed in {repo}: {message} ({status})")]
    Command {
        command: String,
        repo: PathBuf,
        status: ExitStatus,
        /// The most telling line of git's stderr (`fatal:`/`error:` first).
        message: String,
    },
    #[error("unknown revision '{rev}' in {repo}: no branch, tag or commit has that name")]
    UnknownRevision { repo: PathBuf, rev: String },
    #[error("'{rev}' in {repo} names a {kind}, not a commit")]
    NotACommit { repo: PathBuf, rev: String, kind: String },
    #[error("path '{path}' does not exist in commit {commit} ({repo})")]
    PathNotFound { repo: PathBuf, commit: String, path: String },
    #[error("path '{path}' in commit {commit} is a {kind}, not a directory ({repo})")]
    NotADirectory { repo: PathBuf, commit: String, path: String, kind: String },
    #[error("commit {commit} has parents; releases must use parentless snapshot commits ({repo})")]
    NotASnapshot { repo: PathBuf, commit: String },
    #[error("tree {given} is not the tree of {commit} at path '{path}' (that is {actual})")]
    TreeMismatch { given: String, commit: String, path: String, actual: String },
    #[error("unsupported object format '{0}' (Ferry supports sha1 and sha256)")]
    UnsupportedObjectFormat(String),
    #[error("invalid {what} '{value}': {reason}")]
    InvalidInput { what: &'static str, value: String, reason: &'static str },
    #[error("unexpected output from `{command}`: {detail}")]
    UnexpectedOutput { command: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// A repository the bundler reads releases from and records snapshots in.
#[derive(Debug, Clone)]
pub struct Git {
    repo: PathBuf,
    /// Extra environment for every invocation (tests isolate `HOME` this way).
    env: Vec<(OsString, OsString)>,
}

impl Git {
    /// Opens `repo` (a work tree or a bare repository) after checking git recognises it.
    pub fn open(repo: &Path) -> Result<Git, GitError> {
        Git::open_with_env(repo, Vec::new())
    }

    fn open_with_env(repo: &Path, env: Vec<(OsString, OsString)>) -> Result<Git, GitError> {
        if !repo.is_dir() {
            return Err(GitError::NotARepository { repo: repo.to_path_buf(), reason: "no such directory".into() });
        }
        let repo = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf());
        let git = Git { repo, env };
        match git.run(&["rev-parse", "--git-dir"], None, &[]) {
            Ok(_) => Ok(git),
            Err(GitError::Command { message, .. }) => Err(GitError::NotARepository { repo: git.repo, reason: message }),
            Err(e) => Err(e),
        }
    }

    /// The repository's object format (`git rev-parse --show-object-format`).
    pub fn object_format(&self) -> Result<ObjectFormat, GitError> {
        let name = self.run_line(&["rev-parse", "--show-object-format"])?;
        name.parse().map_err(|_| GitError::UnsupportedObjectFormat(name))
    }

    /// Resolves `rev` (branch, tag, id, `main~2`, …) to a full commit id, peeling tags.
    pub fn resolve_commit(&self, rev: &str) -> Result<String, GitError> {
        check_rev(rev)?;
        let peeled = format!("{rev}^{{commit}}");
        if let Some(id) = self.rev_parse_quiet(&peeled)? {
            return Ok(id);
        }
        // Say why: no such name, or a name for a tree or blob.
        match self.rev_parse_quiet(rev)? {
            None => Err(GitError::UnknownRevision { repo: self.repo.clone(), rev: rev.to_owned() }),
            Some(id) => Err(GitError::NotACommit {
                repo: self.repo.clone(),
                rev: rev.to_owned(),
                kind: self.run_line(&["cat-file", "-t", &id])?,
            }),
        }
    }

    /// The tree of `commit`, or of the directory `path` inside it (`None`, `""` and `"/"`
    /// mean the root). Fails clearly when the path is missing or not a directory.
    pub fn tree_at(&self, commit: &str, path: Option<&str>) -> Result<String, GitError> {
        let commit = self.resolve_commit(commit)?;
        let Some(path) = normalize_tree_path(path)? else {
            return self.run_line(&["rev-parse", "--verify", &format!("{commit}^{{tree}}")]);
        };
        match self.object_kind(&format!("{commit}:{path}"))? {
            Some((id, kind)) if kind == "tree" => Ok(id),
            Some((_, kind)) => Err(GitError::NotADirectory { repo: self.repo.clone(), commit, path, kind }),
            None => {
                // `cat-file` also says "missing" for a submodule: name it if so.
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
                let kind = self.entry_kind(&format!("{commit}:{parent}"), name)?;
                match kind {
                    Some(kind) => Err(GitError::NotADirectory { repo: self.repo.clone(), commit, path, kind }),
                    None => Err(GitError::PathNotFound { repo: self.repo.clone(), commit, path }),
                }
            }
        }
    }

    /// The root tree of `commit`.
    #[cfg(test)]
    pub fn commit_tree_id(&self, commit: &str) -> Result<String, GitError> {
        self.tree_at(commit, None)
    }

    /// Makes the deterministic, parentless snapshot commit of `tree` for release
    /// `release` of `channel`, built from `source_commit` at `path`.
    ///
    /// Author and committer are `Ferry <ferry@localhost>`, both dated with the source
    /// commit's committer time in UTC; the message is
    /// `ferry release <channel> <release>\n\nsource: <commit>\npath: <path or />\n`.
    /// Nothing about the operator (name, time zone, signing, encoding) gets in, so the
    /// same inputs give the same id. `tree` must be the tree of `source_commit` at `path`.
    pub fn make_snapshot(
        &self,
        tree: &str,
        source_commit: &str,
        channel: &str,
        release: u64,
        path: Option<&str>,
    ) -> Result<String, GitError> {
        check_channel(channel)?;
        check_full_hex("tree id", tree)?;
        let path = normalize_tree_path(path)?;
        let source = self.resolve_commit(source_commit)?;
        let actual = self.tree_at(&source, path.as_deref())?;
        if actual != tree {
            return Err(GitError::TreeMismatch {
                given: tree.to_owned(),
                commit: source,
                path: path.unwrap_or_else(|| "/".into()),
                actual,
            });
        }
        let when = committer_time(&self.cat_commit(&source)?).ok_or_else(|| GitError::UnexpectedOutput {
            command: format!("git cat-file commit {source}"),
            detail: "no parsable committer time".into(),
        })?;
        let date = format!("@{when} +0000");
        let message = format!(
            "ferry release {channel} {release}\n\nsource: {source}\npath: {}\n",
            path.as_deref().unwrap_or("/")
        );
        let env = [
            ("GIT_AUTHOR_NAME", SNAPSHOT_NAME),
            ("GIT_AUTHOR_EMAIL", SNAPSHOT_EMAIL),
            ("GIT_AUTHOR_DATE", date.as_str()),
            ("GIT_COMMITTER_NAME", SNAPSHOT_NAME),
            ("GIT_COMMITTER_EMAIL", SNAPSHOT_EMAIL),
            ("GIT_COMMITTER_DATE", date.as_str()),
        ];
        // The message goes in on stdin: `commit-tree` stores it byte for byte.
        let out = self.run(&["commit-tree", "--no-gpg-sign", tree], Some(message.as_bytes()), &env)?;
        let id = self.single_line("commit-tree", &out)?;
        check_full_hex("commit id", &id)?;
        tracing::debug!(snapshot = %id, %channel, release, "made snapshot commit");
        Ok(id)
    }

    /// Points ref `name` (a full name under `refs/`) at `new`, creating it if needed.
    pub fn update_ref(&self, name: &str, new: &str) -> Result<(), GitError> {
        self.check_ref_name(name)?;
        check_full_hex("object id", new)?;
        self.run(&["update-ref", "--no-deref", "-m", "ferry: record release", name, new], None, &[])?;
        Ok(())
    }

    /// The object id ref `name` points at, or `None` if there is no such ref.
    pub fn read_ref(&self, name: &str) -> Result<Option<String>, GitError> {
        self.check_ref_name(name)?;
        Ok(self.for_each_ref(name)?.into_iter().find(|(refname, _)| refname == name).map(|(_, id)| id))
    }

    /// All refs whose full name starts with `prefix` (plain string prefix, e.g.
    /// `refs/ferry/stable/`), as `(name, id)` sorted by name bytewise (so `…/10` sorts
    /// before `…/9`: callers parse release numbers themselves).
    #[cfg(test)]
    pub fn list_refs(&self, prefix: &str) -> Result<Vec<(String, String)>, GitError> {
        if !prefix.starts_with("refs/") || prefix.contains(['*', '?', '[', '\\', '\n', ' ']) {
            return Err(GitError::InvalidInput {
                what: "ref prefix",
                value: prefix.to_owned(),
                reason: "must start with refs/ and contain no glob characters or spaces",
            });
        }
        // for-each-ref matches whole path components: ask for the enclosing directory.
        let dir = &prefix[..=prefix.rfind('/').unwrap_or(4)];
        let mut refs = self.for_each_ref(dir)?;
        refs.retain(|(name, _)| name.starts_with(prefix));
        Ok(refs)
    }

    /// Checks `name` is a full ref name under `refs/` that git accepts.
    pub fn check_ref_name(&self, name: &str) -> Result<(), GitError> {
        let invalid = || GitError::InvalidInput {
            what: "ref name",
            value: name.to_owned(),
            reason: "not a valid full git ref name under refs/",
        };
        if !name.starts_with("refs/") {
            return Err(invalid());
        }
        let status = self
            .command(&["check-ref-format", name], &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| GitError::Spawn { source })?;
        if status.success() {
            Ok(())
        } else {
            Err(invalid())
        }
    }

    /// The raw bytes of commit `id` (`git cat-file commit`).
    pub(crate) fn cat_commit(&self, id: &str) -> Result<Vec<u8>, GitError> {
        self.run(&["cat-file", "commit", id], None, &[])
    }

    /// Requires `id` to be the full id of a parentless commit (a release snapshot).
    pub(crate) fn check_snapshot(&self, id: &str) -> Result<Vec<u8>, GitError> {
        check_full_hex("snapshot id", id)?;
        let format = self.object_format()?;
        if id.len() != format.hex_len() {
            return Err(GitError::InvalidInput {
                what: "snapshot id",
                value: id.to_owned(),
                reason: "wrong length for this repository's object format",
            });
        }
        match self.object_kind(id)? {
            Some((_, kind)) if kind == "commit" => {}
            Some((_, kind)) => return Err(GitError::NotACommit { repo: self.repo.clone(), rev: id.to_owned(), kind }),
            None => return Err(GitError::UnknownRevision { repo: self.repo.clone(), rev: id.to_owned() }),
        }
        let raw = self.cat_commit(id)?;
        if commit_headers(&raw).any(|line| line.starts_with(b"parent ")) {
            return Err(GitError::NotASnapshot { repo: self.repo.clone(), commit: id.to_owned() });
        }
        Ok(raw)
    }

    /// Streams `git pack-objects --revs` for the revision lines `revs` into `out`,
    /// returning the bytes written. `thin` makes a thin pack against the negative revs,
    /// with `--shallow` so git finds objects shared with unrelated (orphan) commits.
    /// Reused deltas and compressed data are switched off so the bytes do not depend on
    /// how the repository happens to be packed. `sparse_filter`, the id of a blob of
    /// sparse-checkout patterns, leaves out the blobs at the paths it excludes.
    pub(crate) fn pack_objects(
        &self,
        revs: &str,
        thin: bool,
        sparse_filter: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<u64, GitError> {
        let filter = sparse_filter.map(|id| format!("--filter=sparse:oid={id}"));
        let mut args = vec![
            "pack-objects",
            "--revs",
            "--stdout",
            "--threads=1",
            "--window=10",
            "--depth=50",
            "--delta-base-offset",
            "--no-reuse-delta",
            "--no-reuse-object",
            "-q",
        ];
        if thin {
            args.extend(["--thin", "--shallow"]);
        }
        args.extend(filter.as_deref());
        let command = display_command(&args);
        tracing::debug!(repo = %self.repo.display(), %command, "streaming pack");
        let mut child = self
            .command(&args, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GitError::Spawn { source })?;
        let (copied, stderr) = std::thread::scope(|scope| {
            let stdin = child.stdin.take();
            let stderr = child.stderr.take();
            scope.spawn(move || feed(stdin, revs.as_bytes()));
            let stderr = scope.spawn(move || drain(stderr));
            let copied = match child.stdout.take() {
                Some(mut stdout) => copy_counted(&mut stdout, out),
                None => Err(CopyError::Read(io::ErrorKind::BrokenPipe.into())),
            };
            if copied.is_err() {
                // Stop git so the stderr thread sees EOF; the error below says why.
                let _ = child.kill();
            }
            (copied, stderr.join().unwrap_or_default())
        });
        let status = wait(&mut child)?;
        let written = match copied {
            Ok(n) => n,
            Err(CopyError::Write(source)) => return Err(GitError::Io { context: "writing the bundle".into(), source }),
            Err(CopyError::Read(source)) if status.success() => {
                return Err(GitError::Io { context: format!("reading the output of `{command}`"), source })
            }
            Err(CopyError::Read(_)) => 0,
        };
        if !status.success() {
            return Err(self.command_error(command, status, &stderr));
        }
        Ok(written)
    }

    /// Writes `content` as a blob into the repository and returns its id.
    pub(crate) fn store_blob(&self, content: &[u8]) -> Result<String, GitError> {
        let out = self.run(&["hash-object", "-w", "--stdin"], Some(content), &[])?;
        self.single_line("hash-object", &out)
    }

    /// `(id, type)` of the object `spec` names, or `None` if it does not exist.
    fn object_kind(&self, spec: &str) -> Result<Option<(String, String)>, GitError> {
        let input = format!("{spec}\n");
        let out = self.run(&["cat-file", "--batch-check=%(objectname) %(objecttype)"], Some(input.as_bytes()), &[])?;
        let line = self.single_line("cat-file --batch-check", &out)?;
        if line.ends_with(" missing") || line.ends_with(" ambiguous") {
            return Ok(None);
        }
        match line.split_once(' ') {
            Some((id, kind)) if is_hex(id) && !kind.contains(' ') => Ok(Some((id.to_owned(), kind.to_owned()))),
            _ => Err(GitError::UnexpectedOutput { command: "git cat-file --batch-check".into(), detail: line }),
        }
    }

    /// The type of entry `name` in the tree `tree_spec` names, or `None` if absent.
    fn entry_kind(&self, tree_spec: &str, name: &str) -> Result<Option<String>, GitError> {
        let Some((tree, kind)) = self.object_kind(tree_spec)? else {
            return Ok(None);
        };
        if kind != "tree" {
            return Ok(None);
        }
        let out = self.run(&["ls-tree", "-z", &tree], None, &[])?;
        // Entries are "<mode> <type> <id>\t<name>\0".
        Ok(out.split(|b| *b == 0).find_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (meta, entry_name) = text.split_once('\t')?;
            (entry_name == name).then(|| meta.split(' ').nth(1).unwrap_or("entry").to_owned())
        }))
    }

    fn for_each_ref(&self, pattern: &str) -> Result<Vec<(String, String)>, GitError> {
        let out =
            self.run(&["for-each-ref", "--sort=refname", "--format=%(objectname) %(refname)", pattern], None, &[])?;
        let text = self.utf8("for-each-ref", out)?;
        text.lines()
            .map(|line| match line.split_once(' ') {
                Some((id, name)) if is_hex(id) => Ok((name.to_owned(), id.to_owned())),
                _ => Err(GitError::UnexpectedOutput { command: "git for-each-ref".into(), detail: line.to_owned() }),
            })
            .collect()
    }

    /// `git rev-parse --verify --quiet`: `None` when the name does not resolve.
    fn rev_parse_quiet(&self, spec: &str) -> Result<Option<String>, GitError> {
        let args = ["rev-parse", "--verify", "--quiet", "--end-of-options", spec];
        let output = self.output(&args, None, &[])?;
        if output.status.code() == Some(1) && output.stdout.is_empty() {
            return Ok(None);
        }
        if !output.status.success() {
            return Err(self.command_error(display_command(&args), output.status, &output.stderr));
        }
        Ok(Some(self.single_line("rev-parse", &output.stdout)?))
    }

    fn run_line(&self, args: &[&str]) -> Result<String, GitError> {
        let out = self.run(args, None, &[])?;
        self.single_line(args.first().copied().unwrap_or("git"), &out)
    }

    /// Runs git, failing with its stderr unless it exits 0; returns stdout.
    pub(crate) fn run(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Result<Vec<u8>, GitError> {
        let output = self.output(args, stdin, env)?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(self.command_error(display_command(args), output.status, &output.stderr))
        }
    }

    fn output(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> Result<std::process::Output, GitError> {
        tracing::trace!(repo = %self.repo.display(), command = %display_command(args), "git");
        let mut child = self
            .command(args, env)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GitError::Spawn { source })?;
        let input = child.stdin.take();
        std::thread::scope(|scope| {
            scope.spawn(move || feed(input, stdin.unwrap_or_default()));
            child.wait_with_output()
        })
        .map_err(|source| GitError::Io { context: format!("running `{}`", display_command(args)), source })
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new("git");
        command.arg("-C").arg(&self.repo);
        for config in PINNED_CONFIG {
            command.arg("-c").arg(config);
        }
        command.args(args);
        for name in SCRUBBED_ENV {
            command.env_remove(name);
        }
        command.env("GIT_NO_REPLACE_OBJECTS", "1").env("GIT_OPTIONAL_LOCKS", "0").env("GIT_TERMINAL_PROMPT", "0");
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(env.iter().copied());
        command
    }

    fn command_error(&self, command: String, status: ExitStatus, stderr: &[u8]) -> GitError {
        GitError::Command { command, repo: self.repo.clone(), status, message: stderr_summary(stderr) }
    }

    fn single_line(&self, what: &str, out: &[u8]) -> Result<String, GitError> {
        let text = self.utf8(what, out.to_vec())?;
        let line = text.trim_end_matches('\n');
        if line.is_empty() || line.contains('\n') {
            return Err(GitError::UnexpectedOutput {
                command: format!("git {what}"),
                detail: format!("expected one line, got {:?}", truncate(&text, 200)),
            });
        }
        Ok(line.to_owned())
    }

    fn utf8(&self, what: &str, out: Vec<u8>) -> Result<String, GitError> {
        String::from_utf8(out).map_err(|_| GitError::UnexpectedOutput {
            command: format!("git {what}"),
            detail: "output is not UTF-8".into(),
        })
    }
}

/// Normalises a sub-path of a tree: `None`, `""`, `"."` and `"/"` mean the root (`None`);
/// otherwise `a//b/./c/` becomes `a/b/c`. Rejects `..` and control characters, so the
/// same directory always gives the same snapshot message.
pub fn normalize_tree_path(path: Option<&str>) -> Result<Option<String>, GitError> {
    let Some(raw) = path else { return Ok(None) };
    let invalid = |reason| GitError::InvalidInput { what: "path", value: raw.to_owned(), reason };
    if raw.chars().any(char::is_control) {
        return Err(invalid("contains control characters"));
    }
    let parts: Vec<&str> = raw.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
    if parts.contains(&"..") {
        return Err(invalid("must not contain '..'"));
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn check_channel(channel: &str) -> Result<(), GitError> {
    if channel.is_empty() || channel.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(GitError::InvalidInput {
            what: "channel",
            value: channel.to_owned(),
            reason: "must be non-empty without spaces or control characters",
        });
    }
    Ok(())
}

fn check_rev(rev: &str) -> Result<(), GitError> {
    if rev.is_empty() || rev.chars().any(char::is_control) {
        return Err(GitError::InvalidInput {
            what: "revision",
            value: rev.to_owned(),
            reason: "must be non-empty without control characters",
        });
    }
    Ok(())
}

pub(crate) fn check_full_hex(what: &'static str, id: &str) -> Result<(), GitError> {
    if (id.len() == 40 || id.len() == 64) && is_hex(id) {
        Ok(())
    } else {
        Err(GitError::InvalidInput { what, value: id.to_owned(), reason: "expected a full lowercase hex object id" })
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Header lines of a raw commit (up to the blank line).
pub(crate) fn commit_headers(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| *b == b'\n').take_while(|line| !line.is_empty())
}

/// The first line of a raw commit's message.
pub(crate) fn commit_subject(raw: &[u8]) -> &[u8] {
    let body = raw.windows(2).position(|w| w == b"\n\n").map_or(&raw[raw.len()..], |at| &raw[at + 2..]);
    body.split(|b| *b == b'\n').next().unwrap_or_default()
}

/// Unix time of a raw commit's committer line (`committer N <e> <time> <tz>`).
fn committer_time(raw: &[u8]) -> Option<i64> {
    let line = commit_headers(raw).find(|line| line.starts_with(b"committer "))?;
    let after_email = &line[line.iter().rposition(|b| *b == b'>')? + 1..];
    let text = std::str::from_utf8(after_email).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The line of git's stderr worth showing: the first `fatal:`/`error:` line (prefix
/// dropped), else the first non-empty line.
fn stderr_summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let fatal = text.lines().find_map(|line| line.strip_prefix("fatal: ").or_else(|| line.strip_prefix("error: ")));
    match fatal.or_else(|| lines.next()) {
        Some(line) => truncate(line.trim(), 300),
        None => "no error message".into(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `git <args>` as a person would type it (single-quoting unusual arguments).
fn display_command(args: &[&str]) -> String {
    let mut line = String::from("git");
    for arg in args {
        line.push(' ');
        let plain = !arg.is_empty()
            && arg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'=' | b':'));
        if plain {
            line.push_str(arg);
        } else {
            line.push('\'');
            line.push_str(&arg.replace('\'', r"'\''"));
            line.push('\'');
        }
    }
    line
}

/// Writes `input` to a child's stdin and closes it. Git may exit before reading it all
/// (on error); the exit status reports that, so a broken pipe here is ignored.
fn feed(stdin: Option<std::process::ChildStdin>, input: &[u8]) {
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(input);
    }
}

/// Reads a child's stderr to the end, keeping the first [`STDERR_KEEP`] bytes.
fn drain(stderr: Option<std::process::ChildStderr>) -> Vec<u8> {
    let mut kept = Vec::new();
    if let Some(stderr) = stderr {
        let mut stderr = stderr;
        let _ = (&mut stderr).take(STDERR_KEEP as u64).read_to_end(&mut kept);
        let _ = io::copy(&mut stderr, &mut io::sink());
    }
    kept
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn copy_counted(from: &mut dyn Read, to: &mut dyn Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

fn wait(child: &mut Child) -> Result<ExitStatus, GitError> {
    child.wait().map_err(|source| GitError::Io { context: "waiting for git".into(), source })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
