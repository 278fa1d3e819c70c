//! `bundler demo`: Ferry's main job end to end on this machine, no root, no network.
//!
//! Makes `./ferry-demo/` with a sample fleet repository, keys, a trust root and a mirror,
//! then drives a real `ferry-agent` through three releases: release 1 applied from its
//! full payload, release 2 from a thin delta, release 3 whose health check fails and is
//! rolled back automatically. Every step is the command an operator or device would run,
//! printed before it runs.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `bundler demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory to create (replaced if it holds an earlier demo).
    #[arg(long, default_value = "ferry-demo")]
    dir: PathBuf,
    /// The `ferry-agent` binary (default: next to `bundler`, built with cargo if missing).
    #[arg(long, env = "FERRY_AGENT_BIN")]
    agent: Option<PathBuf>,
}

const MARKER: &str = ".ferry-demo";

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
    let bundler = std::env::current_exe().context("locating the bundler binary")?;
    let agent = match &args.agent {
        Some(a) => a.clone(),
        None => locate_agent(&bundler)?,
    };
    prepare_dir(&args.dir)?;
    let dir = fs::canonicalize(&args.dir)?;
    let demo = Demo { dir: dir.clone(), bundler, agent };

    section("1. The operator's fleet repository");
    let repo = dir.join("fleet");
    fs::create_dir_all(&repo)?;
    demo.git(&repo, &["init", "-q", "-b", "main"])?;
    write_release_tree(&repo, 1, true)?;
    demo.git(&repo, &["add", "-A"])?;
    demo.git(&repo, &["commit", "-q", "-m", "plant7: first configuration"])?;
    println!("  {} holds sites/plant7 (config, a start script, a symlink, ferry.toml with hooks)", repo.display());

    section("2. Keys and the trust root");
    for k in ["root", "release", "index"] {
        demo.bundler(&["keygen", "--out", &format!("keys/{k}")])?;
    }
    demo.bundler(&[
        "trust",
        "init",
        "--mirror",
        "mirror",
        "--root-key",
        "keys/root",
        "--release-pub",
        "keys/release.pub",
        "--index-pub",
        "keys/index.pub",
    ])?;

    section("3. The device");
    fs::create_dir_all(dir.join("device"))?;
    fs::copy(dir.join("mirror/trust/root.1"), dir.join("device/root.1"))?;
    fs::write(
        dir.join("device/agent.toml"),
        "# A device provisioned with the fleet's first trust root.\n\
         channel = \"plant7\"\ntrust_root = \"root.1\"\nstate_dir = \"state\"\ndevice_id = \"demo-gateway-1\"\n\
         labels = { site = \"plant7\" }\n",
    )?;
    println!("  device/agent.toml: channel plant7, state in device/state, trusting device/root.1");

    section("4. Release 1: published, then applied from its full payload");
    demo.release()?;
    demo.agent(&["import", "mirror"], true)?;

    section("5. Release 2: a config change, applied from a thin delta");
    write_release_tree(&repo, 2, true)?;
    demo.git(&repo, &["commit", "-q", "-am", "plant7: raise the pump limit"])?;
    demo.release()?;
    demo.agent(&["import", "mirror"], true)?;

    section("6. Release 3: a broken config whose health check fails");
    write_release_tree(&repo, 3, false)?;
    demo.git(&repo, &["commit", "-q", "-am", "plant7: typo in the config"])?;
    demo.release()?;
    demo.agent(&["import", "mirror"], false)?;

    section("7. Where the device stands");
    demo.agent(&["status"], true)?;
    demo.agent(&["history", "-n", "4"], true)?;
    let current = fs::read_link(dir.join("device/state/current"))?;
    println!(
        "\nThe device runs release 2 from {}; release 3 was rolled back and will not be retried.",
        current.display()
    );
    println!("Everything is in {}; run the demo again to start over.", dir.display());
    Ok(())
}

struct Demo {
    dir: PathBuf,
    bundler: PathBuf,
    agent: PathBuf,
}

impl Demo {
    fn bundler(&self, args: &[&str]) -> Result<()> {
        self.show("bundler", args, Command::new(&self.bundler).args(args).current_dir(&self.dir), true)
    }

    fn release(&self) -> Result<()> {
        self.bundler(&[
            "release",
            "--repo",
            "fleet",
            "--ref",
            "main",
            "--path",
            "sites/plant7",
            "--channel",
            "plant7",
            "--mirror",
            "mirror",
            "--release-key",
            "keys/release",
            "--index-key",
            "keys/index",
        ])
    }

    fn agent(&self, args: &[&str], must_succeed: bool) -> Result<()> {
        let mut full = vec!["--config", "device/agent.toml"];
        full.extend_from_slice(args);
        self.show(
            "ferry-agent",
            &full,
            Command::new(&self.agent).args(&full).current_dir(&self.dir).env("FERRY_LOG", "error"),
            must_succeed,
        )
    }

    fn git(&self, repo: &Path, args: &[&str]) -> Result<()> {
        let out = Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "Fleet Operator")
            .env("GIT_AUTHOR_EMAIL", "ops@example.com")
            .env("GIT_COMMITTER_NAME", "Fleet Operator")
            .env("GIT_COMMITTER_EMAIL", "ops@example.com")
            .output()
            .context("running git (is it installed?)")?;
        if !out.status.success() {
            bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    fn show(&self, name: &str, args: &[&str], cmd: &mut Command, must_succeed: bool) -> Result<()> {
        println!("\n$ {name} {}", args.join(" "));
        let out = cmd.output().with_context(|| format!("running {name}"))?;
        for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
            println!("  {line}");
        }
        match (out.status.success(), must_succeed) {
            (true, _) => Ok(()),
            (false, false) => {
                println!("  (exit status {}: expected here)", out.status.code().unwrap_or(-1));
                Ok(())
            }
            (false, true) => bail!("{name} {} failed ({})", args.join(" "), out.status),
        }
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

/// The sample tree for release `n`; `healthy` decides what its health check finds.
fn write_release_tree(repo: &Path, n: u32, healthy: bool) -> Result<()> {
    let site = repo.join("sites/plant7");
    fs::create_dir_all(site.join("bin"))?;
    fs::create_dir_all(repo.join("sites/harbour"))?;
    fs::write(repo.join("sites/harbour/app.conf"), "# another device group, not released here\n")?;
    let limit = if n >= 2 { 120 } else { 100 };
    let health_line = if healthy { "healthy = true" } else { "healthy = flase" };
    fs::write(
        site.join("app.conf"),
        format!("# plant7 pump controller, release {n}\npump_limit = {limit}\n{health_line}\n"),
    )?;
    fs::write(site.join("bin/start.sh"), "#!/bin/sh\necho \"starting pump controller from $FERRY_SLOT_PATH\"\n")?;
    fs::set_permissions(site.join("bin/start.sh"), fs::Permissions::from_mode(0o755))?;
    let link = site.join("active.conf");
    if fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("app.conf", &link)?;
    }
    fs::write(
        site.join("ferry.toml"),
        "# Hooks the device runs after switching to this release.\n[hooks]\n\
         activate = \"./bin/start.sh\"\n\
         health = \"grep -q '^healthy = true$' app.conf || { echo 'app.conf is not healthy'; exit 1; }\"\n\
         health_timeout = \"5s\"\nhealth_retries = 1\nhealth_interval = \"100ms\"\n\
         rollback = \"echo rolling back release $FERRY_RELEASE\"\n",
    )?;
    Ok(())
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!("{} exists and is not an earlier Ferry demo; choose another --dir", dir.display());
        }
        fs::remove_dir_all(dir).with_context(|| format!("removing the earlier demo in {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("keys"))?;
    fs::write(dir.join(MARKER), "made by `bundler demo`; removed by the next run\n")?;
    Ok(())
}

/// `ferry-agent` beside this binary. When run by `cargo run`, it is (re)built first with the
/// same profile, so the demo never drives a stale agent; cargo makes that a no-op when it is
/// up to date.
fn locate_agent(bundler: &Path) -> Result<PathBuf> {
    let dir = bundler.parent().context("bundler has no directory")?;
    let agent = dir.join("ferry-agent");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.file_name().is_some_and(|n| n == "release");
        println!("building ferry-agent ({} profile)…", if release { "release" } else { "dev" });
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "ferry-agent"]);
        if release {
            cmd.arg("--release");
        }
        if !cmd.status().context("running cargo build")?.success() {
            bail!("building ferry-agent failed");
        }
    }
    if !agent.exists() {
        bail!("no ferry-agent beside {}; build it (cargo build --release) or pass --agent", bundler.display());
    }
    Ok(agent)
}
