//! Pure checks for tree entry names and symlink targets, and symlink resolution through a
//! tree held in memory. No I/O: everything here works on bytes, so it can be fuzzed and
//! property-tested without git.
//!
//! Names are checked with `gix_validate` with every protection on (Windows, HFS, NTFS), the
//! same options the checkout uses. Symlink targets are checked as text first (never
//! absolute, no `\`, no drive prefix, no `.git` component), then resolved component by
//! component through the tree's other links, the way the kernel would, with a hop cap.
//! Components that the tree does not contain (or that name a file) are treated as plain
//! directories, so a target is judged by what it could reach if someone created them later:
//! this may refuse a dangling link a kernel would never follow, but never accepts one that
//! could step above the slot root.

use std::collections::HashMap;

use gix_object::bstr::{BStr, BString, ByteSlice};
use gix_validate::path::component;

use super::error::{PathProblem, SymlinkProblem};

/// Most links followed while resolving one target (Linux allows 40).
pub(crate) const MAX_SYMLINK_HOPS: u32 = 32;

/// Every validation gix_validate offers, explicitly on: a repository's defaults turn the HFS
/// check off on Linux, which would let `.g\u{200c}it` through.
pub(crate) fn validate_options() -> component::Options {
    component::Options { protect_windows: true, protect_hfs: true, protect_ntfs: true }
}

/// Checks one tree entry name. `is_symlink` enables the `.gitmodules`-as-link check.
pub(crate) fn check_name(name: &[u8], is_symlink: bool) -> Result<(), PathProblem> {
    if name.contains(&0) {
        return Err(PathProblem::Nul);
    }
    let mode = is_symlink.then_some(component::Mode::Symlink);
    component(name.as_bstr(), mode, validate_options()).map(|_| ()).map_err(|err| PathProblem::Name(err.to_string()))
}

/// Checks a symlink target as text, without looking at other entries.
pub(crate) fn check_target_text(target: &[u8]) -> Result<(), SymlinkProblem> {
    if target.is_empty() {
        return Err(SymlinkProblem::Empty);
    }
    if target.contains(&0) {
        return Err(SymlinkProblem::Nul);
    }
    if target.first() == Some(&b'/') {
        return Err(SymlinkProblem::Absolute);
    }
    if target.contains(&b'\\') {
        return Err(SymlinkProblem::Backslash);
    }
    if target.get(1) == Some(&b':') {
        return Err(SymlinkProblem::DrivePrefix);
    }
    for part in target.split(|b| *b == b'/') {
        if let Err(component::Error::DotGitDir) = component(part.as_bstr(), None, validate_options()) {
            return Err(SymlinkProblem::DotGit);
        }
    }
    Ok(())
}

/// What a node of the in-memory tree is.
#[derive(Debug)]
pub(crate) enum NodeKind {
    /// A directory and its children by name.
    Dir(HashMap<BString, usize>),
    /// A regular file.
    File,
    /// A symbolic link and its (text-checked) target.
    Symlink(BString),
}

#[derive(Debug)]
struct Node {
    parent: usize,
    kind: NodeKind,
}

/// Why resolution failed: the link is unsafe, or the shared work budget ran out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResolveError {
    Unsafe(SymlinkProblem),
    Budget,
}

/// The shape of a tree (names, kinds and link targets), for resolving links through it.
#[derive(Debug)]
pub(crate) struct Trie {
    nodes: Vec<Node>,
}

/// The root directory's node id.
pub(crate) const ROOT: usize = 0;

impl Trie {
    pub(crate) fn new() -> Self {
        Trie { nodes: vec![Node { parent: ROOT, kind: NodeKind::Dir(HashMap::new()) }] }
    }

    /// Adds `name` under directory `parent`; on a duplicate returns the existing node's id.
    pub(crate) fn add(&mut self, parent: usize, name: &BStr, kind: NodeKind) -> Result<usize, usize> {
        let id = self.nodes.len();
        let NodeKind::Dir(children) = &mut self.nodes[parent].kind else {
            unreachable!("callers only add children to directory nodes")
        };
        if let Some(existing) = children.get(name) {
            return Err(*existing);
        }
        children.insert(name.to_owned(), id);
        self.nodes.push(Node { parent, kind });
        Ok(id)
    }

    pub(crate) fn kind(&self, id: usize) -> &NodeKind {
        &self.nodes[id].kind
    }

    fn child(&self, dir: usize, name: &[u8]) -> Option<usize> {
        match &self.nodes[dir].kind {
            NodeKind::Dir(children) => children.get(name.as_bstr()).copied(),
            _ => None,
        }
    }

    /// Resolves the link at node `link` through the tree's other links. `budget` is shared by
    /// all links of a tree and bounds the total work (one unit per byte and per component).
    pub(crate) fn resolve(&self, link: usize, budget: &mut u64) -> Result<(), ResolveError> {
        let NodeKind::Symlink(target) = &self.nodes[link].kind else {
            return Ok(());
        };
        // Directories from the root down to the link's parent; `None` is a directory the tree
        // does not contain (or a file), treated lexically.
        let mut stack: Vec<Option<usize>> = Vec::new();
        let mut at = self.nodes[link].parent;
        while at != ROOT {
            stack.push(Some(at));
            at = self.nodes[at].parent;
        }
        stack.reverse();

        let mut pending: Vec<&[u8]> = target.split(|b| *b == b'/').rev().collect();
        let mut hops = 1;
        while let Some(part) = pending.pop() {
            *budget = budget.checked_sub(1 + part.len() as u64).ok_or(ResolveError::Budget)?;
            match part {
                b"" | b"." => {}
                b".." => {
                    if stack.pop().is_none() {
                        return Err(ResolveError::Unsafe(SymlinkProblem::EscapesRoot));
                    }
                }
                name => {
                    let dir = match stack.last() {
                        None => Some(ROOT),
                        Some(dir) => *dir,
                    };
                    match dir.and_then(|dir| self.child(dir, name)) {
                        Some(id) => match &self.nodes[id].kind {
                            NodeKind::Symlink(next) => {
                                hops += 1;
                                if hops > MAX_SYMLINK_HOPS {
                                    return Err(ResolveError::Unsafe(SymlinkProblem::TooManyHops));
                                }
                                pending.extend(next.split(|b| *b == b'/').rev());
                            }
                            NodeKind::Dir(_) => stack.push(Some(id)),
                            NodeKind::File => stack.push(None),
                        },
                        None => stack.push(None),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trie_with(links: &[(&str, &str)], dirs: &[&str]) -> (Trie, Vec<usize>) {
        let mut trie = Trie::new();
        let mut ids = HashMap::new();
        ids.insert(String::new(), ROOT);
        let mut ensure_dir = |trie: &mut Trie, path: &str| -> usize {
            let mut parent = ROOT;
            let mut so_far = String::new();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                if !so_far.is_empty() {
                    so_far.push('/');
                }
                so_far.push_str(part);
                parent = *ids.entry(so_far.clone()).or_insert_with(|| {
                    trie.add(parent, part.into(), NodeKind::Dir(HashMap::new())).expect("fresh dir")
                });
            }
            parent
        };
        for dir in dirs {
            ensure_dir(&mut trie, dir);
        }
        let mut link_ids = Vec::new();
        for (path, target) in links {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let parent = ensure_dir(&mut trie, parent);
            let id = trie.add(parent, name.into(), NodeKind::Symlink((*target).into())).expect("unique link");
            link_ids.push(id);
        }
        (trie, link_ids)
    }

    fn check_all(trie: &Trie, links: &[usize]) -> Result<(), ResolveError> {
        let mut budget = 1 << 20;
        links.iter().try_for_each(|id| trie.resolve(*id, &mut budget))
    }

    #[test]
    fn names_forbidden_by_design_are_rejected() {
        for bad in [
            &b"."[..],
            b"..",
            b"a/b",
            b"a\\b",
            b"a\0b",
            b".git",
            b".GIT",
            ".g\u{200c}it".as_bytes(),
            b"git~1",
            b"a.",
            b"a ",
            b".git ",
            b"",
        ] {
            assert!(check_name(bad, false).is_err(), "{:?} accepted", bad.as_bstr());
        }
        assert!(check_name(b".gitmodules", true).is_err());
        for good in [&b"a"[..], b"README.md", b".gitignore", b"x..y", "caf\u{e9}".as_bytes()] {
            assert_eq!(check_name(good, false), Ok(()), "{:?}", good.as_bstr());
        }
    }

    #[test]
    fn symlink_target_text_rules() {
        assert_eq!(check_target_text(b"/etc/passwd"), Err(SymlinkProblem::Absolute));
        assert_eq!(check_target_text(b"a\\b"), Err(SymlinkProblem::Backslash));
        assert_eq!(check_target_text(b"C:x"), Err(SymlinkProblem::DrivePrefix));
        assert_eq!(check_target_text(b".git/x"), Err(SymlinkProblem::DotGit));
        assert_eq!(check_target_text(b"a/.GIT/x"), Err(SymlinkProblem::DotGit));
        assert_eq!(check_target_text(b""), Err(SymlinkProblem::Empty));
        assert_eq!(check_target_text(b"../x"), Ok(()));
        assert_eq!(check_target_text(b"a/b"), Ok(()));
    }

    #[test]
    fn two_hop_escape_through_another_link_is_caught() {
        let (trie, links) = trie_with(&[("d/l", ".."), ("z", "d/l/../..")], &["d"]);
        assert_eq!(trie.resolve(links[0], &mut 1000), Ok(()));
        assert_eq!(trie.resolve(links[1], &mut 1000), Err(ResolveError::Unsafe(SymlinkProblem::EscapesRoot)));
    }

    #[test]
    fn plain_relative_links_are_fine_and_loops_are_refused() {
        let (trie, links) = trie_with(&[("a/l", "../b/c"), ("top", "a/l")], &["a", "b"]);
        assert_eq!(check_all(&trie, &links), Ok(()));
        let (trie, links) = trie_with(&[("x", "y"), ("y", "x")], &[]);
        assert_eq!(check_all(&trie, &links), Err(ResolveError::Unsafe(SymlinkProblem::TooManyHops)));
        let (trie, links) = trie_with(&[("l", "../x")], &[]);
        assert_eq!(check_all(&trie, &links), Err(ResolveError::Unsafe(SymlinkProblem::EscapesRoot)));
    }

    /// Steps above the root a path makes when read lexically from directory depth `depth`.
    fn escapes_lexically(depth: usize, target: &[u8]) -> bool {
        let mut depth = depth as i64;
        for part in target.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    depth -= 1;
                    if depth < 0 {
                        return true;
                    }
                }
                _ => depth += 1,
            }
        }
        false
    }

    fn component_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"..".to_vec()),
            Just(b".".to_vec()),
            Just(b"".to_vec()),
            Just(b".git".to_vec()),
            Just(b"/".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn accepted_names_are_single_safe_components(name in proptest::collection::vec(any::<u8>(), 0..12)) {
            if check_name(&name, false).is_ok() {
                prop_assert!(!name.is_empty());
                prop_assert!(name != b"." && name != b"..");
                prop_assert!(!name.contains(&b'/') && !name.contains(&b'\\') && !name.contains(&0));
                prop_assert!(!name.eq_ignore_ascii_case(b".git"));
            }
        }

        #[test]
        fn accepted_targets_never_leave_the_root(
            parts in proptest::collection::vec(component_strategy(), 0..8),
            raw in proptest::collection::vec(any::<u8>(), 0..16),
            use_raw in any::<bool>(),
        ) {
            let target = if use_raw { raw } else { parts.join(&b'/') };
            let text_ok = check_target_text(&target).is_ok();
            let (trie, links) = {
                let mut trie = Trie::new();
                let x = trie.add(ROOT, "x".into(), NodeKind::Dir(HashMap::new())).expect("x");
                let y = trie.add(x, "y".into(), NodeKind::Dir(HashMap::new())).expect("y");
                let link = NodeKind::Symlink(BString::from(target.clone()));
                let l = trie.add(y, "l".into(), link).expect("l");
                (trie, vec![l])
            };
            if text_ok && check_all(&trie, &links).is_ok() {
                prop_assert!(target.first() != Some(&b'/'));
                prop_assert!(!escapes_lexically(2, &target));
            }
        }
    }

    const SLOTS: [&str; 4] = ["l1", "d/l2", "d/e/l3", "f/l4"];

    fn target_strategy() -> impl Strategy<Value = Option<String>> {
        let part = prop_oneof![
            Just(".."),
            Just("."),
            Just("d"),
            Just("e"),
            Just("f"),
            Just("l1"),
            Just("l2"),
            Just("l3"),
            Just("l4"),
            Just("x"),
        ];
        proptest::option::of(proptest::collection::vec(part, 1..6).prop_map(|p| p.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The kernel is the oracle: whenever the checker accepts a set of links, creating
        /// them for real and resolving each one never lands outside the root.
        #[test]
        fn accepted_link_sets_resolve_inside_the_root_on_a_real_fs(
            targets in proptest::collection::vec(target_strategy(), 4),
        ) {
            let links: Vec<(&str, &str)> = SLOTS
                .iter()
                .zip(&targets)
                .filter_map(|(slot, t)| t.as_deref().map(|t| (*slot, t)))
                .collect();
            let (trie, ids) = trie_with(&links, &["d/e", "f"]);
            let accepted = links.iter().all(|(_, t)| check_target_text(t.as_bytes()).is_ok())
                && check_all(&trie, &ids).is_ok();
            if accepted {
                let outer = tempfile::tempdir().expect("tempdir");
                let root = outer.path().join("root");
                std::fs::create_dir_all(root.join("d/e")).expect("mkdir");
                std::fs::create_dir_all(root.join("f")).expect("mkdir");
                for (path, target) in &links {
                    std::os::unix::fs::symlink(target, root.join(path)).expect("symlink");
                }
                let root = root.canonicalize().expect("canonical root");
                for (path, target) in &links {
                    if let Ok(resolved) = root.join(path).canonicalize() {
                        prop_assert!(
                            resolved.starts_with(&root),
                            "{} -> {} resolves to {}", path, target, resolved.display()
                        );
                    }
                }
            }
        }
    }
}
