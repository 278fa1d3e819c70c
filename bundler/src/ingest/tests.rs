//! Ingest: each refusal staged by name, and the idempotence that makes a retried upload
//! or a re-imported USB stick harmless.

use ferry_proto::report::{DeviceStatus, ReportBatch, ReportRecord, REPORT_FORMAT};
use ferry_proto::SigningKey;

use super::{ingest, peek_first_seq, IngestError, MAX_COMPRESSED};
use crate::device_id::DeviceId;
use crate::fleetdb::{EnrolledBy, Enrollment, FleetDb};

const NOW: u64 = 1_750_000_000;

struct World {
    _dir: tempfile::TempDir,
    db: FleetDb,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = FleetDb::open(&dir.path().join("fleet.db")).expect("open");
    World { _dir: dir, db }
}

fn key() -> SigningKey {
    SigningKey::generate().expect("rng")
}

fn id(s: &str) -> DeviceId {
    s.parse().expect("device id")
}

fn record(seq: u64, kind: &str, release: Option<u64>) -> ReportRecord {
    ReportRecord { seq, at: 1_700_000_000 + seq, kind: kind.into(), release, reason: None, message: format!("m{seq}") }
}

fn batch(device: &str, key: &SigningKey, seqs: std::ops::RangeInclusive<u64>) -> ReportBatch {
    ReportBatch {
        format: REPORT_FORMAT,
        device_id: device.into(),
        device_key: key.public(),
        created: 1_700_000_100,
        dropped: 0,
        status: DeviceStatus {
            channel: "stable".into(),
            labels: vec![("site".into(), "plant7".into())],
            release: Some(4),
            commit: Some("c0ffee".into()),
            slot: Some("a".into()),
            health: "healthy".into(),
            last_failure: None,
            drift_paths: 0,
            paused: false,
        },
        records: seqs.map(|s| record(s, "applied", Some(4))).collect(),
    }
}

/// What a device sends: zstd of the signed envelope.
fn wire(batch: &ReportBatch, key: &SigningKey) -> Vec<u8> {
    zstd::encode_all(&batch.sign(key)[..], 3).expect("zstd")
}

fn enroll(w: &mut World, device: &str, key: &SigningKey) {
    let outcome = w.db.enroll(&id(device), &key.public(), EnrolledBy::Operator, false, NOW).expect("enroll");
    assert_eq!(outcome, Enrollment::New);
}

fn seqs(w: &World, device: &str) -> Vec<u64> {
    w.db.records(device).expect("records").iter().map(|r| r.record.seq).collect()
}

#[test]
fn valid_batch_is_stored_with_the_device_status() {
    let mut w = world();
    let k = key();
    enroll(&mut w, "pump-17", &k);
    let acked = ingest(&mut w.db, &wire(&batch("pump-17", &k, 1..=3), &k), false, NOW).expect("stored");
    assert_eq!((acked.acked, acked.new_records, acked.enrolled), (3, 3, false));
    assert_eq!(seqs(&w, "pump-17"), [1, 2, 3]);
    let devices = w.db.devices().expect("devices");
    let d = &devices[0];
    assert_eq!((d.device_id.as_str(), d.channel.as_deref(), d.release), ("pump-17", Some("stable"), Some(4)));
    assert_eq!((d.health.as_deref(), d.last_seen, d.acked, d.batches), (Some("healthy"), Some(NOW), 3, 1));
    assert_eq!(d.labels, [("site".to_string(), "plant7".to_string())]);
    let summary = w.db.release_summary().expect("summary");
    assert_eq!((summary[0].release, summary[0].current, summary[0].applied, summary[0].healthy), (4, 1, 1, 1));
}

#[test]
fn unenrolled_device_is_refused_unless_enrolled_on_first_use() {
    let mut w = world();
    let k = key();
    let body = wire(&batch("newcomer", &k, 1..=2), &k);
    let err = ingest(&mut w.db, &body, false, NOW).expect_err("unenrolled");
    assert!(matches!(err, IngestError::Unenrolled { .. }), "{err:?}");
    assert_eq!((err.status(), err.to_string()), (403, "unenrolled device newcomer".to_string()));
    assert!(w.db.devices().expect("devices").is_empty(), "a refused batch wrote a device");

    let acked = ingest(&mut w.db, &body, true, NOW).expect("first use");
    assert!(acked.enrolled);
    assert_eq!(w.db.enrolled_key(&id("newcomer")).expect("key").expect("enrolled").key, k.public());
    // The enrolled key now binds: another key under the same id is refused even on first use.
    let intruder = key();
    let err = ingest(&mut w.db, &wire(&batch("newcomer", &intruder, 3..=3), &intruder), true, NOW).expect_err("other");
    assert!(matches!(err, IngestError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn first_use_enrolment_still_requires_a_valid_signature() {
    let mut w = world();
    let (k, forger) = (key(), key());
    // Names k's public key but is signed by another key.
    let body = zstd::encode_all(&batch("d1", &k, 1..=1).sign(&forger)[..], 3).expect("zstd");
    let err = ingest(&mut w.db, &body, true, NOW).expect_err("forged");
    assert_eq!((err.status(), err.code()), (400, "signature"));
    assert!(w.db.devices().expect("devices").is_empty());
}

#[test]
fn batch_from_another_key_is_refused() {
    let mut w = world();
    let (k, other) = (key(), key());
    enroll(&mut w, "d1", &k);
    // Signed by and naming another key: the enrolled one does not match.
    let err = ingest(&mut w.db, &wire(&batch("d1", &other, 1..=1), &other), false, NOW).expect_err("other key");
    assert!(matches!(err, IngestError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(err.status(), 403);
    // Naming the enrolled key but signed by another: the signature fails.
    let forged = zstd::encode_all(&batch("d1", &k, 1..=1).sign(&other)[..], 3).expect("zstd");
    let err = ingest(&mut w.db, &forged, false, NOW).expect_err("forged");
    assert_eq!((err.status(), err.code()), (400, "signature"));
    assert!(err.to_string().starts_with("signature: "), "{err}");
    assert!(seqs(&w, "d1").is_empty());
}

#[test]
fn tampered_batch_is_refused() {
    let mut w = world();
    let k = key();
    enroll(&mut w, "d1", &k);
    let envelope = batch("d1", &k, 1..=3).sign(&k);
    for i in (0..envelope.len()).step_by(7) {
        let mut bad = envelope.clone();
        bad[i] ^= 0x01;
        let body = zstd::encode_all(&bad[..], 3).expect("zstd");
        match ingest(&mut w.db, &body, false, NOW) {
            Err(e) => assert!([400, 403].contains(&e.status()), "flip at {i}: {e:?}"),
            Ok(a) => panic!("flip at {i} accepted: {a:?}"),
        }
    }
    let err = ingest(&mut w.db, b"not zstd at all", false, NOW).expect_err("garbage");
    assert_eq!((err.status(), err.code()), (400, "malformed"));
    assert!(seqs(&w, "d1").is_empty());
}

#[test]
fn oversized_batches_are_refused_before_decoding() {
    let mut w = world();
    // Compressed size over the cap (incompressible bytes).
    let mut body = vec![0u8; MAX_COMPRESSED + 1];
    noise(&mut body);
    let err = ingest(&mut w.db, &body, false, NOW).expect_err("too large");
    assert_eq!((err.status(), err.code()), (413, "size-exceeded"));
    // A small body that expands past the envelope limit (a zstd bomb).
    let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).expect("zstd");
    assert!(bomb.len() < 64 << 10);
    let err = ingest(&mut w.db, &bomb, false, NOW).expect_err("bomb");
    assert_eq!(err.status(), 413, "{err}");
    // A real batch just over the envelope limit.
    let k = key();
    enroll(&mut w, "chatty", &k);
    let mut big = batch("chatty", &k, 1..=1);
    big.records[0].message = "x".repeat(1 << 20);
    let err = ingest(&mut w.db, &wire(&big, &k), false, NOW).expect_err("big");
    assert_eq!(err.status(), 413, "{err}");
}

/// Incompressible bytes: SHA-256 in counter mode.
fn noise(buf: &mut [u8]) {
    use sha2::Digest;
    for (i, chunk) in buf.chunks_mut(32).enumerate() {
        let block = sha2::Sha256::digest((i as u64).to_le_bytes());
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

#[test]
fn replayed_batch_is_409_with_the_ack_and_stores_nothing_twice() {
    let mut w = world();
    let k = key();
    enroll(&mut w, "d1", &k);
    let body = wire(&batch("d1", &k, 1..=5), &k);
    assert_eq!(ingest(&mut w.db, &body, false, NOW).expect("first").acked, 5);
    let err = ingest(&mut w.db, &body, false, NOW + 60).expect_err("replay");
    assert!(matches!(err, IngestError::Replay { acked: 5, .. }), "{err:?}");
    assert_eq!(err.status(), 409);
    assert_eq!(seqs(&w, "d1"), [1, 2, 3, 4, 5]);
    // A replay does not refresh last_seen or the status.
    let d = &w.db.devices().expect("devices")[0];
    assert_eq!((d.last_seen, d.batches), (Some(NOW), 1));
    // A batch with no records carries nothing new either.
    let mut empty = batch("d1", &k, 1..=1);
    empty.records.clear();
    let err = ingest(&mut w.db, &wire(&empty, &k), false, NOW).expect_err("empty");
    assert!(matches!(err, IngestError::Replay { acked: 5, .. }), "{err:?}");
}

#[test]
fn partly_new_batch_stores_only_the_new_records() {
    let mut w = world();
    let k = key();
    enroll(&mut w, "d1", &k);
    ingest(&mut w.db, &wire(&batch("d1", &k, 1..=3), &k), false, NOW).expect("first");
    // The ack was lost: the device sends 1..=3 again with 4..=6.
    let mut again = batch("d1", &k, 1..=6);
    again.records[0].message = "changed after the fact".into();
    again.status.release = Some(5);
    let acked = ingest(&mut w.db, &wire(&again, &k), false, NOW + 1).expect("second");
    assert_eq!((acked.acked, acked.new_records), (6, 3));
    let stored = w.db.records("d1").expect("records");
    assert_eq!(stored.iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(stored[0].record.message, "m1", "a stored record was rewritten");
    assert_eq!(w.db.devices().expect("devices")[0].release, Some(5));
}

#[test]
fn dropped_counts_are_not_double_counted_when_an_ack_was_lost() {
    let mut w = world();
    let k = key();
    enroll(&mut w, "d1", &k);
    let mut b = batch("d1", &k, 1..=2);
    b.dropped = 4;
    ingest(&mut w.db, &wire(&b, &k), false, NOW).expect("first");
    // Ack lost; the device compacted 1 more and resends with its counter at 5.
    let mut b = batch("d1", &k, 1..=3);
    b.dropped = 5;
    ingest(&mut w.db, &wire(&b, &k), false, NOW).expect("second");
    assert_eq!(w.db.devices().expect("devices")[0].dropped_total, 5);
    // Ack received; the counter restarted.
    let mut b = batch("d1", &k, 4..=4);
    b.dropped = 2;
    ingest(&mut w.db, &wire(&b, &k), false, NOW).expect("third");
    assert_eq!(w.db.devices().expect("devices")[0].dropped_total, 7);
}

#[test]
fn sequence_zero_and_out_of_range_are_malformed() {
    let mut w = world();
    let k = key();
    enroll(&mut w, "d1", &k);
    let err = ingest(&mut w.db, &wire(&batch("d1", &k, 0..=1), &k), false, NOW).expect_err("zero");
    assert_eq!((err.status(), err.code()), (400, "malformed"));
    let mut huge = batch("d1", &k, 1..=1);
    huge.records[0].seq = u64::MAX;
    let err = ingest(&mut w.db, &wire(&huge, &k), false, NOW).expect_err("huge");
    assert_eq!((err.status(), err.code()), (400, "malformed"));
}

#[test]
fn device_id_that_is_not_a_file_name_is_refused() {
    let mut w = world();
    let k = key();
    let err = ingest(&mut w.db, &wire(&batch("..", &k, 1..=1), &k), true, NOW).expect_err("dot-dot");
    assert_eq!((err.status(), err.code()), (400, "malformed"));
    assert!(w.db.devices().expect("devices").is_empty());
}

#[test]
fn re_enrolling_with_a_new_key_restarts_the_sequence() {
    let mut w = world();
    let (old, new) = (key(), key());
    enroll(&mut w, "d1", &old);
    ingest(&mut w.db, &wire(&batch("d1", &old, 1..=9), &old), false, NOW).expect("old key");
    let d = id("d1");
    let conflict = w.db.enroll(&d, &new.public(), EnrolledBy::Operator, false, NOW).expect("enroll");
    assert!(matches!(conflict, Enrollment::Conflict { .. }), "{conflict:?}");
    let replaced = w.db.enroll(&d, &new.public(), EnrolledBy::Operator, true, NOW).expect("replace");
    assert!(matches!(replaced, Enrollment::Replaced { .. }), "{replaced:?}");
    // The re-provisioned device starts at 1 again and is not taken for a replay.
    let acked = ingest(&mut w.db, &wire(&batch("d1", &new, 1..=2), &new), false, NOW).expect("new key");
    assert_eq!(acked.acked, 2);
    let epochs: Vec<(u64, u64)> =
        w.db.records("d1").expect("records").iter().map(|r| (r.epoch, r.record.seq)).collect();
    assert_eq!(epochs.len(), 11);
    assert_eq!(&epochs[9..], [(2, 1), (2, 2)]);
    // The old key is refused now.
    let err = ingest(&mut w.db, &wire(&batch("d1", &old, 10..=10), &old), false, NOW).expect_err("old key");
    assert!(matches!(err, IngestError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn rolled_back_releases_are_counted_per_channel() {
    let mut w = world();
    let (a, b) = (key(), key());
    enroll(&mut w, "a", &a);
    enroll(&mut w, "b", &b);
    ingest(&mut w.db, &wire(&batch("a", &a, 1..=1), &a), false, NOW).expect("a");
    let mut rb = batch("b", &b, 1..=2);
    rb.records[1] = ReportRecord { kind: "rolled-back".into(), release: Some(5), ..record(2, "", None) };
    rb.status.health = "rolled-back".into();
    ingest(&mut w.db, &wire(&rb, &b), false, NOW).expect("b");
    let summary = w.db.release_summary().expect("summary");
    let row = |r: u64| summary.iter().find(|s| s.release == r).expect("row").clone();
    assert_eq!((row(5).rolled_back, row(5).current, row(5).applied), (1, 0, 0));
    assert_eq!((row(4).current, row(4).applied, row(4).healthy, row(4).rolled_back), (2, 2, 1, 0));
}

#[test]
fn import_order_comes_from_the_first_sequence() {
    let k = key();
    assert_eq!(peek_first_seq(&wire(&batch("d1", &k, 7..=9), &k)), Some(7));
    assert_eq!(peek_first_seq(b"junk"), None);
}

#[test]
fn history_is_newest_first_and_tells_whether_the_newest_record_failed() {
    let mut w = world();
    let k = key();
    enroll(&mut w, "d1", &k);
    ingest(&mut w.db, &wire(&batch("d1", &k, 1..=3), &k), false, NOW).expect("first");
    let d = w.db.device(&id("d1")).expect("query").expect("enrolled");
    assert!(!d.newest_record_failed);
    let mut failed = batch("d1", &k, 4..=4);
    failed.records[0].kind = "rolled-back".into();
    failed.records[0].reason = Some("health-failed".into());
    ingest(&mut w.db, &wire(&failed, &k), false, NOW + 5).expect("second");
    let d = w.db.device(&id("d1")).expect("query").expect("enrolled");
    assert!(d.newest_record_failed);
    assert_eq!(d.last_failure_message.as_deref(), Some("m4"));
    let (newest, total) = w.db.history(&id("d1"), 2).expect("history");
    assert_eq!(total, 4);
    assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 3]);
    assert_eq!((newest[0].reason.as_deref(), newest[0].received_at), (Some("health-failed"), NOW + 5));
    assert!(w.db.device(&id("d2")).expect("query").is_none());
    assert_eq!(w.db.history(&id("d2"), 10).expect("history"), (Vec::new(), 0));
}
