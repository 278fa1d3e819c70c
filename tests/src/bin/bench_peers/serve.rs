//! Serving: `bundler serve` against nginx serving the same mirror directory, loaded by
//! `wrk` with many concurrent connections on loopback: conditional polls of the channel
//! index (`If-None-Match` with the server's own ETag, answered 304) and downloads of one
//! payload file (200, whole body).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_tests::serve_process::ServeProcess;

use crate::util;

/// One server's figures.
#[derive(Debug, Clone)]
pub struct Served {
    /// 304 responses per second.
    pub polls_per_sec: f64,
    /// Payload downloads per second.
    pub payloads_per_sec: f64,
    /// Non-2xx/3xx responses and socket errors seen by wrk, over both loads.
    pub errors: String,
}

/// Both servers' figures.
#[derive(Debug)]
pub struct Serving {
    /// `bundler serve`.
    pub bundler: Served,
    /// nginx.
    pub nginx: Served,
    /// The payload downloaded.
    pub payload_bytes: u64,
    /// wrk connections.
    pub connections: usize,
    /// Seconds per load.
    pub seconds: u64,
}

/// Serves `mirror` with each server and loads it.
pub fn measure(
    bundler: &Path,
    mirror: &Path,
    channel: &str,
    payload: &Path,
    work: &Path,
    connections: usize,
    seconds: u64,
) -> Result<Serving> {
    std::fs::create_dir_all(work)?;
    let index = format!("channels/{channel}/index");
    let payload_rel = payload.strip_prefix(mirror).context("the payload is not in the mirror")?.display().to_string();
    let payload_bytes = std::fs::metadata(payload)?.len();

    let mut server = ServeProcess::spawn(
        Command::new(bundler)
            .arg("serve")
            .arg("--mirror")
            .arg(mirror)
            .arg("--db")
            .arg(work.join("fleet.db"))
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn"),
    );
    let base = format!("http://{}", server.addr);
    let ours = load(&base, &index, &payload_rel, connections, seconds);
    server.kill();
    let bundler_figures = ours?;

    let mut nginx = Nginx::start(mirror, work)?;
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let theirs = load(&base, &index, &payload_rel, connections, seconds);
    nginx.stop();
    Ok(Serving { bundler: bundler_figures, nginx: theirs?, payload_bytes, connections, seconds })
}

fn load(base: &str, index: &str, payload: &str, connections: usize, seconds: u64) -> Result<Served> {
    let index_url = format!("{base}/{index}");
    let headers = util::output(Command::new("curl").args(["-sfI", &index_url]))?;
    let etag = headers
        .lines()
        .find_map(|l| l.strip_prefix("etag:").or_else(|| l.strip_prefix("ETag:")))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("{index_url} sent no ETag"))?;
    let status = util::output(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("If-None-Match: {etag}"),
        &index_url,
    ]))?;
    if status.trim() != "304" {
        bail!("{index_url} answered {status} to its own ETag, not 304");
    }
    let polls = wrk(&index_url, Some(&format!("If-None-Match: {etag}")), connections, seconds)?;
    let payloads = wrk(&format!("{base}/{payload}"), None, connections, seconds)?;
    Ok(Served {
        polls_per_sec: polls.0,
        payloads_per_sec: payloads.0,
        errors: [polls.1, payloads.1].into_iter().filter(|e| !e.is_empty()).collect::<Vec<_>>().join("; "),
    })
}

/// Requests per second, and wrk's error lines.
fn wrk(url: &str, header: Option<&str>, connections: usize, seconds: u64) -> Result<(f64, String)> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--timeout", "10s"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = util::output(cmd.arg(url))?;
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk printed no Requests/sec:\n{out}"))?;
    let errors = out
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(", ");
    Ok((rps, errors))
}

/// nginx serving a directory on a free loopback port, as a child process.
struct Nginx {
    child: Child,
    port: u16,
    prefix: PathBuf,
    conf: PathBuf,
}

impl Nginx {
    fn start(root: &Path, work: &Path) -> Result<Nginx> {
        let prefix: PathBuf = work.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\nevents {{ \
                 worker_connections 4096; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  \
                 default_type application/octet-stream;\n  client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n  \
                 fastcgi_temp_path {p}/tmp;\n  uwsgi_temp_path {p}/tmp;\n  scgi_temp_path {p}/tmp;\n  server {{\n    \
                 listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n",
                p = prefix.display(),
                root = root.display()
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("logs").join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Nginx { child, port, prefix: prefix.clone(), conf };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(20) || nginx.child.try_wait()?.is_some() {
                nginx.stop();
                let log = std::fs::read_to_string(prefix.join("logs").join("error.log")).unwrap_or_default();
                bail!("nginx did not start on port {port}: {}", log.trim());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }

    /// Stops the master and its workers (`nginx -s stop`: SIGTERM to the master, which
    /// stops its workers; a SIGKILL would orphan them), and reaps the master.
    fn stop(&mut self) {
        let stopped = Command::new("nginx")
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
