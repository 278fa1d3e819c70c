//! The one error type of the object-store module, and how each case maps to a typed
//! [`Reason`](ferry_proto::Reason).
//!
//! Every variant carries what a person at the terminal needs to act: the offending path and
//! symlink target, the object id, or the limit with its configured maximum. Problems found in
//! untrusted input (pack bytes, tree shapes) are kept apart from local failures (`Io`) so the
//! report says whether the release or the device is at fault.

use std::path::PathBuf;

use ferry_proto::Reason;
use gix_hash::ObjectId;
use gix_object::bstr::BString;

/// A configured limit of [`GitLimits`](super::GitLimits) that was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Objects declared by a pack header.
    Objects,
    /// Size of one (decompressed) object.
    ObjectSize,
    /// Length of a delta chain in an imported pack.
    DeltaChain,
    /// Directory nesting of a tree.
    TreeDepth,
    /// Length in bytes of a path (or a symlink target) inside the tree.
    PathLength,
    /// Length in bytes of a single file name (the file system's `NAME_MAX`).
    NameLength,
    /// Entries (files, links, directories) of a whole tree.
    TreeEntries,
    /// Bytes of a pack stream, or of all files of a tree together.
    TotalBytes,
    /// Work spent resolving symlinks through each other.
    SymlinkResolution,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Objects => "object count",
            Limit::ObjectSize => "object size",
            Limit::DeltaChain => "delta chain length",
            Limit::TreeDepth => "tree depth",
            Limit::PathLength => "path length",
            Limit::NameLength => "file name length",
            Limit::TreeEntries => "tree entry count",
            Limit::TotalBytes => "total bytes",
            Limit::SymlinkResolution => "symlink resolution steps",
        })
    }
}

/// Why a tree entry's name or mode may not be checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// Rejected by `gix_validate` (all protections on): `.`/`..`, separators, `.git` in any
    /// spelling (case, HFS-ignorable code points, NTFS short names and trailing dots or
    /// spaces), Windows drive prefixes, device names and reserved characters.
    Name(String),
    /// A NUL byte in the name.
    Nul,
    /// Two entries of one tree share a name (for example a file `a` and a directory `a`).
    Duplicate,
    /// A name the agent reserves for itself at the slot root.
    Reserved,
    /// A mode other than 100644, 100755, 120000 or 040000.
    Mode(u16),
    /// A gitlink (mode 160000): submodules are not part of a release.
    Submodule,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathProblem::Name(why) => write!(f, "forbidden name: {why}"),
            PathProblem::Nul => f.write_str("NUL byte in name"),
            PathProblem::Duplicate => f.write_str("two entries of one tree share this name"),
            PathProblem::Reserved => f.write_str("name reserved for the agent's slot record"),
            PathProblem::Mode(mode) => write!(f, "forbidden mode {mode:06o}"),
            PathProblem::Submodule => f.write_str("submodule (gitlink) entries are not allowed"),
        }
    }
}

/// Why a symbolic link may not be checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymlinkProblem {
    /// Empty target, which no file system can create.
    Empty,
    /// Target starting with `/`.
    Absolute,
    /// Target containing `\`, which Windows (and Samba shares) read as a separator.
    Backslash,
    /// Target starting with a drive prefix such as `C:`.
    DrivePrefix,
    /// Target containing a NUL byte.
    Nul,
    /// A `.git` component (any spelling) in the target.
    DotGit,
    /// Following the target (through the tree's other links) steps above the slot root.
    EscapesRoot,
    /// Following the target takes more than the allowed number of link hops (or loops).
    TooManyHops,
    /// The link is also used as a directory by another entry of the tree.
    UsedAsDirectory,
}

impl std::fmt::Display for SymlinkProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SymlinkProblem::Empty => "empty target",
            SymlinkProblem::Absolute => "absolute target",
            SymlinkProblem::Backslash => "backslash in target",
            SymlinkProblem::DrivePrefix => "drive prefix in target",
            SymlinkProblem::Nul => "NUL byte in target",
            SymlinkProblem::DotGit => "target has a .git component",
            SymlinkProblem::EscapesRoot => "target resolves outside the slot",
            SymlinkProblem::TooManyHops => "target does not resolve within the hop limit",
            SymlinkProblem::UsedAsDirectory => "link is also a directory of another entry",
        })
    }
}

/// Everything that can go wrong while importing, validating, checking out or comparing trees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// A tree entry whose name or mode may not be checked out.
    #[error("unsafe path {path:?}: {problem}")]
    UnsafePath {
        /// Slash-separated path from the tree root.
        path: BString,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// A symbolic link that is absolute, escapes the slot or shadows a directory.
    #[error("unsafe symlink {path:?} -> {target:?}: {problem}")]
    UnsafeSymlink {
        /// Slash-separated path of the link from the tree root.
        path: BString,
        /// The link's target as stored.
        target: BString,
        /// What is wrong with it.
        problem: SymlinkProblem,
    },
    /// A configured limit was exceeded.
    #[error("{limit} limit of {max} exceeded{}{}", found.map(|n| format!(" ({n})")).unwrap_or_default(), at_suffix(at))]
    SizeExceeded {
        /// Which limit.
        limit: Limit,
        /// Its configured maximum.
        max: u64,
        /// The value found, when known before giving up.
        found: Option<u64>,
        /// Where: a path, an object id or the pack stream.
        at: String,
    },
    /// A delta payload's prerequisite commit is not in the local store.
    #[error("prerequisite commit {id} is not in the local object store")]
    MissingPrerequisite {
        /// The prerequisite's id.
        id: ObjectId,
    },
    /// An object is absent, or is not of the kind its referrer says.
    #[error("{}object {id} is missing{}", path.as_ref().map(|p| format!("{p:?}: ")).unwrap_or_default(), found.map(|k| format!(" (found a {k}, expected a {expected})")).unwrap_or_else(|| format!(" (expected a {expected})")))]
    MissingObject {
        /// The object's id.
        id: ObjectId,
        /// The kind the referrer expects.
        expected: gix_object::Kind,
        /// The kind actually stored under that id, if any.
        found: Option<gix_object::Kind>,
        /// The tree path that refers to it, if any.
        path: Option<BString>,
    },
    /// A thin pack refers to a delta base that is neither in the pack nor in the store.
    #[error("pack refers to a delta base that is not available: {detail}")]
    ThinBaseMissing {
        /// gix's account of it.
        detail: String,
    },
    /// Bytes that are not a valid pack (truncated, bad checksum, junk after the end, ...).
    #[error("malformed pack or object: {detail}")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// Reading the pack stream handed to the importer failed.
    #[error("could not read the pack stream: {source}")]
    PackRead {
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
    /// The checkout destination is not an existing, empty directory.
    #[error("checkout destination {path:?} is not an empty directory")]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// Reading the local object store failed for a reason other than absence.
    #[error("object store error: {detail}")]
    Store {
        /// gix's account of it.
        detail: String,
    },
    /// A local I/O failure (disk full, permissions, ...).
    #[error("I/O error at {path:?}: {source}")]
    Io {
        /// The path being worked on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn at_suffix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!(" at {at}")
    }
}

impl GitError {
    /// The typed reason a device reports for this failure.
    ///
    /// Tree depth, path length and name length are reported as
    /// [`Reason::SizeExceeded`]; forbidden names and modes as [`Reason::UnsafePath`].
    pub fn reason(&self) -> Reason {
        match self {
            GitError::UnsafePath { .. } => Reason::UnsafePath,
            GitError::UnsafeSymlink { .. } => Reason::UnsafeSymlink,
            GitError::SizeExceeded { .. } => Reason::SizeExceeded,
            GitError::MissingPrerequisite { .. } => Reason::MissingPrerequisite,
            GitError::MissingObject { .. } | GitError::ThinBaseMissing { .. } | GitError::Store { .. } => {
                Reason::MissingObject
            }
            GitError::Malformed { .. } => Reason::Malformed,
            GitError::PackRead { source } if source.kind() == std::io::ErrorKind::InvalidData => Reason::Malformed,
            GitError::PackRead { .. } | GitError::DestinationNotEmpty { .. } | GitError::Io { .. } => Reason::Io,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GitError::Io { path: path.into(), source }
    }

    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        GitError::Malformed { detail: detail.into() }
    }

    pub(crate) fn size(limit: Limit, max: u64, found: Option<u64>, at: impl Into<String>) -> Self {
        GitError::SizeExceeded { limit, max, found, at: at.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_a_person_needs() {
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").expect("hex");
        let cases: Vec<(GitError, &[&str])> = vec![
            (
                GitError::UnsafeSymlink {
                    path: "z".into(),
                    target: "d/l/../..".into(),
                    problem: SymlinkProblem::EscapesRoot,
                },
                &["\"z\"", "d/l/../..", "outside the slot"],
            ),
            (
                GitError::UnsafePath { path: "a/.git".into(), problem: PathProblem::Mode(0o100664) },
                &["a/.git", "100664"],
            ),
            (GitError::size(Limit::TreeDepth, 128, Some(129), "\"a/b\""), &["tree depth", "128", "129", "a/b"]),
            (GitError::MissingPrerequisite { id }, &["0123456789abcdef"]),
            (
                GitError::MissingObject {
                    id,
                    expected: gix_object::Kind::Blob,
                    found: Some(gix_object::Kind::Tree),
                    path: Some("x".into()),
                },
                &["\"x\"", "0123456789abcdef", "found a tree, expected a blob"],
            ),
        ];
        for (err, needles) in cases {
            let text = err.to_string();
            for needle in needles {
                assert!(text.contains(needle), "{text:?} lacks {needle:?}");
            }
        }
    }
}
