//! Metrics in the Prometheus text format, written atomically to a file for
//! node_exporter's textfile collector. Counters live in the `settings` table so they
//! survive restarts; the file is rewritten after every poll cycle.

use std::path::Path;

use crate::store::{Store, StoreError};

/// A counter or gauge kept in the store.
#[derive(Debug, Clone, Copy)]
pub enum Metric {
    /// Unix seconds of the last cycle that converged.
    LastSuccess,
    /// Unix seconds of the last failed cycle.
    LastFailure,
    /// Payload bytes received over the network.
    DownloadBytes,
    /// Retried requests.
    Retries,
    /// Releases rolled back.
    Rollbacks,
    /// Paths that differ from the release in the last drift check.
    DriftPaths,
}

impl Metric {
    fn key(self) -> &'static str {
        match self {
            Metric::LastSuccess => "metric.last_success",
            Metric::LastFailure => "metric.last_failure",
            Metric::DownloadBytes => "metric.download_bytes",
            Metric::Retries => "metric.retries",
            Metric::Rollbacks => "metric.rollbacks",
            Metric::DriftPaths => "metric.drift_paths",
        }
    }
}

/// Reads a metric (0 when never set).
pub fn get(store: &Store, m: Metric) -> Result<u64, StoreError> {
    Ok(store.setting(m.key())?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Sets a gauge.
pub fn set(store: &Store, m: Metric, value: u64) -> Result<(), StoreError> {
    store.set_setting(m.key(), &value.to_string())
}

/// Adds to a counter.
pub fn add(store: &Store, m: Metric, delta: u64) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    set(store, m, get(store, m)?.saturating_add(delta))
}

/// Renders the metrics file.
pub fn render(store: &Store, applied_release: Option<u64>, channel: &str) -> Result<String, StoreError> {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{channel=\"{channel}\"}} {value}\n"));
    };
    metric(
        "ferry_applied_release",
        "gauge",
        "Release number in the active slot (0: none).",
        applied_release.unwrap_or(0),
    );
    metric(
        "ferry_last_success_timestamp_seconds",
        "gauge",
        "End of the last poll that converged.",
        get(store, Metric::LastSuccess)?,
    );
    metric(
        "ferry_last_failure_timestamp_seconds",
        "gauge",
        "End of the last poll that failed.",
        get(store, Metric::LastFailure)?,
    );
    metric("ferry_download_bytes_total", "counter", "Payload bytes received.", get(store, Metric::DownloadBytes)?);
    metric(
        "ferry_retries_total",
        "counter",
        "Requests retried after a transient failure.",
        get(store, Metric::Retries)?,
    );
    metric("ferry_rollbacks_total", "counter", "Releases rolled back.", get(store, Metric::Rollbacks)?);
    metric(
        "ferry_drift_paths",
        "gauge",
        "Paths of the active slot that differ from its release.",
        get(store, Metric::DriftPaths)?,
    );
    Ok(out)
}

/// Writes the metrics file atomically.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    crate::fsutil::write_file_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_persist_and_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        add(&store, Metric::DownloadBytes, 10).expect("add");
        add(&store, Metric::DownloadBytes, 5).expect("add");
        set(&store, Metric::LastSuccess, 1234).expect("set");
        let text = render(&store, Some(7), "stable").expect("render");
        assert!(text.contains("ferry_download_bytes_total{channel=\"stable\"} 15\n"), "{text}");
        assert!(text.contains("ferry_applied_release{channel=\"stable\"} 7\n"));
        assert!(text.contains("ferry_last_success_timestamp_seconds{channel=\"stable\"} 1234\n"));
        let file = dir.path().join("ferry.prom");
        write(&file, &text).expect("write");
        assert_eq!(std::fs::read_to_string(file).expect("read"), text);
    }
}
