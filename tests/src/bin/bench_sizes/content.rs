//! File contents for the generated fleet repository (manifests and inventories are in
//! `manifests.rs`): JSON and TOML config, source-like code in a few languages, Markdown docs,
//! CSV tables, PEM certificates, small binary assets and firmware images.
//!
//! The aim is realistic compressibility, not realistic meaning: text draws from an
//! operations vocabulary with a skewed (Zipf-like) frequency, files of one kind share
//! their boilerplate the way real manifests do, and identifiers, serial numbers, hashes
//! and measurements carry the entropy real ones carry.

use base64::Engine as _;

use crate::rng::Rng;

/// Prose and identifier vocabulary, most frequent first.
#[rustfmt::skip]
pub const WORDS: &[&str] = &[
    "the", "to", "of", "and", "a", "in", "is", "for", "on", "that", "with", "device", "config", "be", "this", "as",
    "it", "by", "not", "are", "from", "or", "if", "an", "service", "release", "when", "value", "each", "node",
    "status", "update", "time", "state", "can", "all", "request", "must", "default", "error", "site", "only",
    "file", "data", "new", "will", "health", "check", "log", "path", "name", "key", "then", "network", "mirror",
    "slot", "agent", "which", "should", "after", "before", "timeout", "retry", "port", "host", "user", "group",
    "first", "one", "more", "set", "local", "remote", "link", "sensor", "reading", "gateway", "channel", "version",
    "label", "operator", "fleet", "policy", "limit", "metric", "queue", "batch", "report", "event", "window",
    "schedule", "backup", "restore", "apply", "rollback", "verify", "signature", "trust", "root", "index",
    "payload", "bundle", "delta", "snapshot", "tree", "commit", "branch", "tag", "image", "container", "volume",
    "mount", "secret", "token", "certificate", "proxy", "route", "subnet", "vlan", "address", "interface",
    "storage", "disk", "memory", "cpu", "load", "cache", "buffer", "stream", "frame", "packet", "socket", "handler",
    "worker", "thread", "task", "job", "cron", "hook", "script", "module", "package", "library", "build", "deploy",
    "stage", "production", "staging", "canary", "rollout", "percent", "threshold", "alert", "warning", "critical",
    "info", "debug", "trace", "level", "format", "output", "input", "source", "target", "filter", "match", "rule",
    "table", "column", "record", "entry", "field", "schema", "migration", "database", "connection", "pool",
    "session", "client", "server", "endpoint", "api", "http", "tls", "dns", "ntp", "ssh", "modbus", "opcua", "mqtt",
    "broker", "topic", "subscriber", "publisher", "telemetry", "firmware", "bootloader", "kernel", "partition",
    "filesystem", "inverter", "turbine", "pump", "valve", "compressor", "meter", "camera", "controller", "plc",
    "scada", "historian", "calibration", "offset", "scale", "unit", "sample", "interval", "temperature", "pressure",
    "voltage", "current", "frequency", "speed", "vibration", "humidity", "flow", "level", "position", "alarm",
    "shutdown", "startup", "maintenance", "vessel", "train", "wagon", "farm", "plant", "line", "cell", "zone",
    "area", "region", "district", "depot", "harbour", "station", "platform", "carriage", "engine", "generator",
    "battery", "charger", "solar", "wind", "grid", "feeder", "breaker", "transformer", "substation", "relay",
    "switch", "router", "modem", "satellite", "cellular", "wifi", "lte", "bandwidth", "latency", "jitter",
    "backoff", "jitter", "budget", "quota", "lease", "lock", "journal", "fsync", "atomic", "rename", "symlink",
    "checksum", "digest", "hash", "compress", "decompress", "encode", "decode", "parse", "render", "template",
    "override", "merge", "patch", "diff", "inventory", "asset", "owner", "team",
];

/// Team and namespace names.
pub const TEAMS: &[&str] =
    &["platform", "edge", "telemetry", "controls", "networking", "security", "energy", "rail", "maritime", "ops"];

/// Device models in site inventories.
pub const MODELS: &[&str] = &[
    "gw-2100",
    "gw-2200",
    "gw-3000x",
    "plc-s7-1500",
    "plc-m580",
    "rtu-560",
    "ipc-427e",
    "cam-p1465",
    "mtr-pm5560",
    "inv-sg250",
    "bms-lx40",
    "mdm-rut955",
    "sw-ie4000",
    "ntp-lantime",
];

/// A kind of text file, for the editor that mutates files between commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Line-oriented text of any flavour.
    Text,
    /// Small binary asset: replaced whole when it changes.
    Blob,
    /// Large firmware image: patched in places when it changes.
    Firmware,
}

pub fn push_line(out: &mut String, indent: usize, line: &str) {
    out.extend(std::iter::repeat_n(' ', indent));
    out.push_str(line);
    out.push('\n');
}

/// A snake_case identifier of 1–3 words.
pub fn ident(rng: &mut Rng) -> String {
    let n = rng.range(1, 3);
    (0..n).map(|_| rng.word(&WORDS[10..])).collect::<Vec<_>>().join("_")
}

pub fn upper_ident(rng: &mut Rng) -> String {
    ident(rng).to_uppercase()
}

/// A sentence of 6–22 words, capitalised, with a full stop.
pub fn sentence(rng: &mut Rng) -> String {
    let n = rng.range(6, 22);
    let mut s: String = (0..n).map(|_| rng.word(WORDS)).collect::<Vec<_>>().join(" ");
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s.push('.');
    s
}

pub fn semver(rng: &mut Rng) -> String {
    format!("{}.{}.{}", rng.range(0, 4), rng.range(0, 24), rng.range(0, 40))
}

pub fn ipv4(rng: &mut Rng) -> String {
    format!("10.{}.{}.{}", rng.range(0, 255), rng.range(0, 255), rng.range(2, 254))
}

pub fn scalar(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => rng.range(0, 65535).to_string(),
        1 => format!("{}s", rng.range(1, 600)),
        2 => ["true", "false"][rng.below(2)].to_string(),
        3 => format!("\"{}\"", ident(rng).replace('_', "-")),
        4 => format!("{:.3}", rng.unit() * 100.0),
        5 => format!("\"{}\"", ipv4(rng)),
        _ => format!("\"/var/lib/{}/{}\"", rng.word(&WORDS[10..]), ident(rng)),
    }
}

/// Nested JSON config of roughly `target` bytes.
pub fn json(rng: &mut Rng, target: usize) -> String {
    let mut s = String::from("{\n");
    let mut first = true;
    while s.len() < target {
        if !first {
            s.push_str(",\n");
        }
        first = false;
        s.push_str(&format!("  \"{}\": {{\n", ident(rng)));
        let n = rng.range(2, 12);
        for i in 0..n {
            let value = if rng.chance(0.2) {
                let items: Vec<String> = (0..rng.range(1, 6)).map(|_| format!("\"{}\"", ident(rng))).collect();
                format!("[{}]", items.join(", "))
            } else {
                scalar(rng)
            };
            let sep = if i + 1 < n { "," } else { "" };
            s.push_str(&format!("    \"{}\": {value}{sep}\n", ident(rng)));
        }
        s.push_str("  }");
    }
    s.push_str("\n}\n");
    s
}

/// TOML config of roughly `target` bytes.
pub fn toml(rng: &mut Rng, target: usize) -> String {
    let mut s = format!("# {}\n\n", sentence(rng));
    while s.len() < target {
        s.push_str(&format!("[{}]\n", ident(rng).replace('_', "-")));
        for _ in 0..rng.range(2, 10) {
            if rng.chance(0.15) {
                s.push_str(&format!("# {}\n", sentence(rng)));
            }
            s.push_str(&format!("{} = {}\n", ident(rng).replace('_', "-"), scalar(rng)));
        }
        s.push('\n');
    }
    s
}

/// A programming language for [`source`].
#[derive(Debug, Clone, Copy)]
pub enum Lang {
    /// `.py`
    Python,
    /// `.rs`
    Rust,
    /// `.go`
    Go,
    /// `.sh`
    Shell,
}

impl Lang {
    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            Lang::Python => "py",
            Lang::Rust => "rs",
            Lang::Go => "go",
            Lang::Shell => "sh",
        }
    }
}

fn expression(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => format!("{}.{}({})", ident(rng), ident(rng), ident(rng)),
        1 => format!("{} + {}", ident(rng), rng.range(1, 4096)),
        2 => format!("\"{}\"", sentence(rng).trim_end_matches('.').to_lowercase()),
        3 => format!("{}({}, {})", ident(rng), ident(rng), scalar(rng)),
        4 => format!("{}[{}]", ident(rng), rng.range(0, 64)),
        _ => scalar(rng),
    }
}

/// Source-like code of roughly `target` bytes: functions of statements over an
/// identifier vocabulary, with comments and string literals.
pub fn source(rng: &mut Rng, lang: Lang, target: usize) -> String {
    let mut s = match lang {
        Lang::Python => format!(
            "\"\"\"{}\"\"\"\n\nimport logging\nimport os\nimport time\n\nlog = logging.getLogger(__name__)\n\n",
            sentence(rng)
        ),
        Lang::Rust => format!("//! {}\n\nuse std::collections::BTreeMap;\nuse std::time::Duration;\n\n", sentence(rng)),
        Lang::Go => format!(
            "// Package {} {}\npackage {}\n\nimport (\n\t\"context\"\n\t\"fmt\"\n\t\"time\"\n)\n\n",
            ident(rng).replace('_', ""),
            sentence(rng),
            ident(rng).replace('_', "")
        ),
        Lang::Shell => format!("#!/bin/sh\n# {}\nset -eu\n\n", sentence(rng)),
    };
    while s.len() < target {
        let name = ident(rng);
        let args: Vec<String> = (0..rng.range(0, 3)).map(|_| ident(rng)).collect();
        let (open, indent, close) = match lang {
            Lang::Python => (format!("def {name}({}):", args.join(", ")), 4, String::new()),
            Lang::Rust => (
                format!(
                    "pub fn {name}({}) -> Result<(), Error> {{",
                    args.iter().map(|a| format!("{a}: &str")).collect::<Vec<_>>().join(", ")
                ),
                4,
                "    Ok(())\n}".to_string(),
            ),
            Lang::Go => (
                format!(
                    "func {}({}) error {{",
                    name.replace('_', ""),
                    args.iter().map(|a| format!("{a} string")).collect::<Vec<_>>().join(", ")
                ),
                1,
                "\treturn nil\n}".to_string(),
            ),
            Lang::Shell => (format!("{name}() {{"), 2, "}".to_string()),
        };
        let comment = match lang {
            Lang::Python | Lang::Shell => "#",
            Lang::Rust | Lang::Go => "//",
        };
        if rng.chance(0.6) {
            s.push_str(&format!("{comment} {}\n", sentence(rng)));
        }
        s.push_str(&open);
        s.push('\n');
        let pad: String = if matches!(lang, Lang::Go) { "\t".repeat(indent) } else { " ".repeat(indent) };
        for _ in 0..rng.range(2, 14) {
            let line = match (lang, rng.below(5)) {
                (_, 0) => format!("{comment} {}", sentence(rng)),
                (Lang::Python, 1) => {
                    format!("if {} > {}:\n{pad}{pad}return {}", ident(rng), rng.range(0, 1000), expression(rng))
                }
                (Lang::Python, _) => format!("{} = {}", ident(rng), expression(rng)),
                (Lang::Rust, 1) => format!(
                    "if {} > {} {{\n{pad}{pad}return Err(Error::{});\n{pad}}}",
                    ident(rng),
                    rng.range(0, 1000),
                    ident(rng)
                ),
                (Lang::Rust, _) => format!("let {} = {};", ident(rng), expression(rng)),
                (Lang::Go, 1) => format!(
                    "if err := {}; err != nil {{\n{pad}{pad}return fmt.Errorf(\"{}: %w\", err)\n{pad}}}",
                    expression(rng),
                    ident(rng)
                ),
                (Lang::Go, _) => format!("{} := {}", ident(rng), expression(rng)),
                (Lang::Shell, 1) => format!(
                    "if [ -f \"/etc/{}/{}\" ]; then\n{pad}{pad}{} \"$@\"\n{pad}fi",
                    ident(rng),
                    ident(rng),
                    ident(rng)
                ),
                (Lang::Shell, _) => format!("{}=\"${{{}:-{}}}\"", upper_ident(rng), upper_ident(rng), rng.word(WORDS)),
            };
            s.push_str(&pad);
            s.push_str(&line);
            s.push('\n');
        }
        if !close.is_empty() {
            s.push_str(&close);
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

/// Markdown documentation of roughly `target` bytes.
pub fn markdown(rng: &mut Rng, title: &str, target: usize) -> String {
    let mut s = format!("# {title}\n\n{}\n\n", sentence(rng));
    while s.len() < target {
        match rng.below(6) {
            0 => s.push_str(&format!("## {}\n\n", sentence(rng).trim_end_matches('.'))),
            1 => {
                for _ in 0..rng.range(2, 6) {
                    s.push_str(&format!("* {}\n", sentence(rng)));
                }
                s.push('\n');
            }
            2 => {
                s.push_str("```yaml\n");
                for _ in 0..rng.range(2, 8) {
                    s.push_str(&format!("{}: {}\n", ident(rng), scalar(rng)));
                }
                s.push_str("```\n\n");
            }
            3 => {
                s.push_str("| name | default | meaning |\n|---|---|---|\n");
                for _ in 0..rng.range(2, 8) {
                    s.push_str(&format!("| `{}` | {} | {} |\n", ident(rng), scalar(rng), sentence(rng)));
                }
                s.push('\n');
            }
            _ => {
                let n = rng.range(2, 6);
                let para: Vec<String> = (0..n).map(|_| sentence(rng)).collect();
                s.push_str(&para.join(" "));
                s.push_str("\n\n");
            }
        }
    }
    s
}

/// A CSV table of measurements (calibration or a recorded series), roughly `target` bytes.
pub fn csv(rng: &mut Rng, target: usize) -> String {
    let columns: Vec<String> = (0..rng.range(3, 8)).map(|_| rng.word(&WORDS[200..]).to_string()).collect();
    let mut s = format!("timestamp,sensor,{}\n", columns.join(","));
    let mut t = 1_700_000_000 + rng.range(0, 10_000_000) as u64;
    let base: Vec<f64> = columns.iter().map(|_| rng.unit() * 500.0).collect();
    while s.len() < target {
        t += 60;
        s.push_str(&format!("{t},s{:02}", rng.range(1, 24)));
        for b in &base {
            s.push_str(&format!(",{:.3}", b + (rng.unit() - 0.5) * b * 0.05));
        }
        s.push('\n');
    }
    s
}

/// A PEM certificate (random DER-sized body: certificates do not compress).
pub fn pem(rng: &mut Rng) -> String {
    let len = rng.range(700, 1400);
    let body = base64::engine::general_purpose::STANDARD.encode(rng.bytes(len));
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// A small binary asset: an image or a compiled blob, already compressed (random bytes
/// behind a short fixed header), so no tool can shrink it.
pub fn blob(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    out.extend(rng.bytes(size.saturating_sub(out.len())));
    out
}

/// A firmware image of about `size` bytes: a header, machine code (a skewed instruction
/// mix with random immediates: compresses to roughly half), a compressed filesystem
/// (random) and erased-flash padding (0xFF).
pub fn firmware(rng: &mut Rng, model: &str, version: &str, size: usize) -> Vec<u8> {
    let mut out = format!("FWIMG1\0{model}\0{version}\0").into_bytes();
    out.resize(512, 0);
    let opcodes: Vec<[u8; 2]> = (0..96).map(|_| [rng.next() as u8, rng.next() as u8]).collect();
    let code = size * 11 / 20;
    while out.len() < code {
        let op = opcodes[rng.skewed(opcodes.len())];
        out.extend_from_slice(&op);
        if rng.chance(0.5) {
            out.extend_from_slice(&(rng.below(4096) as u16).to_le_bytes());
        }
    }
    let fs = size * 17 / 20;
    out.extend(rng.bytes(fs.saturating_sub(out.len())));
    out.resize(size, 0xFF);
    out
}

/// Edits a firmware image the way a point release does: a handful of patched code
/// ranges (some growing or shrinking), and one region of the filesystem rewritten.
pub fn patch_firmware(rng: &mut Rng, image: &mut Vec<u8>) {
    let len = image.len();
    for _ in 0..rng.range(4, 24) {
        let at = rng.range(512, len * 11 / 20);
        let old = rng.range(8, 400);
        let new = if rng.chance(0.5) { old } else { rng.range(8, 400) };
        let end = (at + old).min(image.len());
        image.splice(at..end, rng.bytes(new));
    }
    let len = image.len();
    let at = rng.range(len * 11 / 20, len * 17 / 20);
    let n = rng.range(4 << 10, 64 << 10).min(len - at);
    let fresh = rng.bytes(n);
    image[at..at + n].copy_from_slice(&fresh);
}

/// Edits text the way a person does in one commit: tweaks a value on a few lines,
/// inserts a line modelled on a neighbour, deletes one.
pub fn edit_text(rng: &mut Rng, text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(sentence(rng));
    }
    // Edits cluster: most touch a region of the file, the way a change does.
    let centre = rng.below(lines.len());
    for _ in 0..rng.range(1, 6) {
        let spread = rng.range(0, 12);
        let i = (centre + rng.below(spread * 2 + 1)).saturating_sub(spread).min(lines.len() - 1);
        match rng.below(10) {
            0..=5 => lines[i] = tweak_line(rng, &lines[i]),
            6..=8 => {
                let new = tweak_line(rng, &lines[i]);
                lines.insert(i + 1, new);
            }
            _ if lines.len() > 10 => {
                lines.remove(i);
            }
            _ => {}
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out.into_bytes()
}

/// Replaces one number or word on `line` with another.
fn tweak_line(rng: &mut Rng, line: &str) -> String {
    // Runs of alphanumerics: candidates to replace.
    let bytes = line.as_bytes();
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().enumerate().chain(std::iter::once((bytes.len(), &b' '))) {
        match (b.is_ascii_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if runs.is_empty() {
        return format!("{line} {}", rng.word(WORDS));
    }
    let (s, e) = runs[rng.below(runs.len())];
    let old = &line[s..e];
    let new = if old.bytes().all(|b| b.is_ascii_digit()) {
        rng.range(0, 10usize.pow(old.len().min(6) as u32)).to_string()
    } else if old.bytes().all(|b| b.is_ascii_hexdigit()) && old.len() >= 8 {
        rng.hex(old.len())
    } else {
        rng.word(&WORDS[10..]).to_string()
    };
    format!("{}{new}{}", &line[..s], &line[e..])
}
