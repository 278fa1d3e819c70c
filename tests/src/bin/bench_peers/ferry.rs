//! Ferry's side, with the release binaries: an operator (keys, trust root, mirror) that
//! publishes a git repository's tags with `bundler release`, and devices (a config and a
//! state directory) that apply `.ferry` files with `ferry-agent import`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The release binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `target/release/bundler`.
    pub bundler: PathBuf,
    /// `target/release/ferry-agent`.
    pub agent: PathBuf,
}

/// One payload of a release, as its signed manifest lists it.
#[derive(Debug, Clone)]
pub struct Payload {
    /// `None` for a full payload, the base release for a delta.
    pub from: Option<u64>,
    /// The `.ferry` file on the mirror.
    pub file: PathBuf,
    /// Its size: what crosses the wire.
    pub bytes: u64,
    /// The payload's signed size (the file less its header and manifest).
    pub payload: u64,
}

/// Keys, a trust root and a mirror.
#[derive(Debug)]
pub struct Operator {
    bins: Bins,
    keys: PathBuf,
    /// The mirror directory.
    pub mirror: PathBuf,
    /// The channel releases go to.
    pub channel: String,
}

impl Operator {
    /// Makes keys and a trust root under `dir`.
    pub fn new(bins: &Bins, dir: &Path, channel: &str) -> Result<Operator> {
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let op = Operator { bins: bins.clone(), keys, mirror: dir.join("mirror"), channel: channel.into() };
        for k in ["root", "release", "index"] {
            util::output(op.bundler().args(["keygen", "--out"]).arg(op.keys.join(k)))?;
        }
        util::output(
            op.bundler()
                .args(["trust", "init", "--mirror"])
                .arg(&op.mirror)
                .arg("--root-key")
                .arg(op.keys.join("root"))
                .arg("--release-pub")
                .arg(op.keys.join("release.pub"))
                .arg("--index-pub")
                .arg(op.keys.join("index.pub")),
        )?;
        Ok(op)
    }

    fn bundler(&self) -> Command {
        Command::new(&self.bins.bundler)
    }

    /// `bundler release` of `reference` in `repo` with a delta from the previous release
    /// only; returns the new release's payloads.
    pub fn release(&self, repo: &Path, reference: &str) -> Result<Vec<Payload>> {
        util::output(
            self.bundler()
                .args(["release", "--repo"])
                .arg(repo)
                .args(["--ref", reference, "--channel", &self.channel, "--mirror"])
                .arg(&self.mirror)
                .arg("--release-key")
                .arg(self.keys.join("release"))
                .arg("--index-key")
                .arg(self.keys.join("index"))
                .args(["--deltas", "1"]),
        )?;
        let index = self.inspect(&self.mirror.join("channels").join(&self.channel).join("index"))?;
        let digest =
            index["document"]["latest"]["manifest_sha256"].as_str().context("index without a latest release")?;
        let manifest = self.inspect(&self.mirror.join("releases").join(format!("{digest}.manifest")))?;
        let mut payloads = Vec::new();
        for p in manifest["document"]["payloads"].as_array().context("manifest without payloads")? {
            let file = self.mirror.join("payloads").join(format!("{}.ferry", p["sha256"].as_str().unwrap_or("")));
            let bytes = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?.len();
            let from = if p["kind"] == "full" {
                None
            } else {
                Some(p["kind"]["delta"]["from_release"].as_u64().context("delta without a base")?)
            };
            let payload = p["size"].as_u64().context("payload without a size")?;
            payloads.push(Payload { from, file, bytes, payload });
        }
        Ok(payloads)
    }

    fn inspect(&self, path: &Path) -> Result<serde_json::Value> {
        let out = util::output(self.bundler().arg("inspect").arg(path))?;
        serde_json::from_str(&out).with_context(|| format!("bundler inspect {}", path.display()))
    }

    /// The trust root a device is provisioned with.
    pub fn root(&self) -> PathBuf {
        self.mirror.join("trust").join("root.1")
    }
}

/// A device: a config and a state directory under one directory.
#[derive(Debug)]
pub struct Device {
    agent: PathBuf,
    config: PathBuf,
}

impl Device {
    /// A fresh device in `dir` (which must not exist) on `op`'s channel.
    pub fn new(bins: &Bins, op: &Operator, dir: &Path) -> Result<Device> {
        std::fs::create_dir_all(dir)?;
        std::fs::copy(op.root(), dir.join("root.1"))?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "channel = \"{}\"\ntrust_root = \"root.1\"\nstate_dir = \"state\"\ndevice_id = \"bench-device\"\n",
                op.channel
            ),
        )?;
        Ok(Device { agent: bins.agent.clone(), config })
    }

    /// The command that applies `file`: `ferry-agent --config … import FILE`.
    pub fn import(&self, file: &Path) -> Command {
        let mut c = Command::new(&self.agent);
        c.arg("--config").arg(&self.config).arg("import").arg(file);
        c
    }

    /// The applied release number, from `ferry-agent status --json`.
    pub fn applied(&self) -> Result<u64> {
        let out = util::output(Command::new(&self.agent).arg("--config").arg(&self.config).args(["status", "--json"]))?;
        let status: serde_json::Value = serde_json::from_str(&out).context("ferry-agent status --json")?;
        match status["applied"]["release"].as_u64() {
            Some(n) => Ok(n),
            None => bail!("the device applied nothing: {}", status),
        }
    }
}
