//! `ferry-agent`: the device side of Ferry. `main` is thin: parse, set up logging, run one
//! command, print an error once in one line, exit with a code (0 ok, 1 failure or
//! rejection, 64 bad usage or config).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use ferry_agent::agent::{Agent, ApplyOutcome};
use ferry_agent::config::{Config, DEFAULT_PATH};
use ferry_agent::export;
use ferry_agent::identity::Identity;
use ferry_agent::intake::{self, ImportResult};
use ferry_agent::status;

/// Prints a line on stdout; a closed stdout (`ferry-agent status | head`) ends the process
/// quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => { emit(&format!("{}\n", format_args!($($arg)*))) };
}

/// Prints text on stdout as is, like [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => { emit(&format!($($arg)*)) };
}

fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ferry-agent: error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Ferry's device agent: verifies signed releases, applies them atomically into A/B slots,
/// health-checks them and rolls back on failure.
#[derive(Debug, Parser)]
#[command(name = "ferry-agent", version, max_term_width = 100)]
struct Cli {
    /// Agent configuration file.
    #[arg(long, global = true, default_value = DEFAULT_PATH, env = "FERRY_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as the service: poll the mirrors, download with resume, apply, report. Under
    /// systemd (Type=notify) it signals readiness and pings the watchdog; SIGHUP reloads
    /// the config, SIGTERM stops after the current step.
    Run {
        /// One poll cycle, then exit: 0 when converged, 1 with the reason when not.
        #[arg(long)]
        once: bool,
    },
    /// Import and apply the newest release from a .ferry file, a directory of them, or a
    /// mirror layout (e.g. a USB stick written by `bundler export`).
    ///
    /// The release is stored and verified at once; applying it waits while the device is
    /// paused or outside its `apply_window`s (the service applies it when the hold ends).
    Import {
        /// File or directory.
        path: PathBuf,
        /// Apply now even outside the maintenance windows (an operator at the device). A
        /// pause still holds: `ferry-agent resume` first.
        #[arg(long)]
        now: bool,
    },
    /// Stop applying releases on this device (until TIME, or until `resume`). A paused device
    /// still downloads, verifies and reports, and says it is paused in `status` and reports.
    Pause {
        /// When the pause ends by itself: a duration (3h, 2days), a local date and time
        /// (2026-12-01 06:00) or RFC 3339 (2026-12-01T05:00:00Z). Default: until `resume`.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// Lift a pause: the next poll (or import) applies what is pending.
    Resume,
    /// Show the applied release, slot, trial state and last error.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also compare the active slot with its release tree (drift); exits 1 on drift.
        #[arg(long)]
        verify: bool,
    },
    /// Show past apply attempts and events.
    History {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Switch back to the release in the other slot, through the same protocol (hooks,
    /// health check); the release rolled away from is not re-applied.
    Rollback,
    /// Show this device's identity: its id, and the key that signs its reports (made on
    /// first use), for the operator to enrol.
    Identity {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write pending reports to DIR (e.g. a USB stick) as signed batch files, after applying
    /// the acknowledgement `bundler reports import` left there. Reports stay on the device
    /// until acknowledged.
    ExportReports {
        /// An existing directory, e.g. the stick's mount point.
        dir: PathBuf,
    },
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
    init_logging(matches!(cli.command, Command::Run { .. }));
    let _failpoints = fail::FailScenario::setup();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-agent: error: {e}");
            return ExitCode::from(64);
        }
    };
    if let Command::Run { once } = cli.command {
        return match ferry_agent::daemon::run(&cli.config, once) {
            Ok(code) => ExitCode::from(code),
            Err(f) => {
                eprintln!("ferry-agent: error: {f}");
                ExitCode::from(1)
            }
        };
    }
    match run(cfg, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry-agent: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr. Under systemd (`JOURNAL_STREAM` set) without timestamps or colour,
/// since journald adds its own; the service logs at `info`, one-shot commands at `warn`.
fn init_logging(service: bool) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let default = if service { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = !journald && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(ansi).with_env_filter(filter);
    if journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn run(cfg: Config, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { .. } => unreachable_run(),
        Command::Import { path, now } => {
            let mut agent = Agent::open(cfg)?;
            let result = intake::import_path(&mut agent, &path, now, &mut |line| say!("{line}"));
            // Keep the report outbox under its cap between daemon cycles too.
            let max = agent.config().reports.max_outbox_bytes;
            if let Err(e) = ferry_agent::outbox::Outbox::new(agent.store()).compact(max) {
                tracing::warn!("compacting the report outbox: {e}");
            }
            match result {
                Ok(ImportResult::UpToDate { release }) => say!("up to date: release {release} is applied"),
                Ok(ImportResult::Applied(outcome)) => return Ok(report(&outcome)),
                Ok(ImportResult::Held { release, hold }) => {
                    say!("release {release} is stored and verified; not applied yet: {}", hold.describe());
                    say!("the ferry-agent service applies it when that ends");
                }
                Ok(ImportResult::RolloutWait { note, applied, .. }) => {
                    let on = applied.map_or("no release".to_string(), |a| format!("release {a}"));
                    say!("staying on {on}: {note}");
                }
                Err(f) => {
                    say!("rejected: {}: {}", f.reason, f.message);
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Status { json, verify } => {
            let drift = if verify { Some(ferry_agent::drift::check(&cfg)?) } else { None };
            let s = status::status(&cfg)?;
            if json {
                let mut v = serde_json::to_value(&s)?;
                if let Some(d) = &drift {
                    v["drift"] = serde_json::json!({
                        "paths": d.entries.iter().map(|e| e.path.display().to_string()).collect::<Vec<_>>(),
                        "restored": d.restored,
                    });
                }
                say!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                say_raw!("{}", s.render());
                if let Some(d) = &drift {
                    if d.entries.is_empty() {
                        say!(
                            "{:<12} none: the slot matches release {}",
                            "drift",
                            d.release.map(|r| r.to_string()).unwrap_or("-".into())
                        );
                    }
                    for e in &d.entries {
                        say!("{:<12} {} ({})", "drift", e.path.display(), e.kind);
                    }
                    if d.restored {
                        say!("{:<12} restored: the release was written afresh and switched to", "drift");
                    }
                }
            }
            if drift.is_some_and(|d| !d.entries.is_empty() && !d.restored) {
                return Ok(ExitCode::from(1));
            }
        }
        Command::History { json, limit } => {
            let h = status::history(&cfg, limit)?;
            if json {
                say!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                say_raw!("{}", h.render());
            }
        }
        Command::Identity { json } => {
            let id = Identity::load_or_create(&cfg.state_dir)?;
            let public = id.public().to_pem();
            if json {
                let v = serde_json::json!({
                    "device_id": cfg.device_id,
                    "key_id": id.key_id().to_hex(),
                    "public_key": public,
                    "key_file": id.path().display().to_string(),
                });
                say!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                say!("{:<12} {}", "device", cfg.device_id);
                say!("{:<12} {}", "key id", id.key_id());
                say!("{:<12} {}", "key file", id.path().display());
                say_raw!("{public}");
            }
        }
        Command::ExportReports { dir } => {
            export::export_reports(&cfg, &dir, &mut |line| say!("{line}"))?;
        }
        Command::Pause { until } => {
            let store = ferry_agent::store::Store::open(&prepare_state_dir(&cfg)?)?;
            let now = ferry_agent::store::now();
            let until = match until.map(|t| ferry_agent::hold::parse_until(&t, now)).transpose() {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("ferry-agent: error: --until {e}");
                    return Ok(ExitCode::from(64));
                }
            };
            ferry_agent::hold::pause(&store, until)?;
            say!("{}", ferry_agent::hold::Hold::Paused { until }.describe());
        }
        Command::Resume => {
            let store = ferry_agent::store::Store::open(&prepare_state_dir(&cfg)?)?;
            if ferry_agent::hold::resume(&store, ferry_agent::store::now())? {
                say!("resumed: the next poll or import applies what is pending");
            } else {
                say!("not paused");
            }
        }
        Command::Rollback => {
            let mut agent = Agent::open(cfg)?;
            match agent.manual_rollback() {
                Ok(outcome) => return Ok(report(&outcome)),
                Err(f) => {
                    say!("rollback refused: {}: {}", f.reason, f.message);
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The state directory, created on first use (as `status` and the agent do).
fn prepare_state_dir(cfg: &Config) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| anyhow::anyhow!("creating state directory {}: {e}", cfg.state_dir.display()))?;
    Ok(cfg.state_dir.clone())
}

/// `run` is dispatched before the one-shot commands.
fn unreachable_run() {
    tracing::error!("internal: `run` reached the one-shot dispatcher");
}

fn report(outcome: &ApplyOutcome) -> ExitCode {
    match outcome {
        ApplyOutcome::Committed { release, slot } => {
            say!("applied release {release} in slot {slot}: healthy, committed");
            ExitCode::SUCCESS
        }
        ApplyOutcome::RolledBack { release, failure } => {
            say!("release {release} rolled back: {}: {}", failure.reason, failure.message);
            ExitCode::from(1)
        }
    }
}
