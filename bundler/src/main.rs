//! `bundler`: Ferry's operator CLI. Turns git refs into signed releases on a mirror,
//! manages keys and the trust root, verifies and inspects what a mirror holds, exports
//! what a USB stick needs, serves a mirror and takes devices' reports home (over HTTP or
//! from a USB stick) into a fleet database it can show.
//!
//! `main` is thin: parse, run one command, print an error once in one line, exit with a
//! code (0 ok, 1 failure or rejection, 64 bad usage).

mod clock;
mod demo;
mod device_id;
mod devices;
mod export;
mod fleet;
mod fleetdb;
mod git;
mod index_cmd;
mod ingest;
mod inspect;
mod keyfile;
mod mirror;
mod patches;
mod payload;
mod progress;
mod release;
mod reports_import;
mod rollout_cmd;
mod serve;
mod trust_cmd;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Ferry's operator tool: sign git releases and publish them to mirrors and USB sticks.
///
/// A typical first run:
///   bundler keygen --out keys/root      (likewise keys/release, keys/index)
///   bundler trust init --mirror MIRROR --root-key keys/root --release-pub keys/release.pub --index-pub keys/index.pub
///   bundler release --repo REPO --ref main --channel stable --mirror MIRROR --release-key keys/release --index-key keys/index
#[derive(Debug, Parser)]
#[command(name = "bundler", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make an Ed25519 key pair: FILE (PKCS#8 PEM, mode 0600) and FILE.pub; prints the key id.
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create or rotate the trust root.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Publish the tree of a git ref as the next release of a channel.
    Release(Box<release::ReleaseArgs>),
    /// Manage a channel index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Widen, narrow, halt or resume the staged rollout of a channel's latest release
    /// (re-signs the index only); widening is refused over the fleet's failure ratio.
    Rollout(rollout_cmd::RolloutArgs),
    /// Verify a .ferry file or a whole mirror as a device would; prints OK or the typed reason.
    Verify(verify::VerifyArgs),
    /// Print any Ferry document (root, manifest, index, .ferry) as JSON, without verifying.
    Inspect {
        /// The file.
        path: PathBuf,
    },
    /// Copy what a USB stick needs for one channel (trust history, index, latest release).
    Export(export::ExportArgs),
    /// Run Ferry end to end in ./ferry-demo: repo, keys, mirror, and a real ferry-agent
    /// applying a full release, a delta, and a failing release that is rolled back.
    Demo(demo::DemoArgs),
    /// Serve a mirror over HTTP and accept devices' signed report batches (POST /v1/reports).
    Serve(serve::ServeArgs),
    /// Enroll devices (their public keys) and list them.
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// Take devices' reports home from a USB stick.
    #[command(subcommand)]
    Reports(reports_import::ReportsCommand),
    /// Show every device's last reported state, pending releases, and per-release counts.
    Fleet(fleet::FleetArgs),
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    /// Write trust/root.1 into a new mirror.
    Init(trust_cmd::InitArgs),
    /// Write the next trust root, signed by the old and the new root keys.
    Rotate(trust_cmd::RotateArgs),
}

#[derive(Debug, Subcommand)]
enum IndexCommand {
    /// Re-sign a channel index with a new expiry (and the next version).
    Refresh(index_cmd::RefreshArgs),
}

fn main() -> ExitCode {
    #[cfg(feature = "docgen")]
    if let Some(code) = ferry_docgen::intercept(<Cli as clap::CommandFactory>::command()) {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    // The server logs what it serves and refuses, with timestamps unless under systemd (the
    // journal adds its own); one-shot commands log only warnings.
    let serve = matches!(cli.command, Command::Serve(_));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if serve { "info" } else { "warn" })),
        );
    if serve && !journal {
        logs.init();
    } else {
        logs.without_time().init();
    }
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bundler: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Keygen { out } => {
            let key = ferry_proto::SigningKey::generate()?;
            let public = keyfile::write_new(&out, &key)?;
            println!("key id {}", key.public().id());
            println!("private key {} (keep it secret), public key {}", out.display(), public.display());
        }
        Command::Trust(TrustCommand::Init(args)) => trust_cmd::init(&args)?,
        Command::Trust(TrustCommand::Rotate(args)) => trust_cmd::rotate(&args)?,
        Command::Release(args) => release::run(&args)?,
        Command::Index(IndexCommand::Refresh(args)) => index_cmd::refresh(&args)?,
        Command::Rollout(args) => rollout_cmd::run(&args)?,
        Command::Verify(args) => return verify::run(&args),
        Command::Inspect { path } => inspect::run(&path)?,
        Command::Export(args) => export::run(&args)?,
        Command::Demo(args) => demo::run(&args)?,
        Command::Serve(args) => serve::run(&args)?,
        Command::Devices(command) => devices::run(&command)?,
        Command::Reports(command) => return reports_import::run(&command),
        Command::Fleet(args) => fleet::run(&args)?,
    }
    Ok(true)
}
