//! The fleet dashboard in a real browser: `bundler serve` holding devices in different
//! states (made by posting signed report batches, as devices do), then headless Chromium on
//! loopback loads `/`, its filters and device pages, and the DOM Chromium built is checked.
//! One screenshot of the fleet page is kept in the target directory for a person to look at.
//!
//! Chromium is required: CI installs the Debian package (`.ci/run`); without it the test
//! fails and says how to install it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proto::report::{DeviceStatus, ReportBatch, ReportRecord, REPORT_FORMAT};
use ferry_proto::SigningKey;
use ferry_tests::binaries;
use ferry_tests::serve_process::ServeProcess;

const BATCH_TYPE: &str = "application/x-ferry-report-batch";
const HOSTILE_ID: &str = "x<img src=x onerror=alert(1)>";
const HOSTILE_LABEL: &str = "\"><script>alert(2)</script>";

/// A running `bundler serve`; killed and reaped on drop.
struct Server {
    process: ServeProcess,
    addr: SocketAddr,
}

impl Server {
    fn start(db: &Path) -> Server {
        let mut cmd = Command::new(&binaries().bundler);
        cmd.arg("serve").arg("--db").arg(db).args(["--listen", "127.0.0.1:0", "--enroll-on-first-use"]);
        cmd.env_remove("FERRY_LOG");
        let process = ServeProcess::spawn(&mut cmd);
        let addr = process.addr;
        Server { process, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// Status, headers (lower-case names) and body of one plain HTTP/1.1 request.
fn http(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method == "POST" {
        request.push_str(&format!("Content-Type: {BATCH_TYPE}\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).and_then(|()| s.write_all(body)).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read answer");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, String::from_utf8_lossy(&raw[end + 4..]).into_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// One device's report: its status now and the records since its last batch.
struct Report {
    id: &'static str,
    channel: &'static str,
    labels: &'static [(&'static str, &'static str)],
    release: u64,
    health: &'static str,
    last_failure: Option<&'static str>,
    drift_paths: u64,
    paused: bool,
    /// (kind, release, reason, message), oldest first.
    records: &'static [(&'static str, u64, Option<&'static str>, &'static str)],
}

/// Posts `r` as a signed batch, as the device's agent would.
fn post(addr: SocketAddr, r: &Report) {
    let key = SigningKey::generate().expect("rng");
    let batch = ReportBatch {
        format: REPORT_FORMAT,
        device_id: r.id.into(),
        device_key: key.public(),
        created: 1_750_000_000,
        dropped: 0,
        status: DeviceStatus {
            channel: r.channel.into(),
            labels: r.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            release: Some(r.release),
            commit: Some("3f9c1e0a7b2d4c6e8f0a1b2c3d4e5f6a7b8c9d0e".into()),
            slot: Some("a".into()),
            health: r.health.into(),
            last_failure: r.last_failure.map(Into::into),
            drift_paths: r.drift_paths,
            paused: r.paused,
        },
        records: r
            .records
            .iter()
            .zip(1..)
            .map(|((kind, release, reason, message), seq)| ReportRecord {
                seq,
                at: 1_750_000_000 + seq * 600,
                kind: (*kind).into(),
                release: Some(*release),
                reason: reason.map(Into::into),
                message: (*message).into(),
            })
            .collect(),
    };
    let body = zstd::encode_all(&batch.sign(&key)[..], 3).expect("zstd");
    let (status, _, answer) = http(addr, "POST", "/v1/reports", &body);
    assert_eq!(status, 200, "{}: {answer}", r.id);
}

const FLEET: &[Report] = &[
    Report {
        id: "gw-healthy-1",
        channel: "stable",
        labels: &[("site", "plant7"), ("role", "pump")],
        release: 3,
        health: "healthy",
        last_failure: None,
        drift_paths: 0,
        paused: false,
        records: &[("applied", 2, None, "applied release 2"), ("applied", 3, None, "applied release 3")],
    },
    Report {
        id: "gw-healthy-2",
        channel: "stable",
        labels: &[("site", "plant9")],
        release: 3,
        health: "healthy",
        last_failure: None,
        drift_paths: 0,
        paused: true,
        records: &[("applied", 3, None, "applied release 3")],
    },
    Report {
        id: "gw-rolled",
        channel: "stable",
        labels: &[("site", "plant7")],
        release: 2,
        health: "rolled-back",
        last_failure: Some("health-failed"),
        drift_paths: 0,
        paused: false,
        records: &[
            ("applied", 2, None, "applied release 2"),
            ("switched", 3, None, "switched to release 3 in slot b"),
            ("rolled-back", 3, Some("health-failed"), "health check `systemctl is-active app` failed 3 times"),
        ],
    },
    Report {
        id: "gw-drift",
        channel: "beta",
        labels: &[("site", "lab")],
        release: 4,
        health: "healthy",
        last_failure: None,
        drift_paths: 2,
        paused: false,
        records: &[
            ("applied", 4, None, "applied release 4"),
            ("drift", 4, None, "2 paths differ from release 4: etc/app.conf, etc/extra.conf"),
        ],
    },
    Report {
        id: "gw-stale",
        channel: "stable",
        labels: &[("site", "plant3")],
        release: 1,
        health: "healthy",
        last_failure: None,
        drift_paths: 0,
        paused: false,
        records: &[("applied", 1, None, "applied release 1")],
    },
    Report {
        id: HOSTILE_ID,
        channel: "stable",
        labels: &[("note", HOSTILE_LABEL)],
        release: 3,
        health: "healthy",
        last_failure: None,
        drift_paths: 0,
        paused: false,
        records: &[("applied", 3, None, "<b>bold</b> & <i>loud</i>")],
    },
];

/// Headless Chromium, or a failure that says how to get it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the dashboard test drives headless Chromium, which is not installed: \
                 `apt-get install -y chromium` (Debian; .ci/run installs it)"
            )
        })
}

/// Runs Chromium headless on `url` with `extra` flags, in a fresh profile under `scratch`;
/// returns its stdout. Fails after a minute.
fn browse(scratch: &Path, extra: &[&str], url: &str) -> String {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let profile = scratch.join(format!("profile-{}", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Console messages on stderr, so a CSP violation shows.
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within a minute; stderr:\n{}", stderr.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let stderr = stderr.join().unwrap_or_default();
    assert!(status.success(), "chromium failed on {url} ({status}); stderr:\n{stderr}");
    assert!(!stderr.contains("Content Security Policy"), "the page broke its own CSP:\n{stderr}");
    stdout.join().unwrap_or_default()
}

/// The DOM Chromium built for `url`, serialized.
fn dom(scratch: &Path, url: &str) -> String {
    let dom = browse(scratch, &["--dump-dom"], url);
    assert!(dom.contains("</html>"), "no document from {url}:\n{dom}");
    // Nothing a device sent became an element.
    assert!(!dom.contains("<img") && !dom.contains("<script") && !dom.contains("<i>"), "markup injected:\n{dom}");
    dom
}

/// The part of `dom` from the element with `id` to the end of its table.
fn table<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in:\n{dom}"));
    let len = dom[start..].find("</table>").expect("end of table");
    &dom[start..start + len]
}

/// The text of each cell of each body row of a table, markup stripped and `&lt;`, `&gt;`,
/// `&amp;` decoded; with each row's `class` attribute.
fn rows(table: &str) -> Vec<(String, Vec<String>)> {
    let body = table.split_once("<tbody>").map_or("", |(_, b)| b);
    body.split("<tr")
        .skip(1)
        .map(|row| {
            let class = row
                .split_once('>')
                .and_then(|(attrs, _)| attrs.split_once("class=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or("", |(c, _)| c);
            let cells = row.split("<td").skip(1).map(|cell| {
                let inner = cell.split_once('>').map_or("", |(_, rest)| rest);
                let inner = inner.split_once("</td>").map_or(inner, |(c, _)| c);
                text(inner)
            });
            (class.to_string(), cells.collect())
        })
        .collect()
}

/// Markup stripped, the three escapes Chromium writes in text decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").trim().to_string()
}

fn devices_listed(dom: &str) -> Vec<String> {
    // Nine cells a device; "No devices match" is one cell across them.
    rows(table(dom, "fleet"))
        .into_iter()
        .filter(|(_, cells)| cells.len() == 9)
        .map(|(_, cells)| cells[0].clone())
        .collect()
}

fn row<'a>(rows: &'a [(String, Vec<String>)], first_cell: &str) -> &'a (String, Vec<String>) {
    rows.iter().find(|(_, cells)| cells[0] == first_cell).unwrap_or_else(|| panic!("no row {first_cell}: {rows:?}"))
}

#[test]
fn dashboard_shows_the_fleet_filters_and_device_history_in_a_browser() {
    let started = Instant::now();
    let browser = chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let server = Server::start(&db);
    let addr = server.addr;
    for report in FLEET {
        post(addr, report);
    }
    // Stale: last heard from three days ago (the server stamps arrival with its own clock).
    let conn = rusqlite::Connection::open(&db).expect("open db");
    conn.execute("UPDATE devices SET last_seen = last_seen - 3 * 86400 WHERE device_id = 'gw-stale'", [])
        .expect("age gw-stale");
    drop(conn);

    // Plain HTTP first: the headers a browser is told to obey, and the error pages.
    let (status, headers, body) = http(addr, "GET", "/", b"");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let csp = header(&headers, "content-security-policy").expect("CSP");
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe") && !csp.contains("script-src"), "{csp}");
    assert!(body.contains("&lt;img src=x onerror=alert(1)&gt;"), "the hostile id is not escaped");
    let (status, _, body) = http(addr, "GET", "/devices/nobody", b"");
    assert!(status == 404 && body.contains("No device named “nobody” is enrolled."), "{status}: {body}");
    let (status, _, body) = http(addr, "GET", "/?state=sideways", b"");
    assert!(status == 400 && body.contains("Unknown state “sideways”"), "{status}: {body}");
    assert_eq!(http(addr, "HEAD", "/", b"").0, 200);
    assert_eq!(http(addr, "POST", "/", b"").0, 405);
    assert_eq!(http(addr, "GET", "/devices/", b"").0, 404);

    // The fleet page as Chromium built it.
    let scratch = dir.path().join("chromium");
    let base = format!("http://{addr}");
    let fleet = dom(&scratch, &format!("{base}/"));
    assert!(fleet.contains("<title>Fleet · Ferry</title>"), "{fleet}");
    let listed = devices_listed(&fleet);
    assert_eq!(listed, ["gw-drift", "gw-healthy-1", "gw-healthy-2", "gw-rolled", "gw-stale", HOSTILE_ID]);
    let devices = rows(table(&fleet, "fleet"));
    // Device, channel, labels, release, health, last seen, last failure, drift, paused.
    let (class, cells) = row(&devices, "gw-rolled");
    assert_eq!(class, "attention");
    assert_eq!((cells[1].as_str(), cells[3].as_str(), cells[4].as_str()), ("stable", "2", "rolled-back"));
    assert_eq!(cells[6], "health-failed");
    let (class, cells) = row(&devices, "gw-stale");
    assert_eq!((class.as_str(), cells[5].as_str()), ("stale", "3d ago"));
    let (_, cells) = row(&devices, "gw-drift");
    assert_eq!((cells[1].as_str(), cells[7].as_str()), ("beta", "2 paths"));
    let (_, cells) = row(&devices, "gw-healthy-1");
    assert_eq!((cells[2].as_str(), cells[4].as_str()), ("site=plant7role=pump", "healthy"));
    assert!(cells[5].ends_with("s ago"), "seen seconds ago: {cells:?}");
    assert_eq!(row(&devices, "gw-healthy-2").1[8], "paused");
    assert_eq!(row(&devices, HOSTILE_ID).1[2], format!("note={HOSTILE_LABEL}"));
    // Per release: running now, applied ever, healthy now, rolled back ever.
    let releases: Vec<Vec<String>> = rows(table(&fleet, "releases")).into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        releases,
        [
            ["beta", "4", "1", "1", "1", "0"],
            ["stable", "3", "3", "3", "3", "1"],
            ["stable", "2", "1", "2", "0", "0"],
            ["stable", "1", "1", "1", "1", "0"]
        ]
    );

    // Filters: by channel, by state, and both.
    let beta = dom(&scratch, &format!("{base}/?channel=beta"));
    assert_eq!(devices_listed(&beta), ["gw-drift"]);
    assert_eq!(rows(table(&beta, "releases")).len(), 1, "the release summary follows the channel filter");
    assert_eq!(devices_listed(&dom(&scratch, &format!("{base}/?state=failing"))), ["gw-rolled"]);
    for (query, expected) in [
        ("state=healthy", &["gw-healthy-1", "gw-healthy-2", HOSTILE_ID][..]),
        ("state=rolled-back", &["gw-rolled"]),
        ("state=drift", &["gw-drift"]),
        ("state=stale", &["gw-stale"]),
        ("channel=stable&state=drift", &[]),
        ("channel=beta&state=drift", &["gw-drift"]),
    ] {
        let (status, _, body) = http(addr, "GET", &format!("/?{query}"), b"");
        assert_eq!(status, 200, "{query}");
        let listed = devices_listed(&body);
        assert_eq!(listed.iter().map(|s| s.as_str()).collect::<Vec<_>>(), expected, "{query}");
    }

    // A device page: status, then history newest first with the failure and its reason.
    let page = dom(&scratch, &format!("{base}/devices/gw-rolled"));
    assert!(page.contains("<title>gw-rolled · Ferry</title>"), "{page}");
    let callout = page.split_once("class=\"callout\"").map(|(_, rest)| text(rest.split("</p>").next().unwrap_or("")));
    assert_eq!(
        callout.as_deref(),
        Some("Last failure health-failed health check `systemctl is-active app` failed 3 times")
    );
    let history = rows(table(&page, "history"));
    // Seq, when, event, release, reason, message.
    let summary: Vec<(&str, &str, &str, &str)> =
        history.iter().map(|(class, c)| (class.as_str(), c[0].as_str(), c[2].as_str(), c[4].as_str())).collect();
    assert_eq!(
        summary,
        [("fail", "3", "rolled-back", "health-failed"), ("", "2", "switched", "—"), ("", "1", "applied", "—")]
    );
    assert_eq!(history[0].1[5], "health check `systemctl is-active app` failed 3 times");

    // The hostile device's page, through the link the fleet page gives it.
    let href = fleet
        .split("href=\"/devices/")
        .find(|s| s.starts_with("x%3Cimg"))
        .and_then(|s| s.split_once('"'))
        .map(|(h, _)| h)
        .expect("link to the hostile device");
    let page = dom(&scratch, &format!("{base}/devices/{href}"));
    let h1 = page.split_once("<h1 id=\"device\">").map(|(_, rest)| rest.split("<span").next().unwrap_or(""));
    assert_eq!(h1.map(text).as_deref(), Some(HOSTILE_ID));
    assert_eq!(rows(table(&page, "history"))[0].1[5], "<b>bold</b> & <i>loud</i>");

    // One screenshot, for a person to look at.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).expect("mkdir");
    let png = shots.join("fleet.png");
    let _ = std::fs::remove_file(&png);
    browse(&scratch, &[&format!("--screenshot={}", png.display()), "--window-size=1280,900"], &format!("{base}/"));
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10 << 10, "screenshot {} is {size} bytes", png.display());
    eprintln!(
        "dashboard checked with {} in {:.1?}; screenshot: {}",
        browser.display(),
        started.elapsed(),
        png.display()
    );
}
