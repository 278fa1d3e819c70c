//! The operator CLI through the real `bundler` binary: keys and OpenSSL, git
//! interoperability of payloads, determinism, verification of tampered files, rotation,
//! index refresh, export, and one-line errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_tests::fixture::Operator;
use ferry_tests::{git, git_cmd, run};

/// Extracts the git bundle inside a `.ferry` file.
fn bundle_of(ferry: &Path, out: &Path) -> PathBuf {
    let bundle = zstd::decode_all(&payload_bytes(ferry)[..]).expect("zstd");
    fs::write(out, bundle).expect("write bundle");
    out.to_path_buf()
}

/// The payload region of a `.ferry` file (the manifest before it carries a timestamp).
fn payload_bytes(ferry: &Path) -> Vec<u8> {
    let bytes = fs::read(ferry).expect("read .ferry");
    let manifest_len = u32::from_be_bytes(bytes[10..14].try_into().expect("len")) as usize;
    bytes[14 + manifest_len + 32 + 8..].to_vec()
}

fn sample(op: &Operator) {
    op.write(&[
        ("site/a.conf", Some("a = 1\n")),
        ("site/sub/b.txt", Some("bee\n")),
        ("site/run.sh", Some("#!/bin/sh\ntrue\n")),
        ("elsewhere.txt", Some("not released\n")),
    ]);
    op.make_executable("site/run.sh");
}

#[test]
fn keygen_writes_private_0600_and_public_and_interoperates_with_openssl() {
    let op = Operator::new();
    let key = op.key("extra");
    let r = run(op.bundler(&["keygen", "--out"]).arg(&key)).ok();
    assert!(r.stdout.starts_with("key id "), "{}", r.stdout);
    assert_eq!(fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
    assert!(fs::read_to_string(op.key("extra.pub")).expect("pub").contains("BEGIN PUBLIC KEY"));
    // Never overwrites.
    let again = run(op.bundler(&["keygen", "--out"]).arg(&key)).code(1);
    assert!(again.stderr.contains("never overwritten"), "{}", again.stderr);

    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not installed; skipping the OpenSSL half");
        return;
    }
    // OpenSSL reads our key and derives the same public key.
    let ours = Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key).output().expect("openssl");
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    assert_eq!(String::from_utf8_lossy(&ours.stdout), fs::read_to_string(op.key("extra.pub")).expect("pub"));
    // A key OpenSSL made can sign a trust root.
    let ossl = op.dir.path().join("ossl.pem");
    let gen = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&ossl)
        .output()
        .expect("genpkey");
    assert!(gen.status.success());
    let m2 = op.dir.path().join("m2");
    run(op
        .bundler(&["trust", "init", "--mirror"])
        .arg(&m2)
        .arg("--root-key")
        .arg(&ossl)
        .arg("--release-pub")
        .arg(op.key("release.pub"))
        .arg("--index-pub")
        .arg(op.key("index.pub")))
    .ok();
    assert!(m2.join("trust/root.1").exists());
}

#[test]
fn payloads_interoperate_with_git_for_sha1_and_sha256() {
    for format in ["sha1", "sha256"] {
        let op = Operator::with_format(format);
        sample(&op);
        let data: Vec<(String, String)> = (0..100)
            .map(|i| (format!("site/data/f{i}.txt"), format!("file {i}\n{}", "line of text\n".repeat(i % 7 + 1))))
            .collect();
        op.write(&data.iter().map(|(p, c)| (p.as_str(), Some(c.as_str()))).collect::<Vec<_>>());
        op.commit("one");
        op.release("stable", Some("site"), &[]).ok();
        let full1 = op.latest_payloads("stable")["full"].clone();
        op.write(&[("site/a.conf", Some("a = 2\n")), ("site/new.txt", Some("new\n"))]);
        op.commit("two");
        op.release("stable", Some("site"), &[]).ok();
        let payloads = op.latest_payloads("stable");
        let (full2, delta) = (payloads["full"].clone(), payloads["delta-1"].clone());

        let work = op.dir.path().join(format!("git-{format}"));
        fs::create_dir_all(&work).expect("mkdir");
        let b1 = bundle_of(&full1, &work.join("full1.bundle"));
        let b2 = bundle_of(&full2, &work.join("full2.bundle"));
        let d = bundle_of(&delta, &work.join("delta.bundle"));

        // A full payload: verify and fetch into an empty repository; the tree is the source's.
        let empty = work.join("empty");
        git(&work, &["init", "-q", "--bare", &format!("--object-format={format}"), "empty"]);
        git(&empty, &["bundle", "verify", b2.to_str().expect("utf8")]);
        git(&empty, &["fetch", "-q", b2.to_str().expect("utf8"), "refs/ferry/stable/2:refs/heads/r2"]);
        let fetched = git(&empty, &["rev-parse", "r2^{tree}"]);
        assert_eq!(fetched, git(&op.repo, &["rev-parse", "HEAD:site"]), "{format}: tree differs");
        assert_eq!(git(&empty, &["rev-list", "--count", "r2"]), "1", "snapshot must be an orphan");

        // A delta: refused without its base, accepted with it.
        let bare = work.join("base");
        git(&work, &["init", "-q", "--bare", &format!("--object-format={format}"), "base"]);
        let refused = git_cmd(&bare).args(["bundle", "verify"]).arg(&d).output().expect("git");
        assert!(!refused.status.success(), "{format}: delta verified without its base");
        assert!(String::from_utf8_lossy(&refused.stderr).contains("prerequisite"));
        git(&bare, &["fetch", "-q", b1.to_str().expect("utf8"), "refs/ferry/stable/1:refs/heads/r1"]);
        git(&bare, &["bundle", "verify", d.to_str().expect("utf8")]);
        git(&bare, &["fetch", "-q", d.to_str().expect("utf8"), "refs/ferry/stable/2:refs/heads/r2"]);
        assert_eq!(git(&bare, &["rev-parse", "r2^{tree}"]), fetched);
        assert!(fs::metadata(&d).expect("d").len() < fs::metadata(&b2).expect("b").len() / 2, "delta is not thin");
    }
}

#[test]
fn releasing_the_same_source_twice_is_deterministic() {
    let op = Operator::new();
    sample(&op);
    op.commit("one");
    op.release("stable", Some("site"), &[]).ok();
    // A second mirror with the same trust root (same keys).
    let m2 = op.dir.path().join("mirror2");
    fs::create_dir_all(m2.join("trust")).expect("mkdir");
    fs::copy(op.root1(), m2.join("trust/root.1")).expect("copy root");
    let mut c = op.bundler(&["release", "--repo"]);
    c.arg(&op.repo).args(["--ref", "HEAD", "--path", "site", "--channel", "stable", "--mirror"]).arg(&m2);
    c.arg("--release-key").arg(op.key("release")).arg("--index-key").arg(op.key("index"));
    c.env("TZ", "Asia/Tokyo").env("GIT_COMMITTER_NAME", "Someone Else");
    run(&mut c).ok();
    let names = |m: &Path| {
        let mut v: Vec<String> = fs::read_dir(m.join("payloads"))
            .expect("ls")
            .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&op.mirror), names(&m2), "payload digests differ");
    for n in names(&m2) {
        let a = payload_bytes(&op.mirror.join("payloads").join(&n));
        let b = payload_bytes(&m2.join("payloads").join(&n));
        assert_eq!(a, b, "payload {n} differs");
    }
    let m1 = op.inspect(&op.latest_payloads("stable")["full"]);
    let snap = m1["manifest"]["document"]["snapshot_commit"].as_str().expect("snapshot").to_string();
    assert_eq!(git(&op.repo, &["rev-parse", "refs/ferry/stable/1"]), snap);
}

#[test]
fn verify_accepts_a_good_mirror_and_names_the_reason_for_tampering() {
    let op = Operator::new();
    sample(&op);
    op.commit("one");
    op.release("stable", Some("site"), &[]).ok();
    let ok = run(op.bundler(&["verify", "--trust"]).arg(op.root1()).arg(&op.mirror)).ok();
    assert!(ok.stdout.contains("OK channel stable"), "{}", ok.stdout);

    let good = op.latest_payloads("stable")["full"].clone();
    let bytes = fs::read(&good).expect("read");
    let manifest_len = u32::from_be_bytes(bytes[10..14].try_into().expect("len")) as usize;
    let payload_start = 14 + manifest_len + 32 + 8;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flip in manifest", flip(&bytes, 14 + manifest_len / 2), "signature"),
        ("flip in payload", flip(&bytes, payload_start + (bytes.len() - payload_start) / 2), "digest-mismatch"),
        ("truncated", bytes[..bytes.len() - 10].to_vec(), "digest-mismatch"),
        ("junk appended", [bytes.clone(), b"junk".to_vec()].concat(), "size-exceeded"),
        ("bad magic", flip(&bytes, 1), "malformed"),
    ];
    for (what, content, reason) in cases {
        let path = op.dir.path().join("tampered.ferry");
        fs::write(&path, content).expect("write");
        let r = run(op.bundler(&["verify", "--trust"]).arg(op.root1()).arg(&path)).code(1);
        assert!(r.stdout.contains(&format!("REJECTED {}: {reason}:", path.display())), "{what}: {}", r.stdout);
    }
    // Every single-byte flip in the signed manifest region is refused.
    for i in (14..14 + manifest_len).step_by(7) {
        let path = op.dir.path().join("flip.ferry");
        fs::write(&path, flip(&bytes, i)).expect("write");
        let r = run(op.bundler(&["verify", "--trust"]).arg(op.root1()).arg(&path));
        assert_eq!(r.code, 1, "byte {i} flipped was accepted: {}", r.stdout);
    }
}

fn flip(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v[i] ^= 0x01;
    v
}

#[test]
fn rotation_refresh_and_export() {
    let op = Operator::new();
    sample(&op);
    op.commit("one");
    op.release("stable", Some("site"), &[]).ok();
    run(op.bundler(&["keygen", "--out"]).arg(op.key("root2"))).ok();

    // Signed by the new key only: refused, nothing written.
    let mut bad = op.bundler(&["trust", "rotate", "--mirror"]);
    bad.arg(&op.mirror).arg("--old-root-key").arg(op.key("root2")).arg("--root-key").arg(op.key("root2"));
    bad.arg("--release-pub").arg(op.key("release.pub")).arg("--index-pub").arg(op.key("index.pub"));
    let r = run(&mut bad).code(1);
    assert!(r.stderr.contains("rotation would not verify"), "{}", r.stderr);
    assert!(!op.mirror.join("trust/root.2").exists());

    let mut good = op.bundler(&["trust", "rotate", "--mirror"]);
    good.arg(&op.mirror).arg("--old-root-key").arg(op.key("root")).arg("--root-key").arg(op.key("root2"));
    good.arg("--release-pub").arg(op.key("release.pub")).arg("--index-pub").arg(op.key("index.pub"));
    run(&mut good).ok();
    assert!(op.mirror.join("trust/root.2").exists());

    let before = op.inspect(&op.mirror.join("channels/stable/index"));
    let mut refresh = op.bundler(&["index", "refresh", "--mirror"]);
    refresh.arg(&op.mirror).args(["--channel", "stable", "--expires", "30d", "--index-key"]).arg(op.key("index"));
    run(&mut refresh).ok();
    let after = op.inspect(&op.mirror.join("channels/stable/index"));
    assert_eq!(after["document"]["version"].as_u64(), before["document"]["version"].as_u64().map(|v| v + 1));
    assert_eq!(after["document"]["latest"], before["document"]["latest"]);

    let usb = op.dir.path().join("usb");
    let mut export = op.bundler(&["export", "--mirror"]);
    export.arg(&op.mirror).args(["--channel", "stable", "--to"]).arg(&usb);
    run(&mut export).ok();
    for p in ["trust/root.1", "trust/root.2", "channels/stable/index"] {
        assert!(usb.join(p).exists(), "{p} not exported");
    }
    // The provisioned root 1 walks to root 2 on the stick and everything verifies.
    let r = run(op.bundler(&["verify", "--trust"]).arg(op.root1()).arg(&usb)).ok();
    assert!(r.stdout.contains("OK trust: root version 2"), "{}", r.stdout);
}

#[test]
fn errors_are_one_line_and_usage_errors_exit_64() {
    let op = Operator::new();
    sample(&op);
    op.commit("one");
    let mut c = op.bundler(&["release", "--repo"]);
    c.arg(&op.repo).args(["--ref", "no-such-branch", "--channel", "stable", "--mirror"]).arg(&op.mirror);
    c.arg("--release-key").arg(op.key("release")).arg("--index-key").arg(op.key("index"));
    let r = run(&mut c).code(1);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("no-such-branch"), "{}", r.stderr);

    let r = op.release("Bad/Channel", None, &[]).code(64);
    assert!(r.stderr.contains("channel"), "{}", r.stderr);
    run(&mut op.bundler(&["frobnicate"])).code(64);
    // The release key must hold the release role.
    let mut c = op.bundler(&["release", "--repo"]);
    c.arg(&op.repo).args(["--ref", "HEAD", "--channel", "stable", "--mirror"]).arg(&op.mirror);
    c.arg("--release-key").arg(op.key("index")).arg("--index-key").arg(op.key("index"));
    let r = run(&mut c).code(1);
    assert!(r.stderr.contains("is not a release key"), "{}", r.stderr);
    // Nothing was published by the failed attempts.
    assert!(!op.mirror.join("channels").exists());
}
