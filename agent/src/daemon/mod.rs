//! `ferry-agent run`: the long-running service that keeps a device converged.
//!
//! Set-up order: logging (in `main`), config, runtime, signal handlers, then the loop:
//! reconcile, poll every mirror ([`cycle`]), write metrics, tell systemd, sleep the poll
//! interval with jitter. SIGHUP reloads the config and polls at once; SIGTERM/SIGINT stop.
//! Either signal cuts a poll wherever it waits — a download is cut (committed chunks stay,
//! up to one uncommitted piece is lost), a backoff is abandoned — except during an apply,
//! which is finished first since it must not be abandoned midway. The watchdog is pinged
//! from its own task. Drift is checked on its own interval, independent of the poll
//! interval: the wait between polls wakes for it.

pub mod cycle;
pub mod pending;
pub mod sink;
pub mod source;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::Reason;
use tokio::signal::unix::{signal, SignalKind};

use crate::agent::Agent;
use crate::config::Config;
use crate::failure::Failure;
use crate::fetch::{FetchConfig, Fetcher, RetryPolicy};
use crate::metrics::{self, Metric};
use crate::notify::Notifier;
use crate::store::Store;
use cycle::{Counters, Cycle};
use source::Source;

/// Retry policy for a config: four attempts per request (delays of about 1, 2 and 4 s before `max_backoff`), so a
/// dead mirror costs seconds before the next one is tried, not minutes; the poll interval
/// is the long-term retry.
pub fn retry_policy(cfg: &Config) -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_secs(1).min(cfg.fetch.max_backoff),
        max_delay: cfg.fetch.max_backoff,
        max_attempts: 4,
    }
}

/// A uniform fraction in [0, 1) for poll jitter.
fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn fetcher(cfg: &Config) -> Result<Fetcher, Failure> {
    let fc = FetchConfig {
        connect_timeout: cfg.fetch.connect_timeout,
        stall_timeout: cfg.fetch.stall_timeout,
        rate_limit: cfg.fetch.rate_limit,
        min_rate: cfg.fetch.min_rate,
        proxy: cfg.fetch.proxy.clone(),
        extra_ca: cfg.fetch.ca_file.clone(),
        user_agent: format!("ferry-agent/{}", env!("CARGO_PKG_VERSION")),
    };
    Ok(Fetcher::new(&fc)?)
}

/// Runs the daemon; with `once`, one cycle and out. Returns the process exit code.
pub fn run(config_path: &Path, once: bool) -> Result<u8, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Reason::Io, format!("starting the runtime: {e}")))?;
    runtime.block_on(main_loop(config_path, once))
}

async fn main_loop(config_path: &Path, once: bool) -> Result<u8, Failure> {
    let notifier = Notifier::from_env();
    let mut cfg = Config::load(config_path).map_err(|e| Failure::new(Reason::Malformed, e))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::new(Reason::Io, e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::new(Reason::Io, e))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Failure::new(Reason::Io, e))?;
    if let Some(every) = crate::notify::watchdog_interval() {
        tokio::spawn(async move {
            let n = Notifier::from_env();
            loop {
                n.watchdog();
                tokio::time::sleep(every).await;
            }
        });
    }

    // Reconcile before anything else (a crash or reboot may have interrupted a trial).
    let c2 = cfg.clone();
    tokio::task::spawn_blocking(move || Agent::open(c2).map(|_| ()))
        .await
        .map_err(|e| Failure::new(Reason::Io, e.to_string()))??;
    record_event(&cfg, "agent-start", &format!("ferry-agent {} started", env!("CARGO_PKG_VERSION")));
    notifier.ready(&format!(
        "polling {} mirror(s) every {}",
        cfg.mirrors.len(),
        humantime::format_duration(cfg.poll_interval)
    ));

    let counters = Arc::new(Counters::default());
    let mut fetch = fetcher(&cfg)?;
    // Drift is due right after the first poll, then every `drift_interval`, whatever the
    // poll interval: the wait between polls wakes for it.
    let mut last_drift: Option<Instant> = None;
    'service: loop {
        let sources: Vec<Source> = cfg.mirrors.iter().map(|m| Source::new(m, &fetch, &retry_policy(&cfg))).collect();
        notifier.status("polling");
        // A signal cuts the cycle wherever it waits (a download keeps its committed chunks),
        // except during an apply, which is never abandoned midway: then the signal waits
        // for the cycle to end.
        let (mut stop, mut reload) = (false, false);
        let outcome = {
            let cycle = cycle::run(&cfg, &sources, &counters, &stop_rx);
            tokio::pin!(cycle);
            loop {
                tokio::select! {
                    r = &mut cycle => break Some(r),
                    _ = term.recv(), if !stop => stop = true,
                    _ = int.recv(), if !stop => stop = true,
                    _ = hup.recv(), if !reload => reload = true,
                }
                if stop {
                    let _ = stop_tx.send(true);
                }
                if !counters.applying.load(Ordering::SeqCst) {
                    break None;
                }
                tracing::info!("an apply is running; it finishes first");
                notifier.status("an apply is running; it finishes first");
            }
        };
        let mut hold_ends = None;
        if let Some(outcome) = outcome {
            if let Ok(Cycle::Held { hold, .. }) = &outcome {
                hold_ends = hold.ends_at();
            }
            let status = finish_cycle(&cfg, &counters, &outcome);
            notifier.status(&status);
            tracing::info!("{status}");
            // Reports home (DESIGN "Reports"), at most once per `[reports] interval`; a stop
            // signal cuts the upload (nothing is removed before the server acknowledges).
            if !stop {
                tokio::select! {
                    _ = crate::upload::after_cycle(&cfg, &fetch, once) => {}
                    _ = term.recv() => stop = true,
                    _ = int.recv() => stop = true,
                }
            }
            if once {
                return Ok(match outcome {
                    Ok(Cycle::Converged { .. } | Cycle::Applied { .. } | Cycle::Held { .. }) => 0,
                    Ok(Cycle::RolledBack { .. }) | Err(_) => {
                        println!("{status}");
                        1
                    }
                });
            }
        }
        if stop {
            break 'service;
        }
        if reload {
            reload_config(config_path, &notifier, &mut cfg, &mut fetch);
            continue 'service;
        }

        // Wait for the next poll, checking drift whenever it is due; a hold that ends
        // sooner (a window opening, a pause running out) wakes the loop then.
        let mut wait = cfg.poll_interval.mul_f64(0.9 + 0.2 * random_fraction());
        if let Some(ends) = hold_ends {
            wait = wait.min(Duration::from_secs(ends.saturating_sub(crate::store::now()).max(1)));
        }
        let next_poll = later(Instant::now(), wait);
        loop {
            let now = Instant::now();
            let next_drift = last_drift.map_or(now, |t| later(t, cfg.drift_interval));
            if next_drift <= now {
                last_drift = Some(now);
                let c2 = cfg.clone();
                let check = tokio::task::spawn_blocking(move || crate::drift::check(&c2));
                tokio::select! {
                    r = check => {
                        if let Ok(Err(f)) = r {
                            tracing::warn!(reason = %f.reason, "drift check: {}", f.message);
                        }
                        write_metrics(&cfg);
                    }
                    // A restore in progress finishes on its own thread before the process exits.
                    _ = term.recv() => break 'service,
                    _ = int.recv() => break 'service,
                }
                continue;
            }
            if next_poll <= now {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_poll.min(next_drift).into()) => {}
                _ = term.recv() => break 'service,
                _ = int.recv() => break 'service,
                _ = hup.recv() => {
                    reload_config(config_path, &notifier, &mut cfg, &mut fetch);
                    break;
                }
            }
        }
    }
    notifier.stopping();
    tracing::info!("stopping");
    Ok(0)
}

/// `t + d`, or far in the future when that overflows (an interval of centuries).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400))).unwrap_or(t)
}

/// SIGHUP: reads the config again; keeps the old one (and says why) when the new one is
/// not usable. The caller polls at once either way.
fn reload_config(path: &Path, notifier: &Notifier, cfg: &mut Config, fetch: &mut Fetcher) {
    notifier.reloading();
    let result = Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|new| Ok((fetcher(&new).map_err(|e| e.to_string())?, new)));
    match result {
        Ok((f, new)) => {
            *cfg = new;
            *fetch = f;
            tracing::info!("configuration reloaded");
            notifier.ready("configuration reloaded");
        }
        Err(e) => {
            tracing::error!("reload refused, keeping the old configuration: {e}");
            notifier.ready(&format!("reload refused, keeping the old configuration: {e}"));
        }
    }
}

fn record_event(cfg: &Config, kind: &str, message: &str) {
    if let Err(e) = Store::open(&cfg.state_dir).and_then(|s| s.record_event(kind, None, None, message)) {
        tracing::error!("recording an event: {e}");
    }
}

/// Books the cycle's outcome into metrics and events; returns a one-line status.
fn finish_cycle(cfg: &Config, counters: &Counters, outcome: &Result<Cycle, Failure>) -> String {
    let status = match outcome {
        Ok(Cycle::Converged { release: Some(r), note: None }) => format!("converged: release {r} is applied"),
        Ok(Cycle::Converged { release: None, note: None }) => "converged: no release applied".to_string(),
        Ok(Cycle::Converged { release, note: Some(n) }) => {
            format!("converged on release {}: {n}", release.map(|r| r.to_string()).unwrap_or_else(|| "none".into()))
        }
        Ok(Cycle::Applied { release }) => format!("applied release {release}"),
        Ok(Cycle::RolledBack { release, failure }) => format!("release {release} rolled back: {failure}"),
        Ok(Cycle::Held { release, pending, hold }) => format!(
            "on release {}: release {pending} is ready; {}",
            release.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
            hold.describe()
        ),
        Err(f) => format!("not converged: {f}"),
    };
    let result = tokio::task::block_in_place(|| -> Result<(), Failure> {
        let store = Store::open(&cfg.state_dir)?;
        metrics::add(&store, Metric::DownloadBytes, counters.downloaded.swap(0, Ordering::Relaxed))?;
        metrics::add(&store, Metric::Retries, counters.retries.swap(0, Ordering::Relaxed))?;
        let now = crate::store::now();
        match outcome {
            Ok(Cycle::Converged { .. } | Cycle::Applied { .. } | Cycle::Held { .. }) => {
                metrics::set(&store, Metric::LastSuccess, now)?
            }
            _ => metrics::set(&store, Metric::LastFailure, now)?,
        }
        Ok(())
    });
    if let Err(f) = result {
        tracing::error!("metrics: {f}");
    }
    write_metrics(cfg);
    status
}

/// Rewrites the metrics file, if one is configured (after every poll and drift check).
fn write_metrics(cfg: &Config) {
    let Some(path) = &cfg.metrics_file else { return };
    let result = tokio::task::block_in_place(|| -> Result<(), Failure> {
        let store = Store::open(&cfg.state_dir)?;
        let slots = crate::slots::Slots::open(&cfg.state_dir)?;
        let applied = match slots.current()? {
            Some(s) => slots.read_record(s)?.map(|r| r.release),
            None => None,
        };
        let text = metrics::render(&store, applied, cfg.channel.as_str())?;
        metrics::write(path, &text).map_err(|e| Failure::new(Reason::Io, format!("{}: {e}", path.display())))
    });
    if let Err(f) = result {
        tracing::error!("metrics: {f}");
    }
}
