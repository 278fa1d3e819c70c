//! The patch section after a delta's pack: patched blobs land in the store, and every way a
//! section can be wrong is refused with nothing left behind.

use ferry_proto::patch_section::{max_patch_len, write_patch_header, write_section_start, PatchHeader};
use ferry_proto::Reason;
use gix_hash::Kind;
use proptest::prelude::*;

use super::{oid, sample_repo, store_with, Repo};
use crate::git::{GitError, GitLimits, Limit, ObjectStore};

/// A 200 KiB "binary" whose second version shifts and rewrites a little of everything.
fn binary(version: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut bytes = Vec::with_capacity(200 << 10);
    for i in 0..(200u32 << 10) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let byte = (state >> 56) as u8;
        bytes.push(if version > 1 && i % 4096 == 7 { byte.wrapping_add(version as u8) } else { byte });
        if version > 1 && i == 50_000 {
            bytes.extend_from_slice(b"inserted in version 2");
        }
    }
    bytes
}

/// Two releases in which `bin/tool` changes; `(repo, first, second, old blob, new blob)`.
fn releases(kind: Kind) -> (Repo, String, String, String, String) {
    let (repo, _) = sample_repo(kind);
    repo.write_exec("bin/tool", &binary(1));
    let first = repo.snapshot(&repo.tree_of(&repo.commit_all("v1")), "release 1");
    repo.write_exec("bin/tool", &binary(2));
    repo.write("config/app.toml", b"port = 9091\n");
    let second = repo.snapshot(&repo.tree_of(&repo.commit_all("v2")), "release 2");
    let old = repo.git(&["rev-parse", &format!("{first}:bin/tool")]);
    let new = repo.git(&["rev-parse", &format!("{second}:bin/tool")]);
    (repo, first, second, old, new)
}

/// The thin pack of `second` against `first` without `bin/tool`, as the bundler makes it.
fn pack_without_tool(repo: &Repo, first: &str, second: &str) -> Vec<u8> {
    let patterns = repo.git_bytes(&["hash-object", "-w", "--stdin"], b"/*\n!/bin/tool\n");
    let filter = format!("--filter=sparse:oid={}", String::from_utf8(patterns).expect("utf8").trim());
    let revs = format!("{second}\n^{first}\n");
    repo.git_bytes(&["pack-objects", "--revs", "--thin", "--shallow", "--stdout", "-q", &filter], revs.as_bytes())
}

fn raw(hex: &str) -> Vec<u8> {
    oid(hex).as_slice().to_vec()
}

/// A section of one patch framed by `header`, with `patch` as its bytes.
fn section(header: &PatchHeader, patch: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_section_start(&mut bytes, 1).expect("write");
    write_patch_header(&mut bytes, header).expect("write");
    bytes.extend_from_slice(patch);
    bytes
}

struct Case {
    repo: Repo,
    first: String,
    second: String,
    pack: Vec<u8>,
    header: PatchHeader,
    patch: Vec<u8>,
}

impl Case {
    fn new(kind: Kind) -> Case {
        let (repo, first, second, old, new) = releases(kind);
        let pack = pack_without_tool(&repo, &first, &second);
        let (old_bytes, new_bytes) = (binary(1), binary(2));
        let mut patch = Vec::new();
        bsdiff::diff(&old_bytes, &new_bytes, &mut patch).expect("diff");
        let header = PatchHeader {
            target: raw(&new),
            base: raw(&old),
            target_size: new_bytes.len() as u64,
            patch_len: patch.len() as u64,
        };
        Case { repo, first, second, pack, header, patch }
    }

    fn stream(&self, header: &PatchHeader, patch: &[u8]) -> Vec<u8> {
        let mut stream = self.pack.clone();
        stream.extend(section(header, patch));
        stream
    }

    fn import(&self, stream: &[u8], limits: &GitLimits) -> (tempfile::TempDir, ObjectStore, Result<(), GitError>) {
        let (dir, store) = store_with(&self.repo, &self.first);
        let result = store.import_pack(&mut &stream[..], &[oid(&self.first)], limits).map(|_| ());
        (dir, store, result)
    }

    /// Imports `stream`, expecting a refusal for `reason` whose message holds `needle`, and
    /// that the store is as it was.
    fn refused(&self, what: &str, stream: &[u8], limits: &GitLimits, reason: Reason, needle: &str) {
        let (_dir, store, result) = self.import(stream, limits);
        let err = result.expect_err(what);
        assert_eq!(err.reason(), reason, "{what}: {err}");
        assert!(err.to_string().contains(needle), "{what}: {err:?} lacks {needle:?}");
        assert!(!err.to_string().contains('\n'), "{what}: one line: {err}");
        let packs = std::fs::read_dir(store.objects_dir().join("pack")).expect("pack dir").count();
        assert_eq!(packs, 2, "{what}: only the base release's pack and index remain");
    }
}

#[test]
fn a_patched_blob_lands_in_the_store_and_the_tree_is_complete() {
    for kind in [Kind::Sha1, Kind::Sha256] {
        let case = Case::new(kind);
        assert!(case.patch.len() < binary(2).len() + 4096);
        // Without its patch the delta lacks the blob.
        let (_dir, store, result) = case.import(&case.pack, &GitLimits::default());
        result.expect("the pack alone imports");
        let tree = store.commit_tree(&oid(&case.second)).expect("tree");
        let err = crate::git::validate_tree(&store, &tree, &GitLimits::default()).expect_err("blob missing");
        assert_eq!(err.reason(), Reason::MissingObject, "{err}");

        let (_dir, store, result) = case.import(&case.stream(&case.header, &case.patch), &GitLimits::default());
        result.expect("pack and patch import");
        let tree = store.commit_tree(&oid(&case.second)).expect("tree");
        crate::git::validate_tree(&store, &tree, &GitLimits::default()).expect("complete");
        let mut buf = Vec::new();
        let target = store.read_object(
            &oid(&hex::encode(&case.header.target)),
            gix_object::Kind::Blob,
            u64::MAX,
            None,
            &mut buf,
        );
        assert_eq!(target.expect("blob"), binary(2).as_slice());
    }
}

#[test]
fn a_section_after_an_empty_pack_still_lands() {
    let case = Case::new(Kind::Sha1);
    let mut stream = b"PACK\0\0\0\x02\0\0\0\0".to_vec();
    let mut hasher = gix_hash::hasher(Kind::Sha1);
    hasher.update(&stream);
    stream.extend_from_slice(hasher.try_finalize().expect("sha1").as_slice());
    stream.extend(section(&case.header, &case.patch));
    let (_dir, store) = store_with(&case.repo, &case.first);
    let outcome = store.import_pack(&mut &stream[..], &[], &GitLimits::default()).expect("import");
    assert_eq!((outcome.objects_in_stream, outcome.objects_written), (0, 1));
    assert!(store.contains(&oid(&hex::encode(&case.header.target))));
}

/// A patch copying nothing from its base: one control triple, then `bytes`.
fn literal(bytes: &[u8]) -> Vec<u8> {
    let mut patch = [0u64.to_le_bytes(), (bytes.len() as u64).to_le_bytes(), 0u64.to_le_bytes()].concat();
    patch.extend_from_slice(bytes);
    patch
}

fn blob_id(kind: Kind, bytes: &[u8]) -> Vec<u8> {
    gix_object::compute_hash(kind, gix_object::Kind::Blob, bytes).expect("hash").as_slice().to_vec()
}

/// Each base is loaded once: a base coming back after another one is refused, and a target
/// the store already holds is checked but not appended again.
#[test]
fn bases_are_loaded_once_and_held_blobs_not_appended_again() {
    let case = Case::new(Kind::Sha1);
    let app = case.repo.git(&["rev-parse", &format!("{}:config/app.toml", case.first)]);
    let held = case.repo.git_bytes(&["cat-file", "blob", &app], b"");
    let sections = |entries: &[(PatchHeader, Vec<u8>)]| {
        let mut stream = case.pack.clone();
        write_section_start(&mut stream, entries.len() as u32).expect("write");
        for (header, patch) in entries {
            write_patch_header(&mut stream, header).expect("write");
            stream.extend_from_slice(patch);
        }
        stream
    };
    let from_app = |bytes: &[u8]| {
        let header = PatchHeader {
            target: blob_id(Kind::Sha1, bytes),
            base: raw(&app),
            target_size: bytes.len() as u64,
            patch_len: bytes.len() as u64 + 24,
        };
        (header, literal(bytes))
    };
    let tool = (case.header.clone(), case.patch.clone());

    // The tool's patch, then one from app.toml that makes app.toml itself (held already).
    let stream = sections(&[tool.clone(), from_app(&held)]);
    let (_dir, store) = store_with(&case.repo, &case.first);
    let outcome = store.import_pack(&mut &stream[..], &[oid(&case.first)], &GitLimits::default()).expect("import");
    let one_patch = {
        let (_dir, store) = store_with(&case.repo, &case.first);
        let stream = case.stream(&case.header, &case.patch);
        store.import_pack(&mut &stream[..], &[oid(&case.first)], &GitLimits::default()).expect("import")
    };
    assert_eq!(outcome.objects_written, one_patch.objects_written, "the held blob is not appended");

    // tool (base A), app (base B), tool's base again: refused.
    let again = PatchHeader { target: blob_id(Kind::Sha1, b"x"), ..case.header.clone() };
    let stream = sections(&[tool, from_app(b"new app\n"), (again, literal(b"x"))]);
    case.refused("base again", &stream, &GitLimits::default(), Reason::Malformed, "not the previous");
}

#[test]
fn every_wrong_section_is_refused_and_leaves_the_store_as_it_was() {
    let case = Case::new(Kind::Sha1);
    let h = &case.header;
    let limits = GitLimits::default();
    let with = |edit: &dyn Fn(&mut PatchHeader)| {
        let mut header = h.clone();
        edit(&mut header);
        header
    };
    let mut flipped = case.patch.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let unrelated = case.repo.git(&["rev-parse", &format!("{}:config/app.toml", case.first)]);
    let a_tree = case.repo.tree_of(&case.first);
    let cases: Vec<(&str, Vec<u8>, Reason, &str)> = vec![
        ("wrong target id", case.stream(&with(&|x| x.target[0] ^= 1), &case.patch), Reason::Malformed, "makes blob"),
        ("wrong size", case.stream(&with(&|x| x.target_size -= 1), &case.patch), Reason::Malformed, "not the declared"),
        ("flipped byte", case.stream(h, &flipped), Reason::Malformed, "patch for"),
        (
            "other base",
            case.stream(&with(&|x| x.base = raw(&unrelated)), &case.patch),
            Reason::Malformed,
            "reaches past",
        ),
        ("tree base", case.stream(&with(&|x| x.base = raw(&a_tree)), &case.patch), Reason::Malformed, "not a blob"),
        ("absent base", case.stream(&with(&|x| x.base = vec![7; 20]), &case.patch), Reason::MissingObject, "lacks"),
        (
            "too long a patch",
            case.stream(&with(&|x| x.patch_len = max_patch_len(x.target_size) + 1), &case.patch),
            Reason::Malformed,
            "exceeds",
        ),
        (
            "junk",
            [case.pack.clone(), b"not a section at all".to_vec()].concat(),
            Reason::Malformed,
            "junk after the pack",
        ),
        ("junk after the section", [case.stream(h, &case.patch), vec![0]].concat(), Reason::Malformed, "junk after"),
    ];
    for (what, stream, reason, needle) in cases {
        case.refused(what, &stream, &limits, reason, needle);
    }
    // Declared shorter than its bytes: the rest is junk; longer: the stream ends inside it.
    let short = case.stream(&with(&|x| x.patch_len -= 10), &case.patch);
    case.refused("short length", &short, &limits, Reason::Malformed, "patch for");
    let full = case.stream(h, &case.patch);
    case.refused("cut in the magic", &full[..case.pack.len() + 3], &limits, Reason::Malformed, "junk after the pack");
    for cut in [case.pack.len() + 20, case.pack.len() + 60, full.len() - 1000, full.len() - 1] {
        case.refused("truncated", &full[..cut], &limits, Reason::Malformed, "truncated");
    }
    // Twice the same blob.
    let mut twice = case.pack.clone();
    write_section_start(&mut twice, 2).expect("write");
    for _ in 0..2 {
        write_patch_header(&mut twice, h).expect("write");
        twice.extend_from_slice(&case.patch);
    }
    case.refused("same target twice", &twice, &limits, Reason::Malformed, "twice");
    // Limits: the object size and count.
    let small = GitLimits { max_object_size: h.target_size - 1, ..GitLimits::default() };
    case.refused("object size", &full, &small, Reason::SizeExceeded, &Limit::ObjectSize.to_string());
    let declared = u32::from_be_bytes(case.pack[8..12].try_into().expect("count"));
    let few = GitLimits { max_objects: u64::from(declared) + 5, ..GitLimits::default() };
    let mut many = case.pack.clone();
    write_section_start(&mut many, 6).expect("write");
    case.refused("object count", &many, &few, Reason::SizeExceeded, &Limit::Objects.to_string());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary patch bytes under a valid framing are refused, never panic, and never
    /// make a blob.
    #[test]
    fn arbitrary_patch_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600), size in 0u64..2000) {
        let case = shared_case();
        let header = PatchHeader { target_size: size, patch_len: bytes.len() as u64, ..case.header.clone() };
        let (_dir, _store, result) = case.import(&case.stream(&header, &bytes), &GitLimits::default());
        let err = result.expect_err("refused");
        prop_assert!(matches!(err.reason(), Reason::Malformed | Reason::SizeExceeded), "{}", err);
    }
}

fn shared_case() -> &'static Case {
    static CASE: std::sync::OnceLock<Case> = std::sync::OnceLock::new();
    CASE.get_or_init(|| Case::new(Kind::Sha1))
}
