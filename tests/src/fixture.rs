//! Operator and device fixtures: a fleet repo, keys, a trust root and a mirror made with
//! the real `bundler`, and devices (config + state directory) driven with the real
//! `ferry-agent`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{binaries, git, run, Run};

/// An operator's world: repo, keys, mirror.
pub struct Operator {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// The fleet repo (working tree).
    pub repo: PathBuf,
    /// The mirror directory.
    pub mirror: PathBuf,
    /// Key files.
    pub keys: PathBuf,
}

impl Operator {
    /// A SHA-1 operator with keys and a trust root.
    pub fn new() -> Operator {
        Operator::with_format("sha1")
    }

    /// An operator whose repo uses `format` (`sha1` or `sha256`).
    pub fn with_format(format: &str) -> Operator {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let mirror = dir.path().join("mirror");
        let keys = dir.path().join("keys");
        fs::create_dir_all(&repo).expect("mkdir");
        fs::create_dir_all(&keys).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main", &format!("--object-format={format}")]);
        let op = Operator { dir, repo, mirror, keys };
        for k in ["root", "release", "index"] {
            op.bundler(&["keygen", "--out"]).arg(op.key(k)).output().expect("keygen");
        }
        let r = run(op
            .bundler(&["trust", "init", "--mirror"])
            .arg(&op.mirror)
            .arg("--root-key")
            .arg(op.key("root"))
            .arg("--release-pub")
            .arg(op.key("release.pub"))
            .arg("--index-pub")
            .arg(op.key("index.pub")));
        r.ok();
        op
    }

    /// Path of a key file.
    pub fn key(&self, name: &str) -> PathBuf {
        self.keys.join(name)
    }

    /// A `bundler` command with `args`.
    pub fn bundler(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&binaries().bundler);
        c.args(args).current_dir(self.dir.path());
        c
    }

    /// Writes files (path → content) into the repo's working tree, `None` removes.
    pub fn write(&self, files: &[(&str, Option<&str>)]) {
        for (path, content) in files {
            let p = self.repo.join(path);
            match content {
                Some(c) => {
                    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                    fs::write(&p, c).expect("write");
                }
                None => {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }

    /// Marks a repo file executable.
    pub fn make_executable(&self, path: &str) {
        let p = self.repo.join(path);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Commits everything in the working tree; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    /// `bundler release` of HEAD (optionally a sub-path) into the mirror.
    pub fn release(&self, channel: &str, path: Option<&str>, extra: &[&str]) -> Run {
        let mut c = self.bundler(&["release", "--repo"]);
        c.arg(&self.repo).args(["--ref", "HEAD", "--channel", channel, "--mirror"]).arg(&self.mirror);
        c.arg("--release-key").arg(self.key("release")).arg("--index-key").arg(self.key("index"));
        if let Some(p) = path {
            c.args(["--path", p]);
        }
        c.args(extra);
        run(&mut c)
    }

    /// The `.ferry` files of the channel's latest release: (kind description, path).
    pub fn latest_payloads(&self, channel: &str) -> BTreeMap<String, PathBuf> {
        let index = self.inspect(&self.mirror.join("channels").join(channel).join("index"));
        let digest = index["document"]["latest"]["manifest_sha256"].as_str().expect("digest").to_string();
        let manifest = self.inspect(&self.mirror.join("releases").join(format!("{digest}.manifest")));
        let mut out = BTreeMap::new();
        for p in manifest["document"]["payloads"].as_array().expect("payloads") {
            let kind = match &p["kind"] {
                serde_json::Value::String(s) => s.clone(),
                other => format!("delta-{}", other["delta"]["from_release"]),
            };
            let file = self.mirror.join("payloads").join(format!("{}.ferry", p["sha256"].as_str().expect("sha")));
            out.insert(kind, file);
        }
        out
    }

    /// `bundler inspect` as JSON.
    pub fn inspect(&self, path: &Path) -> serde_json::Value {
        let r = run(self.bundler(&["inspect"]).arg(path)).ok();
        serde_json::from_str(&r.stdout).expect("inspect json")
    }

    /// The provisioned trust root file.
    pub fn root1(&self) -> PathBuf {
        self.mirror.join("trust").join("root.1")
    }
}

impl Default for Operator {
    fn default() -> Self {
        Operator::new()
    }
}

/// Names a directory: every agent run of [`Device::agent`] records its peak RSS there.
pub const RSS_DIR_ENV: &str = "FERRY_TEST_AGENT_RSS_DIR";
/// Names an agent binary [`Device::agent`] runs instead of the end-to-end build.
pub const AGENT_ENV: &str = "FERRY_TEST_AGENT";

/// A fresh file name in `dir` for one agent run: the test (thread) name, this process, a
/// counter, the subcommand.
fn rss_record(dir: &Path, args: &[&str]) -> PathBuf {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed").replace("::", "-");
    let sub = args.first().copied().unwrap_or("none");
    dir.join(format!("{test}.{}.{n}.{sub}", std::process::id()))
}

/// A device: a config and a state directory.
pub struct Device {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The state directory.
    pub state: PathBuf,
}

impl Device {
    /// A device on `channel` trusting `root`, with extra TOML appended to its config.
    pub fn new(channel: &str, root: &Path, extra_toml: &str) -> Device {
        Device::with_id("test-device", channel, root, extra_toml)
    }

    /// A device with its own `device_id`.
    pub fn with_id(id: &str, channel: &str, root: &Path, extra_toml: &str) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let config = dir.path().join("agent.toml");
        fs::copy(root, dir.path().join("root.1")).expect("copy root");
        fs::write(
            &config,
            format!("channel = \"{channel}\"\ntrust_root = \"root.1\"\nstate_dir = \"state\"\ndevice_id = \"{id}\"\n{extra_toml}"),
        )
        .expect("config");
        Device { dir, config, state }
    }

    /// A `ferry-agent` command with `args`.
    ///
    /// Opt-in, for measuring a whole suite: with [`AGENT_ENV`] set, that binary runs instead
    /// of the end-to-end build; with [`RSS_DIR_ENV`] set, the agent runs under GNU
    /// `time -f %M`, which writes its peak RSS in KiB (`ru_maxrss`) to a new file in that
    /// directory named `<test>.<pid>.<n>.<subcommand>`. The wrapper does not forward signals,
    /// so use it only for suites that let the agent run to its end.
    pub fn agent(&self, args: &[&str]) -> Command {
        let agent = std::env::var_os(AGENT_ENV).map_or_else(|| binaries().agent.clone(), PathBuf::from);
        let mut c = match std::env::var_os(RSS_DIR_ENV) {
            Some(dir) => {
                let mut c = Command::new("/usr/bin/time");
                c.args(["-f", "%M", "-o"]).arg(rss_record(Path::new(&dir), args)).arg(agent);
                c
            }
            None => Command::new(agent),
        };
        c.arg("--config").arg(&self.config).args(args);
        c
    }

    /// `ferry-agent import PATH`.
    pub fn import(&self, path: &Path) -> Run {
        run(self.agent(&["import"]).arg(path))
    }

    /// `ferry-agent status --json`.
    pub fn status(&self) -> serde_json::Value {
        let r = run(&mut self.agent(&["status", "--json"])).ok();
        serde_json::from_str(&r.stdout).expect("status json")
    }

    /// Adds `n` events straight into the outbox in one transaction, as if the device had
    /// been offline for a while: every fifth a `digest-mismatch` failure, the others
    /// `fetched`, each message `"<label> <i>: "` followed by a hex word repeated `repeat`
    /// times (about 8 × `repeat` bytes).
    pub fn seed_outbox(&self, n: usize, label: &str, repeat: usize) {
        let mut conn = rusqlite::Connection::open(self.state.join("ferry.db")).expect("open ferry.db");
        let tx = conn.transaction().expect("transaction");
        for i in 0..n {
            let reason = (i % 5 == 4).then_some("digest-mismatch");
            tx.execute(
                "INSERT INTO events(at, kind, release, reason, message) VALUES(1700000000 + ?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    i as i64,
                    if reason.is_some() { "rejected" } else { "fetched" },
                    (i % 7) as i64,
                    reason,
                    format!("{label} {i}: {}", format!("{:x}", (i as u64).wrapping_mul(2_654_435_761)).repeat(repeat))
                ],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }

    /// The applied release number, if any.
    pub fn applied_release(&self) -> Option<u64> {
        self.status()["applied"]["release"].as_u64()
    }

    /// The active slot directory (through `current`).
    pub fn current(&self) -> PathBuf {
        self.state.join("current")
    }

    /// Where `current` points (`slots/a`, `slots/b`), if anywhere.
    pub fn current_target(&self) -> Option<String> {
        fs::read_link(self.current()).ok().map(|p| p.display().to_string())
    }
}
