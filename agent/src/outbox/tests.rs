//! Outbox tests: batching (order, sizes, signatures), compaction and acknowledgements.

use std::path::Path;

use ferry_proto::report::ReportBatch;
use ferry_proto::Limits;

use super::*;

fn cfg(state: &Path) -> Config {
    let text = format!(
        "channel = \"stable\"\ntrust_root = \"root.1\"\nstate_dir = \"{}\"\ndevice_id = \"pump-17\"\nlabels = {{ site = \"plant7\" }}\n",
        state.display()
    );
    Config::parse(&text, Path::new("/etc/ferry/agent.toml")).expect("config")
}

struct World {
    _dir: tempfile::TempDir,
    cfg: Config,
    store: Store,
    key: SigningKey,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg(&dir.path().join("state"));
    std::fs::create_dir_all(&cfg.state_dir).expect("mkdir");
    let store = Store::open(&cfg.state_dir).expect("store");
    World { _dir: dir, cfg, store, key: SigningKey::generate().expect("rng") }
}

impl World {
    fn routine(&self, n: usize, message: &str) {
        for _ in 0..n {
            self.store.record_event("fetched", Some(1), None, message).expect("event");
        }
    }

    fn seqs(&self) -> Vec<u64> {
        let mut stmt = self.store.conn().prepare("SELECT seq FROM events ORDER BY seq").expect("prepare");
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).expect("query");
        rows.map(|r| r.expect("row") as u64).collect()
    }

    fn kinds(&self) -> Vec<(u64, String)> {
        let mut stmt = self.store.conn().prepare("SELECT seq, kind FROM events ORDER BY seq").expect("prepare");
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))).expect("query");
        rows.map(|r| r.expect("row")).collect()
    }

    fn plan(&self) -> BatchPlan<'_> {
        BatchPlan::new(&self.cfg, &self.key, &self.store).expect("plan")
    }

    fn open(&self, batch: &Batch) -> ReportBatch {
        let envelope = zstd::decode_all(&batch.body[..]).expect("zstd");
        assert_eq!(envelope.len(), batch.envelope_len);
        ReportBatch::verify(&envelope, &self.key.public(), &Limits::default()).expect("verifies with the device key")
    }

    /// Every batch from the start, as an export makes them.
    fn all_batches(&self, plan: &BatchPlan) -> Vec<Batch> {
        let outbox = Outbox::new(&self.store);
        let mut out: Vec<Batch> = Vec::new();
        let mut after = 0;
        while let Some(b) = outbox.make_batch(after, plan, out.is_empty()).expect("batch") {
            after = b.last_seq;
            out.push(b);
        }
        out
    }
}

#[test]
fn the_sql_row_size_matches_the_documented_overhead() {
    assert!(ROW_SIZE_SQL.contains(&format!("+ {ROW_OVERHEAD})")));
    assert!(is_routine("agent-start", None) && is_routine("switched", None));
    assert!(!is_routine("rejected", Some("signature")) && !is_routine("drift", None) && !is_routine("applied", None));
}

#[test]
fn batches_are_ordered_bounded_and_verify() {
    let w = world();
    w.routine(1201, "ok");
    let batches = w.all_batches(&w.plan());
    let counts: Vec<usize> = batches.iter().map(|b| b.records).collect();
    assert_eq!(counts, vec![500, 500, 201]);
    let mut expected = 1;
    for b in &batches {
        let batch = w.open(b);
        assert_eq!(batch.device_id, "pump-17");
        assert_eq!(batch.device_key, w.key.public());
        assert_eq!(batch.status.channel, "stable");
        assert_eq!(batch.status.labels, vec![("site".to_string(), "plant7".to_string())]);
        assert_eq!(batch.status.health, "none");
        assert_eq!((batch.records[0].seq, batch.last_seq()), (b.first_seq, b.last_seq));
        for r in &batch.records {
            assert_eq!(r.seq, expected, "every record once, in order");
            expected += 1;
        }
    }
    assert_eq!(expected, 1202);
    assert_eq!(Outbox::new(&w.store).state().expect("state").records, 1201, "making batches removes nothing");
}

#[test]
fn big_messages_are_cut_and_batches_stay_under_the_byte_budget() {
    let w = world();
    w.routine(300, &"x".repeat(10_000));
    w.store.record_event("rejected", Some(2), Some(Reason::Signature), &"é".repeat(5000)).expect("event");
    let batches = w.all_batches(&w.plan());
    assert!(batches.len() >= 3, "{} batches", batches.len());
    for b in &batches {
        assert!(b.envelope_len <= MAX_BATCH_BYTES + (16 << 10), "envelope {} bytes", b.envelope_len);
        let batch = w.open(b);
        for r in &batch.records {
            assert!(r.message.len() <= MAX_MESSAGE_BYTES, "{}", r.message.len());
            assert!(r.message.ends_with('…'));
        }
    }
    let last = w.open(batches.last().expect("one"));
    assert_eq!(last.records.last().map(|r| r.reason.as_deref()), Some(Some("signature")));

    // A tightened envelope limit makes smaller batches; a plan of one record still works.
    let mut plan = w.plan();
    plan.max_envelope = 64 << 10;
    plan.max_bytes = 1 << 20;
    for b in w.all_batches(&plan) {
        assert!(b.envelope_len <= 64 << 10);
    }
    plan.max_records = 1;
    let b = Outbox::new(&w.store).make_batch(0, &plan, true).expect("batch").expect("some");
    assert_eq!((b.first_seq, b.last_seq, b.records), (1, 1, 1));
}

#[test]
fn compaction_drops_routine_oldest_first_and_keeps_failures_and_the_newest() {
    let w = world();
    let msg = "m".repeat(936); // 1000 bytes per event with the overhead
    w.routine(3, &msg); // 1-3
    w.store.record_event("rejected", Some(5), Some(Reason::Signature), &msg).expect("event"); // 4
    w.routine(3, &msg); // 5-7
    w.store.record_event("drift", Some(4), None, &msg).expect("event"); // 8
    w.store.record_event("agent-start", None, None, &msg).expect("event"); // 9: the newest
    let outbox = Outbox::new(&w.store);
    assert_eq!(outbox.state().expect("state").bytes, 9000);
    assert_eq!(outbox.compact(20_000).expect("compact"), 0, "under the cap nothing goes");

    assert_eq!(outbox.compact(5000).expect("compact"), 4);
    assert_eq!(w.seqs(), vec![4, 6, 7, 8, 9], "the four oldest routine events");
    assert_eq!(outbox.state().expect("state").dropped, 4);

    // Far over the cap: every routine event but the newest goes; failures and findings stay.
    assert_eq!(outbox.compact(16).expect("compact"), 2);
    assert_eq!(w.seqs(), vec![4, 8, 9]);
    assert_eq!(outbox.state().expect("state").dropped, 6);

    // The dropped count rides in the next batch and is cleared once that batch is acked.
    let key = SigningKey::generate().expect("rng");
    let plan = BatchPlan::new(&w.cfg, &key, &w.store).expect("plan");
    let first = outbox.make_batch(0, &plan, true).expect("batch").expect("some");
    assert_eq!(first.dropped, 6);
    let again = outbox.make_batch(0, &plan, false).expect("batch").expect("some");
    assert_eq!(again.dropped, 0, "an export carries it in its first file only");
    w.routine(2, &msg); // 10, 11
    assert_eq!(outbox.compact(4000).expect("compact"), 1, "9, no longer the newest, is routine");
    assert_eq!(w.seqs(), vec![4, 8, 10, 11]);
    assert_eq!(outbox.state().expect("state").dropped, 7);
    outbox.acknowledge(9).expect("ack");
    let state = outbox.state().expect("state");
    assert_eq!((state.dropped, state.acked, state.records), (1, 9, 2), "the drop after the batch stays counted");
}

#[test]
fn repeated_failures_are_thinned_only_when_nothing_routine_is_left() {
    let w = world();
    let msg = "m".repeat(936);
    for _ in 0..5 {
        w.store.record_event("mirror-failed", None, Some(Reason::Io), &msg).expect("event");
        // 1-5
    }
    w.store.record_event("rejected", Some(3), Some(Reason::HealthFailed), &msg).expect("event"); // 6
    w.store.record_event("fetched", Some(3), None, &msg).expect("event"); // 7
    w.store.record_event("mirror-failed", None, Some(Reason::Io), &msg).expect("event"); // 8: the newest
    let outbox = Outbox::new(&w.store);
    assert_eq!(outbox.compact(5000).expect("compact"), 3);
    assert_eq!(w.seqs(), vec![3, 4, 5, 6, 8], "the routine event first, then the oldest repeats");
    assert_eq!(outbox.compact(1).expect("compact"), 3);
    assert_eq!(
        w.kinds(),
        vec![(6, "rejected".to_string()), (8, "mirror-failed".to_string())],
        "the newest of each distinct failure stays, whatever the cap"
    );
}

#[test]
fn acknowledgements_remove_only_what_was_sent() {
    let w = world();
    w.routine(5, "ok");
    w.store.record_event("rolled-back", Some(2), Some(Reason::HealthFailed), "exit 1").expect("event"); // 6
    let outbox = Outbox::new(&w.store);
    assert_eq!(outbox.acknowledge(100).expect("ack").removed, 0, "nothing was ever sent");
    let mut plan = w.plan();
    plan.max_records = 4;
    let b = outbox.make_batch(0, &plan, true).expect("batch").expect("some");
    assert_eq!((b.first_seq, b.last_seq), (1, 4));
    let ack = outbox.acknowledge(100).expect("ack");
    assert_eq!((ack.acked, ack.removed, ack.clamped), (4, 4, true));
    assert_eq!(w.seqs(), vec![5, 6]);
    assert_eq!(outbox.acknowledge(2).expect("stale ack").removed, 0);
    assert_eq!(outbox.state().expect("state").acked, 4, "acked never goes back");

    // Once the newest failure is acknowledged away, status still knows it.
    outbox.make_batch(0, &w.plan(), true).expect("batch").expect("some");
    assert_eq!(outbox.acknowledge(6).expect("ack").removed, 2);
    assert_eq!(outbox.state().expect("state").records, 0);
    let last = w.store.last_failure().expect("query").expect("kept");
    assert_eq!((last.seq, last.reason.as_deref()), (6, Some("health-failed")));
    assert_eq!(device_status(&w.cfg, &w.store).expect("status").last_failure.as_deref(), Some("health-failed"));
    // Sequence numbers are never reused after the table emptied.
    assert_eq!(w.store.record_event("agent-start", None, None, "again").expect("event"), 7);
}
