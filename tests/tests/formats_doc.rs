//! docs/formats.md (and docs/security.md's citations) against the code, so neither page can
//! drift from it silently.
//!
//! * Every worked example on the page (hex dumps, PEM keys, the ack file) is decoded and
//!   verified with `ferry-proto` exactly as a device or receiver would: the trust root as
//!   provisioned, manifests and the index against it, the `.ferry` container down to its
//!   git bundle header, the report batch against its device key. Content addresses named on
//!   the page must be the SHA-256 of the bytes shown, and every envelope must re-encode to
//!   the same bytes.
//! * The struct and enum listings on the page name the same fields and variants, in the same
//!   order (which is the postcard wire order), as the definitions in `proto/src/`.
//! * Every document kind's tag and kind byte, every reason code, every wire limit, the format
//!   constants and the rollout bucket rule on the page are the ones in the code, and every
//!   byte an annotation table names is the byte at that offset of its example.
//! * docs/security.md cites only files that exist and tests that are defined.
//!
//! No binaries are needed: the examples were made by the real `bundler` and `ferry-agent`
//! and are part of the page (docs/formats.md, "Regenerating the examples").

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use ferry_proto::container::{ContainerHeader, CONTAINER_FORMAT, MAGIC};
use ferry_proto::report::ReportBatch;
use ferry_proto::{layout, DocKind, Envelope, Limits, PublicKey, Sha256Digest, SigningKey, VerifiedRoot};

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).expect("workspace root")
}

fn doc() -> String {
    let path = root_dir().join("docs/formats.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// All of `proto/src/*.rs`, for finding definitions by name.
fn proto_source() -> String {
    let dir = root_dir().join("proto/src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("proto/src")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read_to_string(p).expect("read source")).collect::<Vec<_>>().join("\n")
}

/// Fenced blocks opened with "```<lang> example=<name>": name → (lang, body).
fn examples(doc: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let Some((lang, name)) = info.split_once(" example=") else { continue };
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        let previous = out.insert(name.trim().to_string(), (lang.trim().to_string(), body.join("\n") + "\n"));
        assert!(previous.is_none(), "example {name} appears twice");
    }
    out
}

/// Parses a dump of "<offset>  <hex byte> <hex byte> …" lines, checking every offset.
fn hex_dump(name: &str, body: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let mut tokens = line.split_whitespace();
        let offset = tokens.next().expect("offset");
        let offset = usize::from_str_radix(offset, 16).unwrap_or_else(|_| panic!("{name}: bad offset in {line:?}"));
        assert_eq!(offset, bytes.len(), "{name}: offset of line {line:?}");
        for t in tokens {
            assert_eq!(t.len(), 2, "{name}: {t:?} in {line:?} is not one byte");
            bytes.push(u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("{name}: {t:?} is not hex")));
        }
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The named example, which must be a hex dump.
fn bytes_of(ex: &BTreeMap<String, (String, String)>, name: &str) -> Vec<u8> {
    let (lang, body) = ex.get(name).unwrap_or_else(|| panic!("docs/formats.md has no example {name}"));
    assert_eq!(lang, "hex", "{name}");
    hex_dump(name, body)
}

fn names_with(ex: &BTreeMap<String, (String, String)>, prefix: &str, suffix: &str) -> Vec<String> {
    ex.keys().filter(|n| n.starts_with(prefix) && n.ends_with(suffix)).cloned().collect()
}

/// The digest a content-addressed example name carries (`releases/<hex>.manifest`).
fn named_digest(name: &str, prefix: &str, suffix: &str) -> Sha256Digest {
    let hex = name.strip_prefix(prefix).and_then(|n| n.strip_suffix(suffix)).expect("content-addressed name");
    hex.parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[track_caller]
fn assert_reencodes(name: &str, bytes: &[u8]) {
    let env = Envelope::decode(bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(env.encode(), bytes, "{name}: the envelope does not re-encode to the bytes shown");
}

#[test]
fn every_worked_example_decodes_and_verifies_with_the_code() {
    let doc = doc();
    let ex = examples(&doc);
    let limits = Limits::default();

    // Trust root, as a device provisioned with it would load it.
    let root_bytes = bytes_of(&ex, "trust/root.1");
    assert_eq!(layout::root_path(1), "trust/root.1");
    let root = VerifiedRoot::provisioned(&root_bytes, &limits).expect("the example trust root verifies");
    assert_eq!(root.version(), 1);
    assert_reencodes("trust/root.1", &root_bytes);
    let r = root.root();
    for (role, ids) in [("root", &r.root.keys), ("release", &r.release.keys), ("index", &r.index.keys)] {
        let row = doc.lines().find(|l| l.starts_with(&format!("| {role} (seed"))).expect("key table row");
        assert!(row.contains(&ids[0].to_hex()), "the key table's {role} row does not name key id {}", ids[0]);
        let key = r.key_map()[&ids[0]];
        assert!(row.contains(&hex(&key.to_bytes())), "the key table's {role} row does not show its public key");
    }

    // Key files: the PEM shown is the root role's key.
    let private = SigningKey::from_pem(&ex["keys/root"].1).expect("keys/root is a PKCS#8 Ed25519 key");
    let public = PublicKey::from_pem(&ex["keys/root.pub"].1).expect("keys/root.pub is an SPKI Ed25519 key");
    assert_eq!(private.public(), public);
    assert_eq!(r.root.keys, vec![public.id()], "keys/root is not the example root's root key");
    assert!(doc.contains(&hex(&public.to_bytes())), "the raw root public key is not on the page");

    // Release manifests, against that root; their names are their envelopes' digests.
    let manifest_names = names_with(&ex, "releases/", ".manifest");
    assert!(!manifest_names.is_empty(), "no manifest example");
    let mut manifests = BTreeMap::new();
    for name in &manifest_names {
        let bytes = bytes_of(&ex, name);
        let m = root.verify_manifest(&bytes, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.digest(), named_digest(name, "releases/", ".manifest"), "{name} is not named by its digest");
        assert_eq!(layout::manifest_path(&m.digest()), *name);
        assert_reencodes(name, &bytes);
        manifests.insert(m.digest(), (bytes, m));
    }
    let kinds: BTreeSet<bool> = manifests
        .values()
        .flat_map(|(_, m)| m.payloads.iter().map(|p| p.kind == ferry_proto::manifest::PayloadKind::Full))
        .collect();
    assert_eq!(kinds.len(), 2, "the manifest examples should show both a full and a delta payload");

    // The channel index names one of the manifests shown.
    let index_bytes = bytes_of(&ex, "channels/stable/index");
    let index = root.verify_index(&index_bytes, &limits).expect("the example index verifies");
    assert_eq!(layout::index_path(&index.channel), "channels/stable/index");
    assert_reencodes("channels/stable/index", &index_bytes);
    let latest = index.latest.as_ref().expect("the example index names a release");
    let (_, named) = manifests.get(&latest.manifest_sha256).expect("the index names a manifest shown on the page");
    assert_eq!(named.release, latest.release);

    // The .ferry container, down to its git bundle header.
    let ferry_names = names_with(&ex, "payloads/", ".ferry");
    assert!(!ferry_names.is_empty(), "no .ferry example");
    for name in &ferry_names {
        let bytes = bytes_of(&ex, name);
        assert_eq!(bytes[..8], MAGIC, "{name}: magic");
        assert_eq!(u16::from_be_bytes([bytes[8], bytes[9]]), CONTAINER_FORMAT, "{name}: version");
        let mut r = &bytes[..];
        let header = ContainerHeader::read_from(&mut r, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (manifest, entry) = header.verify(&root, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(entry.sha256, named_digest(name, "payloads/", ".ferry"), "{name} is not named by its payload");
        assert_eq!(layout::payload_path(&entry.sha256), *name);
        let (standalone, _) = manifests.get(&manifest.digest()).expect("its manifest is shown on the page too");
        assert_eq!(&header.manifest, standalone, "{name}: the embedded manifest differs from releases/");
        assert_eq!(header.encoded_len() as usize, 54 + header.manifest.len(), "{name}: header length");
        assert_eq!(r.len() as u64, entry.size, "{name}: payload length");
        assert_eq!(Sha256Digest::of(r), entry.sha256, "{name}: payload digest");
        let (bundle, mut stream) =
            ferry_proto::payload::open_bundle(Box::new(r), entry.size, &limits).expect("the payload opens");
        manifest.check_bundle(&entry, &bundle).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bundle.refs[0].1, manifest.snapshot_ref());
        let shown = format!("# v{} git bundle\n{} {}\n\nPACK", bundle.version, bundle.refs[0].0, bundle.refs[0].1);
        assert!(doc.contains(&shown.replace("PACK", "PACK…")), "{name}: its bundle header is not shown:\n{shown}");
        let mut pack = [0u8; 4];
        stream.read_exact(&mut pack).expect("pack");
        assert_eq!(&pack, b"PACK");
        ferry_proto::payload::drain(&mut stream).expect("the whole bundle decompresses within the cap");
    }

    // The report batch, against the key it names (as on first-use enrolment).
    let batch_name = names_with(&ex, "reports/", ".batch").pop().expect("no report batch example");
    let batch_bytes = bytes_of(&ex, &batch_name);
    let claimed = ReportBatch::peek(&batch_bytes, &limits).expect("the batch decodes");
    let batch = ReportBatch::verify(&batch_bytes, &claimed.device_key, &limits).expect("the batch verifies");
    assert_reencodes(&batch_name, &batch_bytes);
    let first = batch.records.first().map(|r| r.seq).expect("records");
    assert_eq!(batch_name, format!("reports/{}/{first}-{}.batch", batch.device_id, batch.last_seq()));
    let row = doc.lines().find(|l| l.starts_with(&format!("| device `{}`", batch.device_id))).expect("device row");
    assert!(row.contains(&batch.device_key.id().to_hex()), "the key table's device row is not the batch's key");
    assert!(row.contains(&hex(&batch.device_key.to_bytes())), "the key table's device row shows another key");

    // The ack file that came back for it.
    let ack_name = format!("acks/{}.ack", batch.device_id);
    let (lang, ack) = ex.get(&ack_name).unwrap_or_else(|| panic!("no example {ack_name}"));
    assert_eq!(lang, "json");
    let ack: serde_json::Value = serde_json::from_str(ack).expect("the ack example is JSON");
    assert_eq!(ack["device_id"], batch.device_id.as_str());
    assert_eq!(ack["acked"], batch.last_seq());
}

/// The annotation table after each hex example: (example name, offset, first `hex` cell).
fn annotations(doc: &str) -> Vec<(String, usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut in_table = false;
    for line in doc.lines() {
        if let Some(name) = line.strip_prefix("```hex example=") {
            current = Some(name.trim().to_string());
            continue;
        }
        let Some(name) = &current else { continue };
        if line.starts_with("| offset |") {
            in_table = true;
            continue;
        }
        if in_table && !line.starts_with('|') {
            in_table = false;
            current = None;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let offset = usize::from_str_radix(cells[1], 16).unwrap_or_else(|_| panic!("bad offset in {line:?}"));
        let Some(quoted) = cells[2].split('`').nth(1) else { continue };
        let quoted = quoted.trim_end_matches('…').trim();
        let bytes: Option<Vec<u8>> =
            quoted.split(' ').map(|t| if t.len() == 2 { u8::from_str_radix(t, 16).ok() } else { None }).collect();
        if let Some(bytes) = bytes {
            out.push((name.clone(), offset, bytes));
        }
    }
    out
}

#[test]
fn annotation_tables_point_at_the_bytes_they_name() {
    let doc = doc();
    let ex = examples(&doc);
    let rows = annotations(&doc);
    assert!(rows.len() >= 50, "found only {} annotated rows", rows.len());
    for name in ex.keys().filter(|n| ex[*n].0 == "hex") {
        assert!(rows.iter().any(|(n, _, _)| n == name), "example {name} has no annotation table");
    }
    for (name, offset, expected) in rows {
        let bytes = bytes_of(&ex, &name);
        let at = bytes.get(offset..offset + expected.len());
        assert_eq!(at, Some(&expected[..]), "{name}: the annotation at offset {offset:#x} names other bytes");
    }
}

/// Field names of `struct name` or variant names of `enum name` in a Rust listing:
/// `pub` items in the code (first indentation level only), plain ones on the page.
fn members(text: &str, keyword: &str, name: &str, code: bool) -> Option<Vec<String>> {
    let opener = if code { format!("pub {keyword} {name} {{") } else { format!("{keyword} {name} {{") };
    let start = text.lines().position(|l| l.trim_start() == opener)?;
    let mut out = Vec::new();
    for line in text.lines().skip(start + 1) {
        let depth = line.len() - line.trim_start().len();
        let item = line.trim_start();
        if depth == 0 && item.starts_with('}') {
            break;
        }
        let item = if code { item.strip_prefix("pub ").unwrap_or(item) } else { item };
        let ident: String = item.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let is_member = match keyword {
            "struct" => item.starts_with(&format!("{ident}:")) && !ident.is_empty(),
            _ => ident.starts_with(|c: char| c.is_ascii_uppercase()),
        };
        if is_member && depth == 4 && (!code || keyword == "enum" || line.trim_start().starts_with("pub ")) {
            out.push(ident);
        }
    }
    Some(out)
}

#[test]
fn the_struct_and_enum_listings_match_the_definitions_in_proto() {
    let doc = doc();
    let code = proto_source();
    let structs = [
        "Envelope",
        "Signature",
        "TrustRoot",
        "Role",
        "ReleaseManifest",
        "Source",
        "PayloadRef",
        "ChannelIndex",
        "LatestRelease",
        "ReportBatch",
        "DeviceStatus",
        "ReportRecord",
    ];
    for (keyword, names) in [("struct", &structs[..]), ("enum", &["PayloadKind"][..])] {
        for name in names {
            let shown = members(&doc, keyword, name, false).unwrap_or_else(|| panic!("the page lists no {name}"));
            let defined = members(&code, keyword, name, true).unwrap_or_else(|| panic!("proto defines no {name}"));
            assert!(!defined.is_empty(), "found no members of {name} in proto/src");
            assert_eq!(shown, defined, "{keyword} {name}: the page's members (in wire order) differ from the code's");
        }
    }
}

#[test]
fn every_document_kind_has_its_tag_and_kind_byte_on_the_page() {
    let doc = doc();
    let all = [DocKind::Root, DocKind::Manifest, DocKind::Index, DocKind::ReportBatch];
    for kind in all {
        // A new kind fails to compile here until it is added to `all` and to the page.
        match kind {
            DocKind::Root | DocKind::Manifest | DocKind::Index | DocKind::ReportBatch => {}
        }
        let tag = kind.signing_tag();
        let (text, nul) = tag.split_at(tag.len() - 1);
        assert_eq!(nul, [0], "{kind:?}: a tag ends in one NUL byte");
        let shown = format!("`{}\\0`", String::from_utf8(text.to_vec()).expect("ASCII tag"));
        let kind_byte = Envelope::sign(kind, Vec::new(), &[]).encode()[1];
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&shown))
            .unwrap_or_else(|| panic!("the page's envelope table has no row for tag {shown}"));
        assert!(row.contains(&format!("| `{kind_byte:02x}` |")), "{row:?} does not show kind byte {kind_byte:02x}");
    }
}

#[test]
fn reason_codes_on_the_page_are_exactly_the_codes_in_the_code() {
    let doc = doc();
    let source = std::fs::read_to_string(root_dir().join("proto/src/reason.rs")).expect("reason.rs");
    let body = source.split("pub fn code(self)").nth(1).expect("Reason::code").split("\n    }\n").next().expect("body");
    let in_code: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.split_once("=> \"").and_then(|(_, rest)| rest.split_once('"')).map(|(c, _)| c.to_string()))
        .collect();
    assert!(in_code.len() >= 19, "found only {} codes in reason.rs", in_code.len());
    let section = doc.split("\n## Reason codes\n").nth(1).expect("a Reason codes section");
    let section = section.split("\n## ").next().expect("section");
    let on_page: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(c, _)| c.to_string()))
        .collect();
    assert_eq!(on_page, in_code, "the page's reason codes differ from proto/src/reason.rs");
    for code in &on_page {
        let reason = ferry_proto::Reason::from_code(code).unwrap_or_else(|| panic!("{code} is not a reason code"));
        assert_eq!(reason.code(), code);
    }
}

#[test]
fn limits_constants_and_the_rollout_rule_on_the_page_match_the_code() {
    let doc = doc();
    // Destructured without `..`: a new limit fails to compile here until the page lists it.
    let Limits {
        max_envelope,
        max_signatures,
        max_roots_walked,
        max_bundle_header,
        max_bundle_lines,
        max_decompression_ratio,
        max_decompressed,
        min_decompressed_allowance,
    } = Limits::default();
    let limits: [(&str, u64); 8] = [
        ("max_envelope", max_envelope as u64),
        ("max_signatures", max_signatures as u64),
        ("max_roots_walked", max_roots_walked),
        ("max_bundle_header", max_bundle_header as u64),
        ("max_bundle_lines", max_bundle_lines as u64),
        ("max_decompression_ratio", max_decompression_ratio),
        ("max_decompressed", max_decompressed),
        ("min_decompressed_allowance", min_decompressed_allowance),
    ];
    for (name, value) in limits {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("the limits table has no row for {name}"));
        let shown = row.split('|').nth(2).expect("default column").trim();
        assert!(
            shown == value.to_string() || shown.starts_with(&format!("{value} (")),
            "{name}: the page says {shown:?}, the code {value}"
        );
    }

    let constants = [
        ("ENVELOPE_FORMAT", u64::from(ferry_proto::envelope::ENVELOPE_FORMAT)),
        ("ROOT_FORMAT", u64::from(ferry_proto::trust::ROOT_FORMAT)),
        ("MANIFEST_FORMAT", u64::from(ferry_proto::manifest::MANIFEST_FORMAT)),
        ("INDEX_FORMAT", u64::from(ferry_proto::index::INDEX_FORMAT)),
        ("REPORT_FORMAT", u64::from(ferry_proto::report::REPORT_FORMAT)),
    ];
    for (name, value) in constants {
        assert!(doc.contains(&format!("{name} = {value}")), "the page does not say {name} = {value}");
    }
    let magic: Vec<String> = MAGIC.iter().map(|b| format!("{b:02x}")).collect();
    assert!(doc.contains(&magic.join(" ")), "container magic");
    assert!(doc.contains(&format!("u16 BE, {CONTAINER_FORMAT}")), "container version");
    assert!(doc.contains(&format!("2^{}", ferry_proto::payload::MAX_WINDOW_LOG)), "zstd window");

    // The rollout rule: the page's worked input hashes to the bucket the code computes.
    let buckets = ferry_proto::rollout::BUCKETS;
    assert!(doc.contains(&format!("mod {buckets}")), "bucket count");
    let channel = "stable".parse().expect("channel");
    let bucket = ferry_proto::rollout::bucket("pump-17", &channel, 2);
    let mut input = b"ferry/rollout/v1\0pump-17\0stable\0".to_vec();
    input.extend_from_slice(&2u64.to_be_bytes());
    assert!(doc.contains(&format!("`{}`", hex(&input))), "the page's rollout hash input");
    let digest = Sha256Digest::of(&input);
    let first = u64::from_be_bytes(digest.0[..8].try_into().expect("8 bytes"));
    assert_eq!(first % buckets, bucket, "the rule on the page is not the code's");
    assert!(doc.contains(&format!("`{first} mod {buckets} = {bucket}`")), "the page's worked bucket");
    let percent = (bucket / 100 + 1) as u8;
    assert!(ferry_proto::rollout::selects("pump-17", &channel, 2, percent));
    assert!(!ferry_proto::rollout::selects("pump-17", &channel, 2, percent - 1));
    assert!(doc.contains(&format!("reaches {percent} %")), "the page's threshold {percent} %");
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// docs/security.md names, for every defence, the code and the tests that stage it: every
/// path it cites must exist, and every test or function it names (a `snake_case` name of
/// three or more words) must be defined somewhere in the workspace, so a renamed or deleted
/// test shows up here.
#[test]
fn the_security_page_cites_files_and_tests_that_exist() {
    let root = root_dir();
    let page = std::fs::read_to_string(root.join("docs/security.md")).expect("docs/security.md");
    let mut sources = String::new();
    for dir in ["proto", "agent", "bundler", "tests"] {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for f in files {
            sources.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
        }
    }
    let cited: Vec<&str> = page.split('`').skip(1).step_by(2).collect();
    let mut names = 0;
    for c in &cited {
        let is_path = ["proto/", "agent/", "bundler/", "tests/", "deploy/"].iter().any(|p| c.starts_with(p));
        if is_path && !c.contains(' ') && !c.contains('*') {
            assert!(root.join(c).exists(), "docs/security.md cites {c}, which does not exist");
        }
        let words = c.split('_').count();
        let ident = c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if ident && words >= 3 && c.starts_with(|ch: char| ch.is_ascii_lowercase()) {
            names += 1;
            let defined = sources.contains(&format!("fn {c}(")) || sources.contains(&format!("\"{c}\""));
            assert!(defined, "docs/security.md names {c}, which no test or function in the workspace defines");
        }
    }
    assert!(names >= 50, "found only {names} test names in docs/security.md");
}
