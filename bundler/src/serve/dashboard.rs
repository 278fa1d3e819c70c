//! The fleet dashboard, server-rendered: `GET /` is the fleet table (filters by channel and
//! state, then per release how the fleet took it) and `GET /devices/<id>` one device's
//! status and report history, newest first, failures marked with their reason codes.
//!
//! No JavaScript and no build step: each page is one HTML document written here, its
//! stylesheet ([`STYLE`]) inline and pinned by hash in a `Content-Security-Policy` that
//! allows nothing else (no scripts, images, frames or requests elsewhere). Everything a
//! device sent (id, channel, labels, health, reason codes, messages) is untrusted and goes
//! through [`html_escape`](super::html::html_escape); ids in links are percent-encoded.
//! Pages are `no-store`: they show live status.
//!
//! A page reads the whole devices table on the blocking pool, under the lock ingest uses;
//! that is a few milliseconds for thousands of devices. A device page shows at most
//! [`HISTORY_LIMIT`] records.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::html::{percent_encode, query_value, Esc};
use super::AppState;
use crate::device_id::DeviceId;
use crate::fleet::ago;
use crate::fleetdb::{DeviceRow, FleetDb, FleetDbError, HistoryRecord, ReleaseSummary};

/// The pages' stylesheet.
const STYLE: &str = include_str!("dashboard.css");

/// A device not heard from for longer than this (server clock) is stale.
const STALE_AFTER: u64 = 86_400;

/// Records shown on a device page, newest first.
const HISTORY_LIMIT: usize = 500;

/// What a device's last status says, as the fleet table filters it. A device can be in
/// several states at once (drifted and stale, say); `healthy` excludes all the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceState {
    Healthy,
    Failing,
    RolledBack,
    Drift,
    Stale,
}

impl DeviceState {
    const ALL: [DeviceState; 5] =
        [DeviceState::Healthy, DeviceState::Failing, DeviceState::RolledBack, DeviceState::Drift, DeviceState::Stale];

    /// The name in `?state=`.
    fn name(self) -> &'static str {
        match self {
            DeviceState::Healthy => "healthy",
            DeviceState::Failing => "failing",
            DeviceState::RolledBack => "rolled-back",
            DeviceState::Drift => "drift",
            DeviceState::Stale => "stale",
        }
    }

    fn title(self) -> &'static str {
        match self {
            DeviceState::Healthy => "Healthy",
            DeviceState::Failing => "Failing",
            DeviceState::RolledBack => "Rolled back",
            DeviceState::Drift => "Drift",
            DeviceState::Stale => "Stale",
        }
    }

    /// The definition, shown under the table.
    fn meaning(self) -> &'static str {
        match self {
            DeviceState::Healthy => "healthy on its release, nothing drifted, seen in the last day, not failing",
            DeviceState::Failing => "its last apply was rolled back, or the newest record it sent is a failure",
            DeviceState::RolledBack => "its last apply failed and was rolled back",
            DeviceState::Drift => "files differed from its release at its last check",
            DeviceState::Stale => "no report accepted for more than a day, or never",
        }
    }

    fn parse(s: &str) -> Option<DeviceState> {
        DeviceState::ALL.into_iter().find(|state| state.name() == s)
    }

    /// Whether `d` is in this state at `now` (server clock).
    fn holds(self, d: &DeviceRow, now: u64) -> bool {
        let rolled_back = d.health.as_deref() == Some("rolled-back");
        let failing = rolled_back || d.newest_record_failed;
        let stale = d.last_seen.is_none_or(|t| now.saturating_sub(t) > STALE_AFTER);
        match self {
            DeviceState::Healthy => d.health.as_deref() == Some("healthy") && !failing && d.drift_paths == 0 && !stale,
            DeviceState::Failing => failing,
            DeviceState::RolledBack => rolled_back,
            DeviceState::Drift => d.drift_paths > 0,
            DeviceState::Stale => stale,
        }
    }
}

/// The fleet table's filters, from `?channel=X&state=Y`.
struct Filter {
    channel: Option<String>,
    state: Option<DeviceState>,
}

impl Filter {
    fn shows_channel(&self, d: &DeviceRow) -> bool {
        self.channel.as_deref().is_none_or(|c| d.channel.as_deref() == Some(c))
    }

    fn shows_state(&self, d: &DeviceRow, now: u64) -> bool {
        self.state.is_none_or(|s| s.holds(d, now))
    }
}

/// `/?channel=…&state=…`, HTML-safe (percent-encoded).
fn fleet_href(channel: Option<&str>, state: Option<DeviceState>) -> String {
    let mut params = Vec::new();
    if let Some(c) = channel {
        params.push(format!("channel={}", percent_encode(c)));
    }
    if let Some(s) = state {
        params.push(format!("state={}", s.name()));
    }
    if params.is_empty() {
        "/".into()
    } else {
        format!("/?{}", params.join("&amp;"))
    }
}

fn device_href(id: &str) -> String {
    format!("/devices/{}", percent_encode(id))
}

/// Handles `GET /`.
pub async fn fleet(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let query = uri.query().unwrap_or("");
    let channel = query_value(query, "channel").filter(|c| !c.is_empty());
    let wanted = match query_value(query, "state").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match DeviceState::parse(&s) {
            Some(state) => Some(state),
            None => return unknown_state(&s),
        },
    };
    let (devices, releases) = match read(&state, |db| Ok((db.devices()?, db.release_summary()?))).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let filter = Filter { channel, state: wanted };
    let now = now();
    page(StatusCode::OK, "Fleet", now, |out| render_fleet(out, &devices, &releases, &filter, now))
}

/// Handles `GET /devices/<id>`.
pub async fn device(State(state): State<Arc<AppState>>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(raw)) = path else {
        return not_found(None);
    };
    let Ok(id) = raw.parse::<DeviceId>() else {
        return not_found(Some(&raw));
    };
    let found = read(&state, move |db| match db.device(&id)? {
        Some(d) => Ok(Some((d, db.history(&id, HISTORY_LIMIT)?))),
        None => Ok(None),
    })
    .await;
    let (d, (history, total)) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(Some(&raw)),
        Err(response) => return response,
    };
    let now = now();
    page(StatusCode::OK, &d.device_id, now, |out| render_device(out, &d, &history, total, now))
}

/// Runs a read on the blocking pool; a failure is logged and answered with a 500 page.
async fn read<T, F>(state: &Arc<AppState>, f: F) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce(&FleetDb) -> Result<T, FleetDbError> + Send + 'static,
{
    let state = Arc::clone(state);
    let task = tokio::task::spawn_blocking(move || {
        let db = state.db.lock().unwrap_or_else(PoisonError::into_inner);
        f(&db)
    });
    let message = match task.await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("the dashboard task failed: {e}"),
    };
    tracing::error!("dashboard: {message}");
    Err(message_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Server error",
        "The fleet database could not be read; the server log says why.",
    ))
}

fn render_fleet(
    out: &mut String,
    devices: &[DeviceRow],
    releases: &[ReleaseSummary],
    filter: &Filter,
    now: u64,
) -> fmt::Result {
    let in_channel: Vec<&DeviceRow> = devices.iter().filter(|d| filter.shows_channel(d)).collect();
    let shown: Vec<&DeviceRow> = in_channel.iter().copied().filter(|d| filter.shows_state(d, now)).collect();
    let channel = filter.channel.as_deref();
    writeln!(out, "<h1>Fleet <span class=\"muted\">{} of {} devices</span></h1>", shown.len(), devices.len())?;

    writeln!(out, "<nav class=\"filters\" aria-label=\"Filters\">\n<div class=\"group\"><span>State</span>")?;
    chip(out, "All", in_channel.len(), &fleet_href(channel, None), filter.state.is_none())?;
    for s in DeviceState::ALL {
        let n = in_channel.iter().filter(|d| s.holds(d, now)).count();
        chip(out, s.title(), n, &fleet_href(channel, Some(s)), filter.state == Some(s))?;
    }
    writeln!(out, "</div>\n<div class=\"group\"><span>Channel</span>")?;
    let mut channels: BTreeMap<&str, usize> = BTreeMap::new();
    for d in devices {
        if let Some(c) = d.channel.as_deref() {
            *channels.entry(c).or_default() += usize::from(filter.shows_state(d, now));
        }
    }
    if let Some(c) = channel {
        channels.entry(c).or_default();
    }
    let in_state = devices.iter().filter(|d| filter.shows_state(d, now)).count();
    chip(out, "All", in_state, &fleet_href(None, filter.state), channel.is_none())?;
    for (c, n) in &channels {
        chip(out, c, *n, &fleet_href(Some(c), filter.state), channel == Some(*c))?;
    }
    writeln!(out, "</div>\n</nav>")?;

    writeln!(
        out,
        "<div class=\"scroll\"><table id=\"fleet\" class=\"fleet\">\n\
         <thead><tr><th>Device</th><th>Channel</th><th>Labels</th>\
         <th class=\"num\">Release</th><th>Health</th><th>Last seen</th><th>Last failure</th>\
         <th class=\"num\">Drift</th><th>Paused</th></tr></thead>\n<tbody>"
    )?;
    for d in &shown {
        fleet_row(out, d, now)?;
    }
    if shown.is_empty() {
        let why = if devices.is_empty() { "No devices enrolled yet." } else { "No devices match these filters." };
        writeln!(out, "<tr><td class=\"empty\" colspan=\"9\">{why}</td></tr>")?;
    }
    writeln!(out, "</tbody>\n</table></div>")?;
    out.push_str("<p class=\"legend\">");
    for (i, s) in DeviceState::ALL.into_iter().enumerate() {
        let sep = if i == 0 { "" } else { " · " };
        write!(out, "{sep}<b>{}</b>: {}", s.name(), s.meaning())?;
    }
    writeln!(out, ".</p>")?;

    writeln!(out, "<h2>Releases</h2>")?;
    let releases: Vec<&ReleaseSummary> = releases.iter().filter(|r| channel.is_none_or(|c| r.channel == c)).collect();
    if releases.is_empty() {
        return writeln!(out, "<p class=\"muted\">No releases reported yet.</p>");
    }
    writeln!(
        out,
        "<div class=\"scroll\"><table id=\"releases\" class=\"releases\">\n\
         <thead><tr><th>Channel</th><th class=\"num\">Release</th>\
         <th class=\"num\">Running now</th><th class=\"num\">Applied (ever)</th><th class=\"num\">Healthy now</th>\
         <th class=\"num\">Rolled back (ever)</th></tr></thead>\n<tbody>"
    )?;
    for r in releases {
        let rolled_back =
            if r.rolled_back > 0 { format!("<span class=\"bad-text\">{}</span>", r.rolled_back) } else { "0".into() };
        writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{rolled_back}</td></tr>",
            Esc(&r.channel),
            r.release,
            r.current,
            r.applied,
            r.healthy
        )?;
    }
    writeln!(out, "</tbody>\n</table></div>")
}

fn chip(out: &mut String, text: &str, count: usize, href: &str, on: bool) -> fmt::Result {
    let class = if on { "chip on" } else { "chip" };
    let current = if on { " aria-current=\"page\"" } else { "" };
    writeln!(out, "<a class=\"{class}\" href=\"{href}\"{current}>{}<b>{count}</b></a>", Esc(text))
}

fn fleet_row(out: &mut String, d: &DeviceRow, now: u64) -> fmt::Result {
    let failing = DeviceState::Failing.holds(d, now);
    let stale = DeviceState::Stale.holds(d, now);
    let class = match (failing, stale) {
        (true, true) => " class=\"attention stale\"",
        (true, false) => " class=\"attention\"",
        (false, true) => " class=\"stale\"",
        (false, false) => "",
    };
    write!(
        out,
        "<tr{class}><td class=\"device\"><a href=\"{}\">{}</a></td><td>{}</td><td>",
        device_href(&d.device_id),
        Esc(&d.device_id),
        Esc(d.channel.as_deref().unwrap_or("—"))
    )?;
    labels(out, &d.labels)?;
    write!(out, "</td><td class=\"num\">{}</td><td>", d.release.map_or("—".into(), |r| r.to_string()))?;
    health_badge(out, d.health.as_deref())?;
    write!(out, "</td>")?;
    match d.last_seen {
        Some(t) if stale => {
            write!(out, "<td title=\"{}\"><span class=\"warn-text\">{}</span></td>", utc(t), ago(t, now))?
        }
        Some(t) => write!(out, "<td title=\"{}\">{}</td>", utc(t), ago(t, now))?,
        None => write!(out, "<td><span class=\"warn-text\">never</span></td>")?,
    }
    match &d.last_failure {
        Some(reason) => {
            let class = if failing { "badge bad" } else { "badge" };
            let message = d.last_failure_message.as_deref().unwrap_or("");
            write!(out, "<td><span class=\"{class}\" title=\"{}\">{}</span></td>", Esc(message), Esc(reason))?;
        }
        None => write!(out, "<td class=\"muted\">—</td>")?,
    }
    match d.drift_paths {
        0 => write!(out, "<td class=\"num muted\">—</td>")?,
        1 => write!(out, "<td class=\"num\"><span class=\"warn-text\">1 path</span></td>")?,
        n => write!(out, "<td class=\"num\"><span class=\"warn-text\">{n} paths</span></td>")?,
    }
    let paused = if d.paused { "<span class=\"badge warn\">paused</span>" } else { "<span class=\"muted\">—</span>" };
    writeln!(out, "<td>{paused}</td></tr>")
}

fn labels(out: &mut String, labels: &[(String, String)]) -> fmt::Result {
    if labels.is_empty() {
        return write!(out, "<span class=\"muted\">—</span>");
    }
    for (k, v) in labels {
        write!(out, "<span class=\"label\">{}={}</span>", Esc(k), Esc(v))?;
    }
    Ok(())
}

fn health_badge(out: &mut String, health: Option<&str>) -> fmt::Result {
    let class = match health {
        Some("healthy") => "badge ok",
        Some("rolled-back") => "badge bad",
        Some("trial") => "badge warn",
        _ => "badge",
    };
    write!(out, "<span class=\"{class}\">{}</span>", Esc(health.unwrap_or("unknown")))
}

fn render_device(out: &mut String, d: &DeviceRow, history: &[HistoryRecord], total: u64, now: u64) -> fmt::Result {
    writeln!(out, "<p class=\"crumbs\"><a href=\"/\">Fleet</a> / device</p>")?;
    write!(out, "<h1 id=\"device\">{} ", Esc(&d.device_id))?;
    health_badge(out, d.health.as_deref())?;
    for s in [DeviceState::Failing, DeviceState::Drift, DeviceState::Stale] {
        if s.holds(d, now) {
            let class = if s == DeviceState::Failing { "badge bad" } else { "badge warn" };
            write!(out, " <span class=\"{class}\">{}</span>", s.name())?;
        }
    }
    if d.paused {
        write!(out, " <span class=\"badge warn\">paused</span>")?;
    }
    writeln!(out, "</h1>")?;
    if let (Some(reason), true) = (&d.last_failure, DeviceState::Failing.holds(d, now)) {
        writeln!(
            out,
            "<p class=\"callout\"><b>Last failure</b> <span class=\"badge bad\">{}</span> {}</p>",
            Esc(reason),
            Esc(d.last_failure_message.as_deref().unwrap_or(""))
        )?;
    }

    writeln!(out, "<dl class=\"facts\">")?;
    let fact = |out: &mut String, name: &str, value: &str| writeln!(out, "<div><dt>{name}</dt><dd>{value}</dd></div>");
    let dash = || "<span class=\"muted\">—</span>".to_string();
    let text = |s: Option<&str>| s.map_or_else(dash, |s| Esc(s).to_string());
    fact(out, "Channel", &text(d.channel.as_deref()))?;
    let mut label_html = String::new();
    labels(&mut label_html, &d.labels)?;
    fact(out, "Labels", &label_html)?;
    let release = match (d.release, &d.commit) {
        (Some(r), Some(c)) => format!("{r} <span class=\"muted mono\">{}</span>", Esc(c.get(..12).unwrap_or(c))),
        (Some(r), None) => r.to_string(),
        (None, _) => dash(),
    };
    fact(out, "Release", &release)?;
    fact(out, "Slot", &text(d.slot.as_deref()))?;
    let seen = d.last_seen.map_or_else(
        || "<span class=\"warn-text\">never</span>".into(),
        |t| format!("{} <span class=\"muted\">{}</span>", ago(t, now), utc(t)),
    );
    fact(out, "Last seen", &seen)?;
    let failure = match &d.last_failure {
        Some(reason) => format!(
            "<span class=\"badge\">{}</span> {}",
            Esc(reason),
            Esc(d.last_failure_message.as_deref().unwrap_or(""))
        ),
        None => dash(),
    };
    fact(out, "Last failure", &failure)?;
    let drift =
        if d.drift_paths == 0 { dash() } else { format!("<span class=\"warn-text\">{} paths</span>", d.drift_paths) };
    fact(out, "Drift", &drift)?;
    fact(out, "Paused", if d.paused { "yes" } else { "no" })?;
    fact(
        out,
        "Status made",
        &d.status_created.map_or_else(dash, |t| format!("{} <span class=\"muted\">device clock</span>", utc(t))),
    )?;
    fact(out, "Enrolled", &format!("{} <span class=\"muted\">by {}</span>", utc(d.enrolled_at), Esc(&d.enrolled_by)))?;
    fact(out, "Key id", &format!("<span class=\"mono\">{}</span>", Esc(crate::fleetdb::short_key_id(&d.key_id))))?;
    fact(
        out,
        "Reports",
        &format!(
            "{} {} <span class=\"muted\">acknowledged to seq {}; {} routine records compacted on the device</span>",
            d.batches,
            if d.batches == 1 { "batch" } else { "batches" },
            d.acked,
            d.dropped_total
        ),
    )?;
    writeln!(out, "</dl>")?;

    writeln!(out, "<h2>Report history</h2>")?;
    let more = if (history.len() as u64) < total { "; older records are not shown" } else { "" };
    writeln!(
        out,
        "<p class=\"muted\">Newest first: {} of {total} records{more}. Times are the device's clock.</p>",
        history.len()
    )?;
    if history.is_empty() {
        return writeln!(out, "<p class=\"muted\">No reports received yet.</p>");
    }
    writeln!(
        out,
        "<div class=\"scroll\"><table id=\"history\" class=\"history\">\n\
         <thead><tr><th class=\"num\">Seq</th><th>When</th><th>Event</th>\
         <th class=\"num\">Release</th><th>Reason</th><th>Message</th></tr></thead>\n<tbody>"
    )?;
    for r in history {
        let (class, reason) = match &r.reason {
            Some(reason) => (" class=\"fail\"", format!("<span class=\"badge bad\">{}</span>", Esc(reason))),
            None => ("", dash()),
        };
        writeln!(
            out,
            "<tr{class}><td class=\"num\" title=\"key epoch {}\">{}</td>\
             <td class=\"when\" title=\"received {}\">{}</td>\
             <td>{}</td><td class=\"num\">{}</td><td>{reason}</td><td class=\"message\">{}</td></tr>",
            r.epoch,
            r.seq,
            utc(r.received_at),
            utc(r.at),
            Esc(&r.kind),
            r.release.map_or_else(dash, |n| n.to_string()),
            Esc(&r.message)
        )?;
    }
    writeln!(out, "</tbody>\n</table></div>")
}

/// A whole page: `title`, the header bar, then what `body` writes.
fn page(status: StatusCode, title: &str, now: u64, body: impl FnOnce(&mut String) -> fmt::Result) -> Response {
    let mut out = String::with_capacity(32 << 10);
    let written = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · Ferry</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header class=\"top\"><a class=\"brand\" href=\"/\">Ferry</a><span class=\"what\">fleet dashboard</span>\
         <span class=\"now\">as of {}</span></header>\n<main>\n",
        Esc(title),
        utc(now)
    )
    .and_then(|()| body(&mut out))
    .and_then(|()| out.write_str("</main>\n</body>\n</html>\n"));
    if written.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = (status, out).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(csp) = HeaderValue::from_str(content_security_policy()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// Nothing but the inline stylesheet, by hash; forms may only submit here.
fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash =
            base64::engine::general_purpose::STANDARD.encode(<sha2::Sha256 as sha2::Digest>::digest(STYLE.as_bytes()));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; base-uri 'none'; \
             frame-ancestors 'none'"
        )
    })
}

/// A page with a heading and one paragraph of plain text.
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    page(status, title, now(), |out| {
        writeln!(
            out,
            "<div class=\"notfound\"><h1>{}</h1>\n<p>{}</p>\n<p><a href=\"/\">Back to the fleet</a></p></div>",
            Esc(title),
            Esc(text)
        )
    })
}

fn not_found(device: Option<&str>) -> Response {
    let text = match device {
        Some(id) => format!("No device named “{}” is enrolled.", id.chars().take(128).collect::<String>()),
        None => "No such device.".into(),
    };
    message_page(StatusCode::NOT_FOUND, "Device not found", &text)
}

fn unknown_state(state: &str) -> Response {
    let known: Vec<&str> = DeviceState::ALL.iter().map(|s| s.name()).collect();
    let text = format!("Unknown state “{state}”: filter by one of {}.", known.join(", "));
    message_page(StatusCode::BAD_REQUEST, "Unknown filter", &text)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `2025-06-15 14:03:07 UTC`; a time past the year 9999 (a broken device clock) as its
/// number of seconds.
fn utc(t: u64) -> String {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    if t > LAST_SECOND_OF_9999 {
        return format!("@{t}");
    }
    let stamp = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string();
    format!("{} UTC", stamp.replace('T', " ").trim_end_matches('Z'))
}

#[cfg(test)]
mod tests;
