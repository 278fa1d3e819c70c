//! Release payloads: git bundles of one orphan snapshot (full) or thin against an
//! earlier snapshot (delta), and the zstd compression applied to them as a whole.
//!
//! Bundles are written by hand (the header is a few lines) followed by the pack streamed
//! straight from `git pack-objects`, so a large release never sits in memory. Packs are
//! stored uncompressed (`pack.compression=0`) because zstd over the whole bundle beats zlib
//! per object (see DESIGN.md, "Release model"). The window is 8 MiB, zstd -19's own: a
//! device's decoder holds one window, and its memory must stay flat whatever the payload's
//! size (docs/decisions.md, "Payload window").
//!
//! Determinism: the same snapshot gives byte-identical bundles with one git version, and
//! the same bundle gives byte-identical zstd output with one zstd version whatever the
//! number of cores: compression always runs in zstd's multi-threaded mode (at least one
//! worker), whose output does not depend on the worker count, only on the parameters.
//! (zstd's single-threaded mode, 0 workers, would give different bytes, so never use it.)

use std::io::{self, Read, Write};

use crate::git::{commit_subject, Git, GitError, ObjectFormat};

/// zstd level used unless the operator asks for another.
pub const DEFAULT_LEVEL: i32 = 19;
/// zstd window (log2 bytes): the largest a device accepts ([`ferry_proto::payload::MAX_WINDOW_LOG`]).
pub const WINDOW_LOG: u32 = ferry_proto::payload::MAX_WINDOW_LOG;
/// Upper bound on compression workers: each one at level 19 can use a few hundred MiB, and
/// the output does not depend on the count.
pub const MAX_WORKERS: u32 = 8;

/// The base of a delta payload.
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    /// The earlier snapshot the delta is thin against.
    pub commit: &'a str,
    /// Whether large changed blobs leave the pack for a patch section after it.
    pub binary_patches: bool,
}

/// What [`write_bundle`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBundle {
    /// Bytes of the bundle (with its patch section).
    pub bytes: u64,
    /// Blobs sent as binary patches after the pack.
    pub patched: usize,
}

/// Writes a git bundle of the orphan snapshot commit `snapshot` under `refname` to `out`.
///
/// Without `delta` the bundle is *full*: every object the snapshot reaches. With a base
/// (an earlier snapshot) it is a *delta*: the header lists `base` as a prerequisite and
/// the pack is thin against it (`--thin --shallow`, which finds objects shared with an
/// unrelated commit); with `binary_patches`, large changed blobs leave the pack for a
/// patch section after it ([`crate::patches`]). The header is v2 for SHA-1 repositories and v3 with
/// `@object-format=sha256` for SHA-256 ones. Both commits must be parentless, so a
/// release can never carry the operator's history.
pub fn write_bundle(
    git: &Git,
    snapshot: &str,
    refname: &str,
    delta: Option<Base<'_>>,
    out: &mut dyn Write,
) -> Result<WrittenBundle, GitError> {
    let base = delta.as_ref().map(|d| d.commit);
    git.check_ref_name(refname)?;
    let format = git.object_format()?;
    git.check_snapshot(snapshot)?;
    let prerequisite = match base {
        None => None,
        Some(base) if base == snapshot => {
            return Err(GitError::InvalidInput {
                what: "delta base",
                value: base.to_owned(),
                reason: "is the snapshot itself",
            })
        }
        Some(base) => {
            let raw = git.check_snapshot(base)?;
            Some((base, commit_subject(&raw).to_vec()))
        }
    };
    let header = bundle_header(format, snapshot, refname, prerequisite.as_ref());
    out.write_all(&header).map_err(|source| GitError::Io { context: "writing the bundle header".into(), source })?;
    let revs = match base {
        None => format!("{snapshot}\n"),
        Some(base) => format!("{snapshot}\n^{base}\n"),
    };
    let section = match delta {
        Some(Base { commit, binary_patches: true }) => {
            Some(crate::patches::prepare(git, crate::patches::plan(git, snapshot, commit)?)?)
        }
        _ => None,
    };
    let patched = section.as_ref().map_or(0, |s| s.patches.len());
    let filter = match section.as_ref().filter(|s| !s.patches.is_empty()) {
        Some(section) => Some(git.store_blob(&crate::patches::sparse_patterns(&section.patches))?),
        None => None,
    };
    let pack = git.pack_objects(&revs, base.is_some(), filter.as_deref(), out)?;
    let section = match section {
        Some(section) => section.write_to(out)?,
        None => 0,
    };
    let total = header.len() as u64 + pack + section;
    tracing::debug!(%snapshot, ?base, bytes = total, patched, "wrote bundle");
    Ok(WrittenBundle { bytes: total, patched })
}

/// The bundle header: signature line, capabilities, prerequisite, ref, blank line.
fn bundle_header(
    format: ObjectFormat,
    snapshot: &str,
    refname: &str,
    prerequisite: Option<&(&str, Vec<u8>)>,
) -> Vec<u8> {
    let mut header = Vec::with_capacity(256);
    match format {
        ObjectFormat::Sha1 => header.extend_from_slice(b"# v2 git bundle\n"),
        ObjectFormat::Sha256 => header.extend_from_slice(b"# v3 git bundle\n@object-format=sha256\n"),
    }
    if let Some((base, subject)) = prerequisite {
        header.push(b'-');
        header.extend_from_slice(base.as_bytes());
        // The comment is informational (git writes the subject); keep it one clean line.
        let subject: Vec<u8> = subject.iter().copied().filter(|b| *b >= b' ').collect();
        if !subject.is_empty() {
            header.push(b' ');
            header.extend_from_slice(&subject);
        }
        header.push(b'\n');
    }
    header.extend_from_slice(format!("{snapshot} {refname}\n\n").as_bytes());
    header
}

/// Compresses `input` into one zstd frame on `out` (level `level`, long-distance
/// matching with a 2^[`WINDOW_LOG`] window, a content checksum, one worker per core up
/// to [`MAX_WORKERS`]), streaming. Returns the compressed size.
///
/// Prefer [`compress_sized`] when the size is known: without it the frame declares the
/// full 128 MiB window, which a device's streaming decoder then has to allocate even
/// for a 2 KiB delta.
#[cfg(test)]
pub fn compress(input: &mut dyn Read, out: &mut dyn Write, level: i32) -> io::Result<u64> {
    compress_sized(input, None, out, level)
}

/// [`compress`] with the input's exact size, when known (a bundle in a temp file). zstd
/// then records the size in the frame and shrinks the window to fit, so a device
/// decompressing a small delta needs a small buffer, not the whole window. A size that does not
/// match the input is an error.
pub fn compress_sized(input: &mut dyn Read, size: Option<u64>, out: &mut dyn Write, level: i32) -> io::Result<u64> {
    compress_with_workers(input, size, out, level, default_workers())
}

fn default_workers() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores).unwrap_or(MAX_WORKERS).clamp(1, MAX_WORKERS)
}

fn compress_with_workers(
    input: &mut dyn Read,
    size: Option<u64>,
    out: &mut dyn Write,
    level: i32,
    workers: u32,
) -> io::Result<u64> {
    let mut counted = CountingWriter { inner: out, count: 0 };
    let mut encoder = zstd::stream::write::Encoder::new(&mut counted, level)?;
    encoder.include_checksum(true)?;
    encoder.long_distance_matching(true)?;
    encoder.window_log(WINDOW_LOG)?;
    // Never 0: single-threaded mode writes different bytes (see the module docs).
    encoder.multithread(workers.max(1))?;
    encoder.set_pledged_src_size(size)?;
    io::copy(input, &mut encoder)?;
    encoder.finish()?;
    Ok(counted.count)
}

/// Decompresses a payload written by [`compress`], refusing to write more than
/// `max_output` bytes (the error is `InvalidData`) or a window above 2^[`WINDOW_LOG`].
/// Returns the decompressed size.
#[cfg(test)]
pub fn decompress(input: &mut dyn Read, out: &mut dyn Write, max_output: u64) -> io::Result<u64> {
    let mut decoder = zstd::stream::read::Decoder::new(input)?;
    decoder.window_log_max(WINDOW_LOG)?;
    let mut limited = decoder.take(max_output.saturating_add(1));
    let mut counted = CountingWriter { inner: out, count: 0 };
    io::copy(&mut limited, &mut counted)?;
    if counted.count > max_output {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decompressed payload exceeds the limit of {max_output} bytes"),
        ));
    }
    Ok(counted.count)
}

/// A writer that counts what passes through it.
pub(crate) struct CountingWriter<'a> {
    pub(crate) inner: &'a mut dyn Write,
    pub(crate) count: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::git::testutil::{write, Sandbox};
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    /// An operator repository with a `site/` directory of `files` files, a snapshot of
    /// it as release 1, then `changed` of those files edited and snapshotted as release 2.
    struct Releases {
        sandbox: Sandbox,
        dir: PathBuf,
        git: Git,
        s1: String,
        s2: String,
        tree2: String,
    }

    fn releases(format: ObjectFormat, files: usize, changed: usize) -> Releases {
        let sandbox = Sandbox::new();
        let dir = sandbox.init("operator", format, false);
        write(&dir, "README", "not part of the release\n");
        for i in 0..files {
            write(&dir, &format!("site/d{}/f{i}.txt", i % 10), &file_body(i, 0));
        }
        let c1 = sandbox.commit_all(&dir, "first");
        for i in 0..changed {
            let i = i * files / changed.max(1);
            write(&dir, &format!("site/d{}/f{i}.txt", i % 10), &file_body(i, 1));
        }
        let c2 = sandbox.commit_all(&dir, "second");
        let git = sandbox.open(&dir);
        let tree1 = git.tree_at(&c1, Some("site")).unwrap();
        let tree2 = git.tree_at(&c2, Some("site")).unwrap();
        let s1 = git.make_snapshot(&tree1, &c1, "stable", 1, Some("site")).unwrap();
        let s2 = git.make_snapshot(&tree2, &c2, "stable", 2, Some("site")).unwrap();
        git.update_ref("refs/ferry/stable/1", &s1).unwrap();
        git.update_ref("refs/ferry/stable/2", &s2).unwrap();
        Releases { sandbox, dir, git, s1, s2, tree2 }
    }

    /// About 2 KiB of text, different for every file and version.
    fn file_body(i: usize, version: usize) -> String {
        (0..40).map(|line| format!("file {i} line {line} value {}\n", (i * 7919 + line * 31) ^ version)).collect()
    }

    fn bundle(git: &Git, snapshot: &str, refname: &str, base: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        let base = base.map(|commit| Base { commit, binary_patches: true });
        let n = write_bundle(git, snapshot, refname, base, &mut out).unwrap();
        assert_eq!(n.bytes, out.len() as u64);
        out
    }

    /// Round-trips `bundle` through zstd into a file, as a device would receive it.
    fn via_zstd(sandbox: &Sandbox, bundle: &[u8], name: &str) -> PathBuf {
        let mut compressed = Vec::new();
        compress(&mut &bundle[..], &mut compressed, DEFAULT_LEVEL).unwrap();
        let mut plain = Vec::new();
        decompress(&mut &compressed[..], &mut plain, 1 << 30).unwrap();
        assert_eq!(plain, bundle);
        let path = sandbox.path(name);
        std::fs::write(&path, plain).unwrap();
        path
    }

    /// What the device's parser (`ferry_proto`) reads from the compressed bundle.
    fn device_header(bundle: &[u8]) -> ferry_proto::bundle_header::BundleHeader {
        let mut compressed = Vec::new();
        let size = compress(&mut &bundle[..], &mut compressed, 3).unwrap();
        let limits = ferry_proto::Limits::default();
        let (header, mut stream) = ferry_proto::payload::open_bundle(Box::new(&compressed[..]), size, &limits).unwrap();
        let mut pack = Vec::new();
        stream.read_to_end(&mut pack).unwrap();
        assert!(pack.starts_with(b"PACK"));
        assert!(bundle.ends_with(&pack));
        header
    }

    fn git_fails(sandbox: &Sandbox, dir: &Path, args: &[&str]) -> String {
        let out = sandbox.git(dir, args);
        assert!(!out.status.success(), "git {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn full_bundle_fetches_into_an_empty_repo(format: ObjectFormat) {
        let r = releases(format, 30, 3);
        let bytes = bundle(&r.git, &r.s2, "refs/ferry/stable/2", None);
        let signature: &[u8] = match format {
            ObjectFormat::Sha1 => b"# v2 git bundle\n",
            ObjectFormat::Sha256 => b"# v3 git bundle\n@object-format=sha256\n",
        };
        let ref_line = format!("{} refs/ferry/stable/2\n\nPACK", r.s2);
        assert!(bytes.starts_with(&[signature, ref_line.as_bytes()].concat()));
        let header = device_header(&bytes);
        assert_eq!(header.object_format, format);
        assert!(header.prerequisites.is_empty());
        assert_eq!(header.refs.len(), 1);
        assert_eq!(header.refs[0].0.as_str(), r.s2);
        assert_eq!(header.refs[0].1, "refs/ferry/stable/2");
        let path = via_zstd(&r.sandbox, &bytes, "full.bundle");
        let path = path.to_str().unwrap();

        let device = r.sandbox.init("device", format, true);
        r.sandbox.git_ok(&device, &["bundle", "verify", "-q", path]);
        r.sandbox.git_ok(&device, &["fetch", "-q", path, "refs/ferry/stable/2:refs/x"]);
        assert_eq!(r.sandbox.git_ok(&device, &["rev-parse", "refs/x"]), r.s2);
        assert_eq!(r.sandbox.git_ok(&device, &["rev-parse", "refs/x^{tree}"]), r.tree2);
        r.sandbox.git_ok(&device, &["fsck", "--strict", "--no-dangling"]);
        // Only the snapshot: no parent, none of the operator's history or other paths.
        let parents = r.sandbox.git_ok(&device, &["rev-list", "--parents", "refs/x"]);
        assert_eq!(parents, r.s2);
        let objects = r.sandbox.git_ok(&device, &["count-objects", "-v"]);
        assert!(objects.contains(&format!("in-pack: {}", 30 + 10 + 1 + 1)), "{objects}");
    }

    #[test]
    fn full_bundle_fetches_into_an_empty_sha1_repo() {
        full_bundle_fetches_into_an_empty_repo(ObjectFormat::Sha1);
    }

    #[test]
    fn full_bundle_fetches_into_an_empty_sha256_repo() {
        full_bundle_fetches_into_an_empty_repo(ObjectFormat::Sha256);
    }

    fn delta_bundle_needs_and_uses_its_base(format: ObjectFormat) {
        let r = releases(format, 30, 3);
        let full = bundle(&r.git, &r.s1, "refs/ferry/stable/1", None);
        let delta = bundle(&r.git, &r.s2, "refs/ferry/stable/2", Some(&r.s1));
        let prerequisite = format!("-{} ferry release stable 1\n{} refs/ferry/stable/2\n\n", r.s1, r.s2);
        assert!(
            String::from_utf8_lossy(&delta[..300]).contains(&prerequisite),
            "{}",
            String::from_utf8_lossy(&delta[..200])
        );
        let header = device_header(&delta);
        assert_eq!(header.object_format, format);
        let prerequisites: Vec<&str> = header.prerequisites.iter().map(|p| p.as_str()).collect();
        assert_eq!(prerequisites, [r.s1.as_str()]);
        assert_eq!(header.refs[0].0.as_str(), r.s2);
        let full = via_zstd(&r.sandbox, &full, "full1.bundle");
        let delta = via_zstd(&r.sandbox, &delta, "delta2.bundle");
        let (full, delta) = (full.to_str().unwrap(), delta.to_str().unwrap());

        // Without the base: verify and fetch refuse.
        let empty = r.sandbox.init("empty", format, true);
        let err = git_fails(&r.sandbox, &empty, &["bundle", "verify", delta]);
        assert!(err.contains("lacks these prerequisite commits"), "{err}");
        assert!(err.contains(&r.s1), "{err}");
        git_fails(&r.sandbox, &empty, &["fetch", "-q", delta, "refs/ferry/stable/2:refs/x"]);

        // With the base (from the full payload of release 1): both work.
        let device = r.sandbox.init("device", format, true);
        r.sandbox.git_ok(&device, &["fetch", "-q", full, "refs/ferry/stable/1:refs/r1"]);
        r.sandbox.git_ok(&device, &["bundle", "verify", "-q", delta]);
        r.sandbox.git_ok(&device, &["fetch", "-q", delta, "refs/ferry/stable/2:refs/r2"]);
        assert_eq!(r.sandbox.git_ok(&device, &["rev-parse", "refs/r2^{tree}"]), r.tree2);
        r.sandbox.git_ok(&device, &["fsck", "--strict", "--no-dangling"]);
        assert_eq!(r.sandbox.git_ok(&device, &["rev-list", "--parents", "refs/r2"]), r.s2);
    }

    #[test]
    fn delta_bundle_needs_and_uses_its_base_sha1() {
        delta_bundle_needs_and_uses_its_base(ObjectFormat::Sha1);
    }

    #[test]
    fn delta_bundle_needs_and_uses_its_base_sha256() {
        delta_bundle_needs_and_uses_its_base(ObjectFormat::Sha256);
    }

    #[test]
    fn delta_is_small_next_to_full_for_a_small_change() {
        let r = releases(ObjectFormat::Sha1, 300, 3);
        let started = Instant::now();
        let full = bundle(&r.git, &r.s2, "refs/ferry/stable/2", None);
        let full_time = started.elapsed();
        let started = Instant::now();
        let delta = bundle(&r.git, &r.s2, "refs/ferry/stable/2", Some(&r.s1));
        let delta_time = started.elapsed();
        let zstd = |bytes: &[u8]| {
            let started = Instant::now();
            let size =
                compress_sized(&mut &bytes[..], Some(bytes.len() as u64), &mut io::sink(), DEFAULT_LEVEL).unwrap();
            (size, started.elapsed())
        };
        let (full_z, full_z_time) = zstd(&full);
        let (delta_z, delta_z_time) = zstd(&delta);
        eprintln!(
            "300 files, 3 changed: full bundle {} B in {full_time:?} (zstd {full_z} B in {full_z_time:?}); \
             delta bundle {} B in {delta_time:?} (zstd {delta_z} B in {delta_z_time:?})",
            full.len(),
            delta.len()
        );
        assert!(delta.len() * 10 < full.len(), "delta {} vs full {}", delta.len(), full.len());
        assert!(delta_z * 10 < full_z, "delta {delta_z} vs full {full_z}");
    }

    #[test]
    fn same_snapshot_gives_identical_bundles_even_after_repacking() {
        let r = releases(ObjectFormat::Sha1, 60, 5);
        let full = bundle(&r.git, &r.s2, "refs/ferry/stable/2", None);
        let delta = bundle(&r.git, &r.s2, "refs/ferry/stable/2", Some(&r.s1));
        assert_eq!(full, bundle(&r.git, &r.s2, "refs/ferry/stable/2", None));
        assert_eq!(delta, bundle(&r.git, &r.s2, "refs/ferry/stable/2", Some(&r.s1)));

        // The operator's storage changes (aggressive repack with other settings): the
        // payloads must not, since devices may already hold their digests.
        r.sandbox
            .git_ok(&r.dir, &["-c", "pack.compression=9", "-c", "pack.window=250", "repack", "-adfq", "--depth=250"]);
        r.sandbox.git_ok(&r.dir, &["config", "pack.window", "3"]);
        r.sandbox.git_ok(&r.dir, &["config", "pack.depth", "2"]);
        r.sandbox.git_ok(&r.dir, &["config", "core.bigFileThreshold", "1k"]);
        assert_eq!(full, bundle(&r.git, &r.s2, "refs/ferry/stable/2", None));
        assert_eq!(delta, bundle(&r.git, &r.s2, "refs/ferry/stable/2", Some(&r.s1)));

        // Another operator repository rebuilt from the same source history gives the
        // same snapshots and the same bytes.
        let clone = r.sandbox.path("clone");
        let (src, dst) = (r.dir.to_str().unwrap(), clone.to_str().unwrap());
        r.sandbox.git_ok(r.sandbox.root.path(), &["clone", "-q", "--no-local", src, dst]);
        let other = r.sandbox.open(&clone);
        let c2 = other.resolve_commit("main").unwrap();
        let s2 = other.make_snapshot(&r.tree2, &c2, "stable", 2, Some("site")).unwrap();
        assert_eq!(s2, r.s2);
        assert_eq!(full, bundle(&other, &s2, "refs/ferry/stable/2", None));
    }

    #[test]
    fn compression_is_identical_whatever_the_worker_count() {
        let r = releases(ObjectFormat::Sha1, 100, 0);
        let full = bundle(&r.git, &r.s1, "refs/ferry/stable/1", None);
        // Enough input for several zstd jobs at a low level (1 MiB minimum job size).
        let big: Vec<u8> = full.iter().cycle().take(6 << 20).copied().collect();
        for (input, level) in [(&full, DEFAULT_LEVEL), (&big, 3)] {
            for size in [None, Some(input.len() as u64)] {
                let run = |workers| {
                    let mut out = Vec::new();
                    compress_with_workers(&mut &input[..], size, &mut out, level, workers).unwrap();
                    out
                };
                let one = run(1);
                assert_eq!(one, run(2), "level {level}, size {size:?}");
                assert_eq!(one, run(4), "level {level}, size {size:?}");
                assert_eq!(one, run(1), "level {level}, size {size:?}");
                let mut back = Vec::new();
                decompress(&mut &one[..], &mut back, input.len() as u64).unwrap();
                assert_eq!(&back, input);
            }
        }
    }

    #[test]
    fn a_known_size_is_recorded_and_shrinks_the_window() {
        let input = vec![7u8; 10_000];
        let mut sized = Vec::new();
        compress_sized(&mut &input[..], Some(10_000), &mut sized, DEFAULT_LEVEL).unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&sized).ok(), Some(Some(10_000)));
        // A decoder limited to a 1 KiB-ish window still... needs only the content size.
        let mut decoder = zstd::stream::read::Decoder::new(&sized[..]).unwrap();
        decoder.window_log_max(14).unwrap();
        let mut back = Vec::new();
        decoder.read_to_end(&mut back).unwrap();
        assert_eq!(back, input);
        // A wrong size is an error, not a corrupt frame.
        let wrong = compress_sized(&mut &input[..], Some(9_999), &mut io::sink(), 3);
        assert!(wrong.is_err());
    }

    #[test]
    fn decompress_stops_at_the_output_limit() {
        let input = vec![0u8; 1 << 20];
        let mut packed = Vec::new();
        compress(&mut &input[..], &mut packed, 3).unwrap();
        let mut out = Vec::new();
        let err = decompress(&mut &packed[..], &mut out, (1 << 20) - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(out.len() <= 1 << 20);
        out.clear();
        assert_eq!(decompress(&mut &packed[..], &mut out, 1 << 20).unwrap(), 1 << 20);
        assert!(decompress(&mut &b"not zstd"[..], &mut io::sink(), 100).is_err());
    }

    #[test]
    fn bundles_refuse_non_snapshots_and_bad_names() {
        let r = releases(ObjectFormat::Sha1, 5, 1);
        let head = r.git.resolve_commit("main").unwrap();
        let err = write_bundle(&r.git, &head, "refs/ferry/x", None, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, GitError::NotASnapshot { .. }), "{err:?}");
        assert!(err.to_string().contains("has parents"), "{err}");
        let err = write_bundle(
            &r.git,
            &r.s2,
            "refs/ferry/x",
            Some(Base { commit: &head, binary_patches: true }),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, GitError::NotASnapshot { .. }), "{err:?}");
        let err = write_bundle(
            &r.git,
            &r.s2,
            "refs/ferry/x",
            Some(Base { commit: &r.s2, binary_patches: true }),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, GitError::InvalidInput { .. }), "{err:?}");
        let err = write_bundle(&r.git, &r.s2, "stable", None, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, GitError::InvalidInput { what: "ref name", .. }), "{err:?}");
        let tree = r.git.commit_tree_id(&r.s2).unwrap();
        let err = write_bundle(&r.git, &tree, "refs/ferry/x", None, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, GitError::NotACommit { .. }), "{err:?}");
        let missing = "0".repeat(40);
        let err = write_bundle(&r.git, &missing, "refs/ferry/x", None, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, GitError::UnknownRevision { .. }), "{err:?}");
        let err = write_bundle(&r.git, "main", "refs/ferry/x", None, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, GitError::InvalidInput { .. }), "{err:?}");
    }

    #[test]
    fn a_failing_output_stops_git_and_says_so() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 < buf.len() {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
                }
                self.0 -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let r = releases(ObjectFormat::Sha1, 300, 0);
        let err = write_bundle(&r.git, &r.s1, "refs/ferry/stable/1", None, &mut Full(1000)).unwrap_err();
        assert!(matches!(err, GitError::Io { .. }), "{err:?}");
        assert_eq!(err.to_string(), "writing the bundle: disk full");
    }
}
