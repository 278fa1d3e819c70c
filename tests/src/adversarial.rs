//! Helpers for the adversarial corpus (`tests/tests/adversarial.rs`):
//!
//! * [`PackWriter`]: a small git pack v2 writer (entry headers, `OFS_DELTA` / `REF_DELTA`,
//!   stored zlib streams, the SHA-1 trailer) for packs no git command writes: huge declared
//!   sizes, delta bombs, deep delta chains, `REF_DELTA` cycles, truncation and junk;
//! * [`forge_release`]: wraps a bundle (v2 header + pack) in zstd and a `.ferry` container
//!   whose manifest is properly signed by the operator's release key, so that only the
//!   payload is hostile;
//! * envelope surgery ([`rewrap`], [`sign_index`]) for signature-level attacks;
//! * [`Tmpfs`]: a small tmpfs mounted for the duration of a full-disk test.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_proto::container::ContainerHeader;
use ferry_proto::envelope::DocKind;
use ferry_proto::index::{ChannelIndex, LatestRelease, INDEX_FORMAT};
use ferry_proto::manifest::{PayloadKind, PayloadRef, ReleaseManifest, Source, MANIFEST_FORMAT};
use ferry_proto::{Envelope, Limits, ObjectFormat, Sha256Digest, SigningKey};

use crate::fixture::Operator;

/// Pack object types (the 3-bit type of an entry header).
pub mod kind {
    /// A commit.
    pub const COMMIT: u8 = 1;
    /// A tree.
    pub const TREE: u8 = 2;
    /// A blob.
    pub const BLOB: u8 = 3;
    /// A delta against an earlier entry of the same pack, by offset.
    pub const OFS_DELTA: u8 = 6;
    /// A delta against an object named by id.
    pub const REF_DELTA: u8 = 7;
}

/// Writes a git pack, version 2, entry by entry.
#[derive(Debug)]
pub struct PackWriter {
    bytes: Vec<u8>,
}

impl PackWriter {
    /// A pack whose header declares `count` objects (the writer does not check it).
    pub fn new(count: u32) -> PackWriter {
        let mut bytes = b"PACK".to_vec();
        bytes.extend_from_slice(&2u32.to_be_bytes());
        bytes.extend_from_slice(&count.to_be_bytes());
        PackWriter { bytes }
    }

    /// Offset the next entry starts at.
    pub fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Appends an entry: header (`kind`, `declared_size`), then `between` (the base offset
    /// or id of a delta), then `zdata` (a zlib stream) as is. Returns the entry's offset.
    pub fn raw_entry(&mut self, kind: u8, declared_size: u64, between: &[u8], zdata: &[u8]) -> u64 {
        let at = self.offset();
        let mut size = declared_size;
        let mut byte = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            self.bytes.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        self.bytes.push(byte);
        self.bytes.extend_from_slice(between);
        self.bytes.extend_from_slice(zdata);
        at
    }

    /// A whole object of `kind` (blob, tree, commit) holding `content`.
    pub fn object(&mut self, kind: u8, content: &[u8]) -> u64 {
        self.raw_entry(kind, content.len() as u64, &[], &zlib_stored(content))
    }

    /// An `OFS_DELTA` entry whose base is the entry at `base`.
    pub fn ofs_delta(&mut self, base: u64, delta: &[u8]) -> u64 {
        let at = self.offset();
        self.raw_entry(kind::OFS_DELTA, delta.len() as u64, &ofs_encoding(at - base), &zlib_stored(delta))
    }

    /// A `REF_DELTA` entry whose base is the object `base` (a SHA-1 id).
    pub fn ref_delta(&mut self, base: &[u8; 20], delta: &[u8]) -> u64 {
        self.raw_entry(kind::REF_DELTA, delta.len() as u64, base, &zlib_stored(delta))
    }

    /// The pack with its SHA-1 trailer.
    pub fn finish(mut self) -> Vec<u8> {
        let sum = sha1(&self.bytes);
        self.bytes.extend_from_slice(&sum);
        self.bytes
    }
}

/// The negative-offset encoding of an `OFS_DELTA` base distance.
fn ofs_encoding(mut distance: u64) -> Vec<u8> {
    let mut out = vec![(distance & 0x7f) as u8];
    distance >>= 7;
    while distance > 0 {
        distance -= 1;
        out.push(0x80 | (distance & 0x7f) as u8);
        distance >>= 7;
    }
    out.reverse();
    out
}

/// A zlib stream of `data` in stored (uncompressed) deflate blocks.
pub fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 16);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// [`zlib_stored`] of `data` with `blocks` empty stored deflate blocks after the zlib
/// header: it still inflates to `data`, but is 5 bytes longer per block (RELIABILITY.md, F6).
pub fn zlib_padded(data: &[u8], blocks: u64) -> Vec<u8> {
    let stored = zlib_stored(data);
    let mut padded = Vec::with_capacity(blocks as usize * 5 + stored.len());
    padded.extend_from_slice(&stored[..2]);
    for _ in 0..blocks {
        // BFINAL=0, BTYPE=00 (stored), LEN=0, NLEN=0xffff: a block of nothing.
        padded.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
    }
    padded.extend_from_slice(&stored[2..]);
    padded
}

/// Adler-32, as zlib's trailer.
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for block in data.chunks(5552) {
        for &x in block {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// SHA-1 of `bytes` (by `sha1sum`, which is fast where a debug-built hash is not).
pub fn sha1(bytes: &[u8]) -> [u8; 20] {
    let mut child = Command::new("sha1sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running sha1sum: {e}"));
    child.stdin.take().expect("stdin").write_all(bytes).expect("feed sha1sum");
    let out = child.wait_with_output().expect("sha1sum");
    assert!(out.status.success(), "sha1sum failed");
    let hex = String::from_utf8_lossy(&out.stdout);
    let hex = hex.split_whitespace().next().expect("a digest");
    let mut id = [0u8; 20];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    id
}

/// The SHA-1 object id git gives `content` as an object of `kind` (`blob`, `tree`, …).
pub fn object_id(kind: &str, content: &[u8]) -> [u8; 20] {
    let mut object = format!("{kind} {}\0", content.len()).into_bytes();
    object.extend_from_slice(content);
    sha1(&object)
}

/// Lower-case hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A git delta's size varint.
fn delta_varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A delta header: the base's size, then the result's size.
pub fn delta_header(base_size: u64, result_size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    delta_varint(base_size, &mut out);
    delta_varint(result_size, &mut out);
    out
}

/// A delta "copy `size` bytes from the base at `offset`" instruction (all bytes present).
pub fn copy_op(offset: u32, size: u32) -> Vec<u8> {
    let mut out = vec![0x80 | 0x0f | 0x70];
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes()[..3]);
    out
}

/// A delta "insert these bytes" instruction (1–127 bytes).
pub fn insert_op(bytes: &[u8]) -> Vec<u8> {
    assert!((1..=127).contains(&bytes.len()), "an insert carries 1-127 bytes");
    let mut out = vec![bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

/// A v2 git bundle: one ref (`refs/ferry/<channel>/<release>`) at `commit`, then `pack`.
pub fn bundle(commit: &str, refname: &str, pack: &[u8]) -> Vec<u8> {
    let mut out = format!("# v2 git bundle\n{commit} {refname}\n\n").into_bytes();
    out.extend_from_slice(pack);
    out
}

/// Loads a private key written by `bundler keygen`.
pub fn load_key(path: &Path) -> SigningKey {
    let pem = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SigningKey::from_pem(&pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a forged release names: the snapshot and its number.
#[derive(Debug, Clone)]
pub struct Forged {
    /// The release number.
    pub release: u64,
    /// The snapshot commit the manifest (and the bundle's ref) names.
    pub commit: String,
    /// The snapshot tree the manifest names.
    pub tree: String,
}

/// Unix seconds now.
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Writes `<op>/forged-<name>.ferry`: `bundle` zstd-compressed at `level`, carried by a
/// manifest for release `f.release` of `channel` signed by the operator's release key.
/// Only the payload can be hostile: everything the device verifies before the pack holds.
pub fn forge_release(op: &Operator, channel: &str, f: &Forged, bundle: &[u8], level: i32, name: &str) -> PathBuf {
    let payload = zstd::stream::encode_all(bundle, level).expect("zstd");
    let entry = PayloadRef { kind: PayloadKind::Full, size: payload.len() as u64, sha256: Sha256Digest::of(&payload) };
    let manifest = ReleaseManifest {
        format: MANIFEST_FORMAT,
        channel: channel.parse().expect("channel"),
        release: f.release,
        source: Source {
            repo: "adversarial".into(),
            reference: "refs/heads/hostile".into(),
            commit: f.commit.parse().expect("commit id"),
            path: None,
        },
        snapshot_commit: f.commit.parse().expect("commit id"),
        snapshot_tree: f.tree.parse().expect("tree id"),
        object_format: ObjectFormat::Sha1,
        created: now(),
        not_after: None,
        require_labels: Default::default(),
        payloads: vec![entry.clone()],
    };
    let key = load_key(&op.key("release"));
    let envelope = Envelope::sign(DocKind::Manifest, manifest.to_bytes(), &[&key]).encode();
    let header = ContainerHeader { manifest: envelope, payload_sha256: entry.sha256, payload_size: entry.size };
    let mut out = Vec::with_capacity(payload.len() + 1024);
    header.write_to(&mut out).expect("header");
    out.extend_from_slice(&payload);
    let dest = op.dir.path().join(format!("forged-{name}.ferry"));
    fs::write(&dest, out).expect("write forged .ferry");
    dest
}

/// The manifest envelope of the `.ferry` file at `path`, decoded.
pub fn manifest_envelope(path: &Path) -> Envelope {
    let bytes = fs::read(path).expect("read .ferry");
    let header = ContainerHeader::read_from(&mut &bytes[..], &Limits::default()).expect("a .ferry header");
    Envelope::decode(&header.manifest, &Limits::default()).expect("a manifest envelope")
}

/// Writes a copy of the `.ferry` file `src` to `dest` with its manifest envelope replaced
/// by `envelope` (the payload and its digest untouched).
pub fn rewrap(src: &Path, envelope: &Envelope, dest: &Path) {
    let bytes = fs::read(src).expect("read .ferry");
    let mut reader = &bytes[..];
    let header = ContainerHeader::read_from(&mut reader, &Limits::default()).expect("a .ferry header");
    let new = ContainerHeader { manifest: envelope.encode(), ..header };
    let mut out = Vec::new();
    new.write_to(&mut out).expect("header");
    out.extend_from_slice(reader);
    fs::write(dest, out).expect("write .ferry");
}

/// A channel index for `channel` at `version`, valid for a week, naming `latest`, signed
/// by `key` (a stolen index key, say).
pub fn sign_index(key: &SigningKey, channel: &str, version: u64, latest: Option<LatestRelease>) -> Vec<u8> {
    let created = now();
    let index = ChannelIndex {
        format: INDEX_FORMAT,
        channel: channel.parse().expect("channel"),
        version,
        created,
        expires: created + 7 * 86400,
        latest,
        rollout_percent: 100,
        halted: false,
    };
    Envelope::sign(DocKind::Index, index.to_bytes(), &[key]).encode()
}

/// A tmpfs of a fixed size mounted on an existing directory, unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on the directory `at`; `None` where mounting is not
    /// allowed (not root, no `CAP_SYS_ADMIN`).
    pub fn mount_at(at: &Path, bytes: u64) -> Option<Tmpfs> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs { at: at.to_path_buf() })
    }

    /// Grows (or shrinks) the file system to `bytes`, keeping its files.
    pub fn resize(&self, bytes: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.at)
            .status()
            .expect("mount -o remount");
        assert!(status.success(), "remounting {} with {bytes} bytes: {status}", self.at.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}
