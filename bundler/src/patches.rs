//! Binary patches for the large blobs a delta payload changes: the patch section that
//! follows the pack ([`ferry_proto::patch_section`], docs/formats.md "Patch section").
//!
//! A rebuilt binary shifts code and rewrites relative addresses all through it, which git's
//! copy/insert deltas see as new bytes; bsdiff encodes them as small differences that zstd
//! then packs tightly (two builds of the agent: 164,559 bytes against git's 630,137).
//!
//! A blob is patched when it is new in the snapshot (nowhere in the base's tree), holds
//! [`MIN_PATCHED`] to [`MAX_PATCHED`] bytes, and the base has a blob of at most
//! [`MAX_PATCHED`] bytes at one of its paths. Every path of such a blob is left out of the
//! pack with a sparse-checkout filter (`git pack-objects --filter=sparse:oid=<patterns>`),
//! so git's deltas stay as they were for everything else. Other large blobs stay in the pack.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};

use ferry_proto::patch_section::{max_patch_len, write_patch_header, write_section_start, PatchHeader, MAX_PATCHES};

use crate::git::{Git, GitError};
use crate::payload::CountingWriter;

/// Blobs smaller than this stay in the pack: git's deltas do well enough on them.
pub const MIN_PATCHED: u64 = 64 << 10;
/// Blobs (and bases) larger than this stay in the pack (whole: see `core.bigFileThreshold`
/// in `git/mod.rs`). A device applies a patch with its base and the new blob in memory, so
/// this bounds what an apply needs (docs/decisions.md, "Memory of an apply"); bsdiff's
/// suffix sort here needs about 16 bytes per base byte.
pub const MAX_PATCHED: u64 = 16 << 20;

/// One blob to send as a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPatch {
    /// The new blob.
    pub target: String,
    /// The base's blob it is patched from.
    pub base: String,
    /// Size of the new blob.
    pub size: u64,
    /// Every path of the new blob in the snapshot (all of them leave the pack).
    pub paths: Vec<Vec<u8>>,
}

/// A blob entry of a tree listing.
struct TreeBlob {
    path: Vec<u8>,
    id: String,
    size: u64,
}

/// The blobs of `snapshot` to send as patches against blobs of `base`, ordered by base id
/// (then tree order).
pub fn plan(git: &Git, snapshot: &str, base: &str) -> Result<Vec<PlannedPatch>, GitError> {
    let new = tree_blobs(git, snapshot)?;
    let old = tree_blobs(git, base)?;
    let old_ids: HashSet<&str> = old.iter().map(|b| b.id.as_str()).collect();
    let old_at: HashMap<&[u8], &TreeBlob> = old.iter().map(|b| (b.path.as_slice(), b)).collect();
    let mut order = Vec::new();
    let mut paths_of: HashMap<&str, Vec<&TreeBlob>> = HashMap::new();
    for blob in &new {
        if old_ids.contains(blob.id.as_str()) || !(MIN_PATCHED..=MAX_PATCHED).contains(&blob.size) {
            continue;
        }
        let paths = paths_of.entry(blob.id.as_str()).or_default();
        if paths.is_empty() {
            order.push(blob.id.as_str());
        }
        paths.push(blob);
    }
    let mut planned = Vec::new();
    for id in order {
        let paths = &paths_of[id];
        // A path a pattern cannot name would keep the blob in the pack as well: a pattern
        // line ends at `\n`, and git drops a `\r` before it.
        if paths.iter().any(|b| b.path.contains(&b'\n') || b.path.contains(&b'\r')) {
            continue;
        }
        let base = paths.iter().find_map(|b| old_at.get(b.path.as_slice()).filter(|o| o.size <= MAX_PATCHED));
        if let Some(base) = base {
            planned.push(PlannedPatch {
                target: id.to_owned(),
                base: base.id.clone(),
                size: paths[0].size,
                paths: paths.iter().map(|b| b.path.clone()).collect(),
            });
        }
        if planned.len() == MAX_PATCHES as usize {
            break;
        }
    }
    // Patches sharing a base follow each other: the device loads each base once.
    planned.sort_by(|a, b| a.base.cmp(&b.base));
    Ok(planned)
}

/// Sparse-checkout patterns keeping every path but the patched blobs' paths.
pub fn sparse_patterns(patches: &[PlannedPatch]) -> Vec<u8> {
    let mut patterns = b"/*\n".to_vec();
    for path in patches.iter().flat_map(|p| &p.paths) {
        patterns.extend_from_slice(b"!/");
        for &byte in path {
            if matches!(byte, b'\\' | b'*' | b'?' | b'[' | b' ' | b'!' | b'#') {
                patterns.push(b'\\');
            }
            patterns.push(byte);
        }
        patterns.push(b'\n');
    }
    patterns
}

/// The patches of a delta, computed before its pack is written: which blobs leave the pack,
/// and the section's entries (framing and patch bytes) waiting in a temporary file.
pub struct Section {
    /// The blobs the section makes; their paths leave the pack.
    pub patches: Vec<PlannedPatch>,
    entries: std::fs::File,
}

/// Computes a bsdiff patch for each planned blob. A blob whose patch cannot be made or
/// would be longer than [`max_patch_len`] stays in the pack (and out of the section).
pub fn prepare(git: &Git, planned: Vec<PlannedPatch>) -> Result<Section, GitError> {
    let io = |source| GitError::Io { context: "writing the patch section".into(), source };
    let mut entries = tempfile::tempfile().map_err(io)?;
    let mut patches = Vec::new();
    let bar = crate::progress::bytes("bsdiff", Some(planned.iter().map(|p| p.size).sum()));
    for planned in planned {
        let path = String::from_utf8_lossy(&planned.paths[0]).into_owned();
        let old = git.run(&["cat-file", "blob", &planned.base], None, &[])?;
        let new = git.run(&["cat-file", "blob", &planned.target], None, &[])?;
        bar.inc(planned.size);
        let patch = match bsdiff(&old, &new) {
            Ok(patch) if patch.len() as u64 > max_patch_len(new.len() as u64) => {
                tracing::info!(%path, blob = new.len(), patch = patch.len(), "patch too long; the blob stays in the pack");
                continue;
            }
            Ok(patch) if patch.literal.saturating_mul(4) > new.len().saturating_mul(3) => {
                tracing::info!(%path, blob = new.len(), literal = patch.literal, "little in common with its base; the blob stays in the pack");
                continue;
            }
            Ok(patch) if patch.differing.saturating_mul(100) < new.len() => {
                tracing::info!(%path, blob = new.len(), differing = patch.differing, "copies and inserts only, as git's delta does; the blob stays in the pack");
                continue;
            }
            Ok(patch) => patch.raw,
            Err(err) => {
                tracing::warn!(%path, %err, "no binary patch; the blob stays in the pack");
                continue;
            }
        };
        let header = PatchHeader {
            target: raw_id(&planned.target)?,
            base: raw_id(&planned.base)?,
            target_size: new.len() as u64,
            patch_len: patch.len() as u64,
        };
        write_patch_header(&mut entries, &header).and_then(|()| entries.write_all(&patch)).map_err(io)?;
        tracing::info!(%path, blob = new.len(), patch = patch.len(), "large blob sent as a binary patch");
        patches.push(planned);
    }
    bar.finish_and_clear();
    Ok(Section { patches, entries })
}

impl Section {
    /// Writes the section (nothing when it has no patches) and returns its size.
    pub fn write_to(mut self, out: &mut dyn Write) -> Result<u64, GitError> {
        if self.patches.is_empty() {
            return Ok(0);
        }
        let io = |source| GitError::Io { context: "writing the patch section".into(), source };
        let mut section = CountingWriter { inner: out, count: 0 };
        write_section_start(&mut section, self.patches.len() as u32).map_err(io)?;
        self.entries.seek(SeekFrom::Start(0)).map_err(io)?;
        std::io::copy(&mut self.entries, &mut section).map_err(io)?;
        Ok(section.count)
    }
}

/// A patch in raw form; how many of the bytes it makes it carries as they are (literal),
/// and how many it makes by adding a non-zero difference to a base byte (differing).
struct RawPatch {
    raw: Vec<u8>,
    literal: usize,
    differing: usize,
}

impl RawPatch {
    fn len(&self) -> usize {
        self.raw.len()
    }
}

/// A bsdiff patch of `old` into `new` in the raw form the agent applies (the `bsdiff` crate's:
/// each control triple followed by its diff and extra bytes). qbsdiff computes it: its search
/// stays fast on long runs of repeated bytes, where the `bsdiff` crate's own takes minutes
/// (8 MiB of zeros: over 120 s against 0.18 s). Its bsdiff 4 output (three bzip2 blocks) is
/// unpacked and interleaved, and the result is applied once to check that it makes `new`.
fn bsdiff(old: &[u8], new: &[u8]) -> std::io::Result<RawPatch> {
    let mut classic = Vec::new();
    qbsdiff::Bsdiff::new(old, new).compression_level(1).compare(std::io::Cursor::new(&mut classic))?;
    let patch = interleave(&classic)?;
    let mut made = Vec::with_capacity(new.len());
    bsdiff::patch(old, &mut patch.raw.as_slice(), &mut made)?;
    if made != new {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the patch does not make the blob"));
    }
    Ok(patch)
}

/// The raw patch of a bsdiff 4 patch (`BSDIFF40`, three lengths, bzip2 blocks of controls,
/// diff bytes and extra bytes).
fn interleave(classic: &[u8]) -> std::io::Result<RawPatch> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bsdiff 4 patch: {what}"));
    let field = |at: usize| classic.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    if classic.get(..8) != Some(&b"BSDIFF40"[..]) {
        return Err(bad("no BSDIFF40 magic"));
    }
    let (Some(ctrl_len), Some(diff_len)) = (field(8), field(16)) else { return Err(bad("truncated header")) };
    let unpack = |from: u64, len: u64| -> std::io::Result<Vec<u8>> {
        let block = usize::try_from(from)
            .ok()
            .zip(usize::try_from(from.saturating_add(len)).ok())
            .and_then(|(from, to)| classic.get(from..to))
            .ok_or_else(|| bad("block out of bounds"))?;
        let mut out = Vec::new();
        bzip2::read::BzDecoder::new(block).read_to_end(&mut out)?;
        Ok(out)
    };
    let (diff_at, extra_at) = (32u64.saturating_add(ctrl_len), 32u64.saturating_add(ctrl_len).saturating_add(diff_len));
    let controls = unpack(32, ctrl_len)?;
    let diff = unpack(diff_at, diff_len)?;
    let extra = unpack(extra_at, (classic.len() as u64).saturating_sub(extra_at))?;
    if controls.len() % 24 != 0 {
        return Err(bad("controls are not whole triples"));
    }
    let extra_len = extra.len();
    let mut differing = 0;
    let mut raw = Vec::with_capacity(controls.len() + diff.len() + extra.len());
    let (mut diff, mut extra) = (diff.as_slice(), extra.as_slice());
    for triple in controls.chunks_exact(24) {
        let add = u64::from_le_bytes(triple[..8].try_into().unwrap_or_default());
        let copy = u64::from_le_bytes(triple[8..16].try_into().unwrap_or_default());
        let (Some(added), Some(copied)) = (take(&mut diff, add), take(&mut extra, copy)) else {
            return Err(bad("a control asks for more bytes than its block holds"));
        };
        // Lengths are non-negative; the seek is sign-magnitude in both forms.
        raw.extend_from_slice(triple);
        differing += added.iter().filter(|b| **b != 0).count();
        raw.extend_from_slice(added);
        raw.extend_from_slice(copied);
    }
    if !diff.is_empty() || !extra.is_empty() {
        return Err(bad("bytes left over after the last control"));
    }
    let literal = extra_len;
    Ok(RawPatch { raw, literal, differing })
}

/// Splits `n` bytes off the front of `bytes`.
fn take<'a>(bytes: &mut &'a [u8], n: u64) -> Option<&'a [u8]> {
    let n = usize::try_from(n).ok().filter(|n| *n <= bytes.len())?;
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

fn raw_id(hex_id: &str) -> Result<Vec<u8>, GitError> {
    hex::decode(hex_id).map_err(|_| GitError::UnexpectedOutput {
        command: "git ls-tree".into(),
        detail: format!("{hex_id:?} is not an object id"),
    })
}

/// Every blob (files and symlinks) of `commit`'s tree: `git ls-tree -r -l -z`.
fn tree_blobs(git: &Git, commit: &str) -> Result<Vec<TreeBlob>, GitError> {
    let out = git.run(&["ls-tree", "-r", "-l", "-z", "--full-tree", commit], None, &[])?;
    let mut blobs = Vec::new();
    for entry in out.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        // "<mode> <type> <id> <size, right-aligned>\t<path>"
        let bad = || GitError::UnexpectedOutput {
            command: "git ls-tree -r -l".into(),
            detail: format!("unexpected entry {:?}", String::from_utf8_lossy(entry)),
        };
        let tab = entry.iter().position(|b| *b == b'\t').ok_or_else(bad)?;
        let meta = std::str::from_utf8(&entry[..tab]).map_err(|_| bad())?;
        let fields: Vec<&str> = meta.split_ascii_whitespace().collect();
        let [_mode, kind, id, size] = fields[..] else { return Err(bad()) };
        if kind != "blob" {
            continue;
        }
        blobs.push(TreeBlob {
            path: entry[tab + 1..].to_vec(),
            id: id.to_owned(),
            size: size.parse().map_err(|_| bad())?,
        });
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use ferry_proto::patch_section::{read_patch_header, read_section_start, MAGIC};
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::git::testutil::Sandbox;
    use crate::git::ObjectFormat;

    /// `kib` KiB of incompressible bytes; `edit` above 1 adds `edit` to every 50th byte, as
    /// a rebuild moving code shifts the addresses all through a program.
    fn noise(seed: &str, kib: usize, edit: u8) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..kib * 32).flat_map(|i| Sha256::digest(format!("{seed} {i}")).to_vec()).collect();
        if edit > 1 {
            bytes.iter_mut().step_by(50).for_each(|b| *b = b.wrapping_add(edit));
        }
        bytes
    }

    fn write(dir: &std::path::Path, rel: &str, bytes: &[u8]) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn large_changed_blobs_with_a_base_leave_the_pack_for_the_section() {
        let sandbox = Sandbox::new();
        let dir = sandbox.init("operator", ObjectFormat::Sha1, false);
        let weird = "odd [1]*?\\ #!.bin";
        write(&dir, "bin/tool", &noise("tool", 200, 1));
        write(&dir, weird, &noise("weird", 80, 1));
        write(&dir, "same.bin", &noise("same", 100, 1));
        write(&dir, "small.txt", b"one\n");
        write(&dir, "cr\r", &noise("cr", 80, 1));
        write(&dir, "upper.bin", &noise("upper", 80, 1));
        let c1 = sandbox.commit_all(&dir, "first");
        write(&dir, "bin/tool", &noise("tool", 200, 2));
        write(&dir, "copy/tool", &noise("tool", 200, 2));
        write(&dir, weird, &noise("weird", 80, 2));
        write(&dir, "data/new.bin", &noise("new", 100, 1));
        write(&dir, "small.txt", b"two\n");
        write(&dir, "cr\r", &noise("cr", 80, 2));
        write(&dir, "upper.bin", &noise("upper", 80, 2));
        write(&dir, "Upper.bin", &noise("Upper", 80, 1));
        let c2 = sandbox.commit_all(&dir, "second");
        // As on a case-insensitive checkout, where `!/upper.bin` would leave `Upper.bin` out too.
        sandbox.git_ok(&dir, &["config", "core.ignoreCase", "true"]);
        let git = sandbox.open(&dir);
        let s1 = git.make_snapshot(&git.tree_at(&c1, None).unwrap(), &c1, "stable", 1, None).unwrap();
        let s2 = git.make_snapshot(&git.tree_at(&c2, None).unwrap(), &c2, "stable", 2, None).unwrap();
        let id = |path: &str| sandbox.git_ok(&dir, &["rev-parse", &format!("{s2}:{path}")]);

        let planned = plan(&git, &s2, &s1).unwrap();
        let mut targets: Vec<(&str, Vec<&[u8]>, &str)> = planned
            .iter()
            .map(|p| (p.target.as_str(), p.paths.iter().map(Vec::as_slice).collect(), p.base.as_str()))
            .collect();
        let tool = id("bin/tool");
        let odd = id(weird);
        let base_of = |path: &str| sandbox.git_ok(&dir, &["rev-parse", &format!("{s1}:{path}")]);
        let (tool_base, odd_base) = (base_of("bin/tool"), base_of(weird));
        // Ordered by base, so that patches sharing one follow each other.
        assert!(targets.windows(2).all(|w| w[0].2 <= w[1].2));
        targets.sort();
        let (upper, upper_base) = (id("upper.bin"), base_of("upper.bin"));
        let mut expected = vec![
            (tool.as_str(), vec![&b"bin/tool"[..], b"copy/tool"], tool_base.as_str()),
            (odd.as_str(), vec![weird.as_bytes()], odd_base.as_str()),
            (upper.as_str(), vec![&b"upper.bin"[..]], upper_base.as_str()),
        ];
        expected.sort();
        assert_eq!(targets, expected);

        let mut bundle = Vec::new();
        let base = crate::payload::Base { commit: &s1, binary_patches: true };
        crate::payload::write_bundle(&git, &s2, "refs/ferry/stable/2", Some(base), &mut bundle).unwrap();
        let header_end = bundle.windows(4).position(|w| w == b"PACK").unwrap();
        let section_at = bundle.windows(MAGIC.len()).rposition(|w| w == MAGIC).unwrap();
        let mut section = &bundle[section_at..];
        assert_eq!(read_section_start(&mut section).unwrap(), 3);
        let first = read_patch_header(&mut section, 20).unwrap();
        assert_eq!(hex::encode(&first.target), planned[0].target);
        // bsdiff's patch is as long as the blob but almost all zeros: zstd makes it small.
        let patch = &section[..first.patch_len as usize];
        let compressed = zstd::bulk::compress(patch, 3).unwrap().len();
        assert!(compressed < 8 << 10, "a patch, not the blob: {compressed} bytes compressed");

        // The pack alone, indexed by git against the operator's objects: everything but the
        // patched blobs.
        let mut index_pack = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(["index-pack", "--stdin", "--fix-thin"])
            .envs(sandbox.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        index_pack.stdin.take().unwrap().write_all(&bundle[header_end..section_at]).unwrap();
        let out = index_pack.wait_with_output().unwrap();
        assert!(out.status.success());
        let pack = String::from_utf8(out.stdout).unwrap();
        let idx = dir.join(format!(".git/objects/pack/pack-{}.idx", pack.trim().trim_start_matches("pack\t")));
        let listed = Command::new("git").arg("show-index").stdin(std::fs::File::open(idx).unwrap()).output().unwrap();
        let listed = String::from_utf8(listed.stdout).unwrap();
        for kept in ["data/new.bin", "small.txt", "cr\r", "Upper.bin"] {
            assert!(listed.contains(&id(kept)), "{kept:?} left the pack: {listed}");
        }
        assert!(!listed.contains(&tool) && !listed.contains(&odd), "{listed}");

        // `--no-binary-patches`: a plain git bundle, which `git bundle verify` and `git fetch`
        // take whole.
        let plain = sandbox.path("plain.bundle");
        let base = crate::payload::Base { commit: &s1, binary_patches: false };
        let mut file = std::fs::File::create(&plain).unwrap();
        crate::payload::write_bundle(&git, &s2, "refs/ferry/stable/2", Some(base), &mut file).unwrap();
        assert!(!std::fs::read(&plain).unwrap().windows(MAGIC.len()).any(|w| w == MAGIC));
        let clone = sandbox.init("device", ObjectFormat::Sha1, true);
        sandbox.git_ok(&clone, &["fetch", "-q", dir.to_str().unwrap(), &format!("{s1}:refs/heads/one")]);
        sandbox.git_ok(&clone, &["fetch", "-q", plain.to_str().unwrap(), "refs/ferry/stable/2:refs/heads/two"]);
        assert_eq!(sandbox.git_ok(&clone, &["rev-parse", "two:bin/tool"]), tool);
    }

    #[test]
    fn patches_apply_with_the_agents_applier_even_on_long_runs() {
        let program = noise("program", 300, 1);
        let mut rebuilt = program.clone();
        rebuilt.splice(1000..1000, *b"shifted");
        for byte in rebuilt.iter_mut().step_by(997) {
            *byte = byte.wrapping_add(3);
        }
        let zeros = vec![0u8; 8 << 20];
        let mut zeros_edited = zeros.clone();
        zeros_edited[4 << 20] = 1;
        let start = std::time::Instant::now();
        for (old, new) in [(&program, &rebuilt), (&zeros, &zeros_edited), (&rebuilt, &program), (&program, &zeros)] {
            let patch = bsdiff(old, new).unwrap();
            let mut made = Vec::new();
            bsdiff::patch(old, &mut patch.raw.as_slice(), &mut made).unwrap();
            assert!(made == *new);
        }
        let rebuild = bsdiff(&program, &rebuilt).unwrap();
        assert!(rebuild.literal < 100 && rebuild.differing > rebuilt.len() / 1000, "{}", rebuild.differing);
        let mut edited = program.clone();
        edited.splice(5000..5000, *b"a line inserted, as in a text file");
        assert_eq!(bsdiff(&program, &edited).unwrap().differing, 0);
        assert_eq!(bsdiff(&rebuilt, &noise("other", 100, 1)).unwrap().literal, 100 << 10);
        // The `bsdiff` crate's own search took over two minutes on the zeros alone.
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "{:?}", start.elapsed());
        assert!(interleave(b"BSDIFF40 and then nothing sensible").is_err());
    }
}
