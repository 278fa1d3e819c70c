//! Payload files and their rows: what counts after a crash, a lost or altered file, the
//! sweep of stray files, and the move of schema-3 chunks out of the database.

use std::io::Read;

use rusqlite::{params, Connection};

use super::super::{Store, MIGRATIONS};
use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    (dir, s)
}

fn read_all(s: &Store, d: &Sha256Digest) -> String {
    let mut out = String::new();
    s.payload_reader(d).expect("reader").read_to_string(&mut out).expect("read");
    out
}

#[test]
fn payload_round_trip_and_a_verified_payload_is_immutable() {
    let (dir, mut s) = store();
    let d = Sha256Digest::of(b"hello");
    assert!(s.begin_payload(&d, &d, 5).expect("begin"));
    assert!(s.put_chunk(&d, 0, b"hel").expect("chunk"));
    assert!(!s.put_chunk(&d, 0, b"xx").expect("chunk at a stale offset is refused"));
    assert!(s.put_chunk(&d, 3, b"lo").expect("chunk"));
    assert_eq!(s.payload_progress(&d).expect("progress"), Some((5, None)));
    assert!(s.payload_reader(&d).is_err(), "an unverified payload is not read");
    assert!(s.verify_and_mark(&d, 5).expect("verify"));
    assert!(s.payload_verified(&d).expect("q"));
    assert!(!s.put_chunk(&d, 5, b"!").expect("a verified payload is immutable"));
    assert!(!s.begin_payload(&d, &d, 5).expect("a verified payload is not reset"));
    assert_eq!(read_all(&s, &d), "hello");
    assert_eq!(fs::read(dir.path().join(DIR).join(d.to_hex())).expect("file"), b"hello");
}

#[test]
fn bytes_past_the_counted_ones_are_cut_off_by_the_next_write() {
    let (dir, mut s) = store();
    let d = Sha256Digest::of(b"hello");
    assert!(s.begin_payload(&d, &d, 5).expect("begin"));
    assert!(s.put_chunk(&d, 0, b"he").expect("chunk"));
    // A crash after the bytes were synced, before their row was committed.
    let path = dir.path().join(DIR).join(d.to_hex());
    fs::write(&path, b"heXXXXXX").expect("stray bytes");
    assert_eq!(s.payload_progress(&d).expect("progress"), Some((2, None)));
    assert!(s.put_chunk(&d, 2, b"llo").expect("chunk"));
    assert_eq!(fs::read(&path).expect("file"), b"hello");
    assert!(s.verify_and_mark(&d, 5).expect("verify"));
}

#[test]
fn a_file_cut_short_or_lost_counts_only_what_it_holds() {
    let (dir, mut s) = store();
    let d = Sha256Digest::of(b"hello");
    assert!(s.begin_payload(&d, &d, 5).expect("begin"));
    assert!(s.put_chunk(&d, 0, b"hell").expect("chunk"));
    let path = dir.path().join(DIR).join(d.to_hex());
    File::options().write(true).open(&path).expect("open").set_len(2).expect("cut");
    assert_eq!(s.payload_progress(&d).expect("progress"), Some((2, None)));
    assert!(!s.put_chunk(&d, 4, b"o").expect("the row's offset is refused: the file lacks it"));
    assert!(!s.verify_and_mark(&d, 5).expect("verify"), "a short file never verifies");
    assert!(s.put_chunk(&d, 2, b"llo").expect("resumed where the file ends"));
    assert!(s.verify_and_mark(&d, 5).expect("verify"));
    fs::remove_file(&path).expect("lose the file");
    assert!(!s.payload_verified(&d).expect("q"), "a verified payload without its file is not verified");
    assert!(s.begin_payload(&d, &d, 5).expect("so it can be stored again"));
    assert_eq!(s.payload_progress(&d).expect("progress"), Some((0, None)));
}

#[test]
fn an_altered_file_does_not_verify() {
    let (dir, mut s) = store();
    let d = Sha256Digest::of(b"hello");
    assert!(s.begin_payload(&d, &d, 5).expect("begin"));
    assert!(s.put_chunk(&d, 0, b"hello").expect("chunk"));
    fs::write(dir.path().join(DIR).join(d.to_hex()), b"jello").expect("alter");
    assert!(!s.verify_and_mark(&d, 5).expect("verify"));
    assert!(!s.payload_verified(&d).expect("q"));
    s.discard_unverified_payload(&d).expect("discard");
    assert_eq!(s.payload_progress(&d).expect("progress"), None);
    assert!(!dir.path().join(DIR).join(d.to_hex()).exists(), "the file goes with its row");
}

#[test]
fn deleting_a_payload_removes_its_file_and_the_sweep_removes_strays() {
    let (dir, mut s) = store();
    let kept = Sha256Digest::of(b"kept");
    let gone = Sha256Digest::of(b"gone");
    for (d, bytes) in [(&kept, &b"kept"[..]), (&gone, b"gone")] {
        assert!(s.begin_payload(d, d, 4).expect("begin"));
        assert!(s.put_chunk(d, 0, bytes).expect("chunk"));
        assert!(s.verify_and_mark(d, 4).expect("verify"));
    }
    s.delete_payload(&gone).expect("delete");
    let files = dir.path().join(DIR);
    assert!(!files.join(gone.to_hex()).exists());
    fs::write(files.join(gone.to_hex()), b"gone").expect("a file whose row is gone");
    fs::write(files.join("notes.txt"), b"?").expect("a stray name");
    fs::create_dir(files.join("sub")).expect("a stray directory");
    assert_eq!(s.remove_stray_payload_files().expect("sweep"), 3);
    let left: Vec<_> = fs::read_dir(&files).expect("list").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from(kept.to_hex())]);
    assert_eq!(read_all(&s, &kept), "kept");
}

#[test]
fn opening_a_schema_2_database_moves_its_chunks_into_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Sha256Digest::of(b"hello");
    let partial = Sha256Digest::of(b"partial");
    {
        let conn = Connection::open(dir.path().join("ferry.db")).expect("open");
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", 2).expect("version");
        for (digest, size, stored, verified) in [(&d, 5, 5, true), (&partial, 7, 3, false)] {
            conn.execute(
                "INSERT INTO payloads(digest, manifest, size, stored, verified, updated_at) VALUES(?1, ?1, ?2, ?3, ?4, 0)",
                params![digest.to_hex(), size, stored, verified],
            )
            .expect("payload");
        }
        for (digest, offset, data) in [(&d, 0, &b"hel"[..]), (&d, 3, b"lo"), (&partial, 0, b"par")] {
            conn.execute(
                "INSERT INTO payload_chunks(digest, offset, data) VALUES(?1, ?2, ?3)",
                params![digest.to_hex(), offset, data],
            )
            .expect("chunk");
        }
    }
    let mut s = Store::open(dir.path()).expect("migrates");
    let tables: i64 = s
        .conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'payload_chunks'", [], |r| r.get(0))
        .expect("schema");
    assert_eq!(tables, 0, "the chunk table is gone");
    assert!(s.payload_verified(&d).expect("q"));
    assert_eq!(read_all(&s, &d), "hello");
    assert_eq!(s.payload_progress(&partial).expect("progress"), Some((3, None)), "a download resumes");
    assert!(s.put_chunk(&partial, 3, b"tial").expect("chunk"));
    assert!(s.verify_and_mark(&partial, 7).expect("the moved bytes hash to the digest"));
    assert_eq!(s.integrity_check().expect("check"), "ok");
    drop(s);
    let s = Store::open(dir.path()).expect("reopens");
    assert_eq!(read_all(&s, &d), "hello");
}

/// A source that yields `good` and then fails.
struct Failing<'a> {
    good: &'a [u8],
}

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good.is_empty() {
            return Err(io::Error::other("the stick went away"));
        }
        self.good.read(buf)
    }
}

#[test]
fn append_from_counts_what_its_source_held_and_nothing_of_a_failed_read() {
    let (_dir, mut s) = store();
    let d = Sha256Digest::of(b"hello");
    assert!(s.begin_payload(&d, &d, 5).expect("begin"));
    assert_eq!(s.append_from(&d, 0, &mut &b"he"[..], 4).expect("append"), Some(2), "the source ended");
    let e = s.append_from(&d, 2, &mut Failing { good: b"l" }, 3).expect_err("a failed read");
    assert!(matches!(e, StoreError::Source(_)), "{e}");
    assert_eq!(s.payload_progress(&d).expect("progress"), Some((2, None)), "nothing of the failed piece counts");
    assert_eq!(s.append_from(&d, 2, &mut &b"llo"[..], 3).expect("append"), Some(3));
    assert_eq!(s.append_from(&d, 2, &mut &b"llo"[..], 3).expect("append"), None, "a stale offset is refused");
    assert!(s.verify_and_mark(&d, 5).expect("verify"));
}
