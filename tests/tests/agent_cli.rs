//! `ferry-agent`'s command line as a shell user meets it: output piped into a reader that
//! stops early (`ferry-agent status | head`) ends quietly, never with a panic.

use std::process::Command;

use ferry_tests::fixture::{Device, Operator};

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let op = Operator::new();
    let dev = Device::new("stable", &op.root1(), "");
    dev.status();
    let agent = ferry_tests::binaries().agent.display().to_string();
    let config = dev.config.display().to_string();
    // `:` exits at once without reading, so the agent mostly writes into a closed pipe.
    let script = r#"for i in $(seq 20); do
        for cmd in "status --json" "status" "history --json -n 100" "identity"; do
            "$AGENT" --config "$CONFIG" $cmd 2>>"$ERR" | : ; echo "${PIPESTATUS[0]}"
        done
    done"#;
    let err = dev.dir.path().join("stderr.log");
    let out = Command::new("bash")
        .args(["-c", script])
        .env("AGENT", &agent)
        .env("CONFIG", &config)
        .env("ERR", &err)
        .output()
        .expect("bash");
    let codes = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(codes.lines().count() == 80 && codes.lines().all(|c| c == "0"), "exit codes: {codes}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
