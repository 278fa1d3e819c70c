//! The daemon's transport options: HTTPS with a private CA given as `[fetch] ca_file` (on
//! top of the system roots), and an HTTP proxy given as `[fetch] proxy`.
//!
//! The HTTPS mirror is Python's `http.server` wrapped in TLS, with a CA and a server
//! certificate for 127.0.0.1 made by the `openssl` CLI at test time. The proxy is the chaos
//! server, which answers absolute-form requests (`GET http://host/path`) as a forward proxy
//! for its one mirror.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ferry_tests::chaos::{ChaosServer, Schedule};
use ferry_tests::daemon::{assert_applied, run_once, World, FAST_FETCH};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (CI has it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem).
fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca =
        vec!["req", "-x509", "-days", "2", "-subj", "/CN=Ferry Test CA", "-keyout", "ca.key", "-out", "ca.pem"];
    ca.extend(ec);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "server.csr"];
    csr.extend(ec);
    openssl(dir, &csr);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    );
}

/// A child process killed when dropped, even when a test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python's static file server over TLS on 127.0.0.1; returns the child and its port.
fn https_server(root: &Path, cert: &Path, key: &Path) -> (KillOnDrop, u16) {
    let script = "import functools,http.server,ssl,sys\n\
        class Quiet(http.server.SimpleHTTPRequestHandler):\n    log_message=lambda *a:None\n\
        h=functools.partial(Quiet,directory=sys.argv[1])\n\
        s=http.server.ThreadingHTTPServer(('127.0.0.1',0),h)\n\
        c=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        c.load_cert_chain(sys.argv[2],sys.argv[3])\n\
        s.socket=c.wrap_socket(s.socket,server_side=True)\n\
        print(s.server_address[1],flush=True)\n\
        s.serve_forever()\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root)
        .arg(cert)
        .arg(key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (CI has it)");
    let stdout = child.stdout.take().expect("stdout");
    let guard = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("port");
    (guard, line.trim().parse().expect("port number"))
}

#[test]
fn an_https_mirror_is_trusted_only_with_its_ca() {
    let world = World::new("stable", 4, 64 << 10);
    let certs = world.op.dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    make_certificates(&certs);
    let (_server, port) = https_server(&world.op.mirror, &certs.join("cert.pem"), &certs.join("key.pem"));
    let url = format!("https://127.0.0.1:{port}/");

    // Without the CA the server's certificate is not trusted: nothing is applied.
    let untrusting = world.device(std::slice::from_ref(&url), FAST_FETCH);
    let once = run_once(&untrusting, &[]);
    assert_eq!(once.run.code, 1, "{}", once.run.all());
    assert!(once.run.stdout.contains("not converged: io:"), "{}", once.run.all());
    assert!(untrusting.status()["applied"].is_null());

    // With it, the device converges over TLS.
    let ca = certs.join("ca.pem").display().to_string();
    let trusting = world.device(std::slice::from_ref(&url), &format!("{FAST_FETCH}ca_file = {ca:?}\n"));
    let once = run_once(&trusting, &[]);
    assert_eq!(once.run.code, 0, "{}", once.run.all());
    assert_applied(&trusting, 1, "a", &world.expected[0]);
}

#[test]
fn downloads_go_through_the_configured_proxy() {
    let world = World::new("stable", 4, 64 << 10);
    let proxy = ChaosServer::start(&world.op.mirror, Schedule::clean());
    // The mirror's host name does not resolve: only the proxy can reach it.
    let mirror = "http://ferry-mirror.invalid/".to_string();
    let direct = world.device(std::slice::from_ref(&mirror), FAST_FETCH);
    let once = run_once(&direct, &[]);
    assert_eq!(once.run.code, 1, "{}", once.run.all());
    assert_eq!(proxy.requests(), 0);

    let extra = format!("{FAST_FETCH}proxy = {:?}\n", proxy.url());
    let proxied = world.device(&[mirror], &extra);
    let once = run_once(&proxied, &[("NO_PROXY", String::new()), ("no_proxy", String::new())]);
    assert_eq!(once.run.code, 0, "{}", once.run.all());
    assert_applied(&proxied, 1, "a", &world.expected[0]);
    assert!(proxy.requests_for("payloads/") >= 1, "the payload did not come through the proxy");
}

#[test]
fn a_directory_mirror_is_read_when_present_and_skipped_while_absent() {
    let world = World::new("stable", 3, 32 << 10);
    let stick = world.op.dir.path().join("usb-stick");
    let stick_str = stick.display().to_string();
    let dev = world.device(std::slice::from_ref(&stick_str), FAST_FETCH);

    // The stick is not plugged in: nothing to read, not converged, nothing applied.
    let once = run_once(&dev, &[]);
    assert_eq!(once.run.code, 1, "{}", once.run.all());
    assert!(once.run.stdout.contains("no mirror is configured or present"), "{}", once.run.all());
    assert!(dev.status()["applied"].is_null());

    // Plugged in (what `bundler export` writes): verified and applied like an HTTP mirror.
    let mut export = world.op.bundler(&["export", "--mirror"]);
    export.arg(&world.op.mirror).args(["--channel", "stable", "--to"]).arg(&stick);
    ferry_tests::run(&mut export).ok();
    let once = run_once(&dev, &[]);
    assert_eq!(once.run.code, 0, "{}", once.run.all());
    assert_applied(&dev, 1, "a", &world.expected[0]);

    // A tampered payload on the stick is refused with its typed reason, like over HTTP.
    let mut w2 = world;
    w2.write_random("data", 3, 32 << 10, 2);
    w2.publish("two", &[]);
    let mut export = w2.op.bundler(&["export", "--mirror"]);
    export.arg(&w2.op.mirror).args(["--channel", "stable", "--to"]).arg(&stick);
    ferry_tests::run(&mut export).ok();
    for entry in std::fs::read_dir(stick.join("payloads")).expect("payloads") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).expect("write");
    }
    let once = run_once(&dev, &[]);
    assert_eq!(once.run.code, 1, "{}", once.run.all());
    assert!(once.run.stdout.contains("digest-mismatch"), "{}", once.run.all());
    assert_eq!(dev.status()["applied"]["release"], 1);
}
