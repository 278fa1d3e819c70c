//! Tests of reading `ferry.toml` and of running hooks.

#![allow(clippy::unwrap_used)]

use super::run::*;
use super::spec::*;
use super::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::thread;
use std::time::Instant;

fn spec(text: &str) -> HookSpec {
    HookSpec::parse(text, Path::new("/slot/ferry.toml")).unwrap()
}

fn parse_err(text: &str) -> String {
    let err = HookSpec::parse(text, Path::new("/slot/ferry.toml")).unwrap_err();
    assert!(matches!(err, HookError::Malformed { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains("/slot/ferry.toml"), "names the file: {message}");
    message
}

fn env(slot: &Path) -> HookEnv {
    HookEnv {
        release: 42,
        commit: "3f1c0e4b9a7d2c5e8f6a1b0c9d8e7f6a5b4c3d2e".into(),
        slot: "b".into(),
        previous_slot: None,
        slot_path: slot.to_path_buf(),
        channel: "stable".into(),
    }
}

fn limits() -> HookLimits {
    HookLimits::default()
}

#[test]
fn full_file_parses() {
    let s = spec(
        r#"
        [hooks]
        activate = ["/bin/sh", "-c", "systemctl restart myapp"]
        health = "curl -fsS localhost:8080/health"
        rollback = "systemctl restart myapp"
        activate_timeout = "90s"
        health_timeout = "10s"
        health_retries = 5
        health_interval = "1m 30s"
        rollback_timeout = "500ms"
        "#,
    );
    assert_eq!(
        s.activate(),
        Some(&HookCommand::Argv(vec!["/bin/sh".into(), "-c".into(), "systemctl restart myapp".into()]))
    );
    assert_eq!(s.health(), Some(&HookCommand::Shell("curl -fsS localhost:8080/health".into())));
    assert_eq!(s.activate_timeout(), Duration::from_secs(90));
    assert_eq!(s.health_retries(), 5);
    assert_eq!(s.health_interval(), Duration::from_secs(90));
    assert_eq!(s.rollback_timeout(), Duration::from_millis(500));
}

#[test]
fn defaults_are_explicit() {
    let s = spec("[hooks]\nhealth = \"true\"\n");
    assert_eq!(s.activate(), None);
    assert_eq!(s.activate_timeout(), DEFAULT_ACTIVATE_TIMEOUT);
    assert_eq!(s.health_timeout(), DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(s.health_retries(), DEFAULT_HEALTH_RETRIES);
    assert_eq!(s.health_interval(), DEFAULT_HEALTH_INTERVAL);
    assert_eq!(spec(""), HookSpec::default());
    assert!(!spec("[hooks]\n").has_any());
}

#[test]
fn missing_file_means_no_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let s = load(dir.path()).unwrap();
    assert_eq!(s, HookSpec::default());
    assert!(!s.has_any());
    assert_eq!(run_activate(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
    assert_eq!(run_health(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
    assert_eq!(run_rollback(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
}

#[test]
fn load_reads_the_file_in_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(FILE_NAME), "[hooks]\nactivate = \"true\"\n").unwrap();
    assert_eq!(load(dir.path()).unwrap().activate(), Some(&HookCommand::Shell("true".into())));
    fs::write(dir.path().join(FILE_NAME), "[hooks]\nhelth = \"true\"\n").unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&dir.path().join(FILE_NAME).display().to_string()), "{err}");
}

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let message = parse_err("[hooks]\nactivate = \"true\"\nhelth = \"curl x\"\n");
    assert!(message.contains("helth"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("`hooks.helth`"), "{message}");

    let message = parse_err("[hooks]\n[deploy]\nx = 1\n");
    assert!(message.contains("deploy"), "{message}");
}

#[test]
fn bad_values_name_the_key() {
    let message = parse_err("[hooks]\nhealth_timeout = \"10 parsecs\"\n");
    assert!(message.contains("hooks.health_timeout") && message.contains("10 parsecs"), "{message}");
    let message = parse_err("[hooks]\nhealth_retries = -1\n");
    assert!(message.contains("hooks.health_retries"), "{message}");
    let message = parse_err("[hooks]\nactivate = 7\n");
    assert!(message.contains("hooks.activate") && message.contains("a command"), "{message}");
    let message = parse_err("[hooks]\nactivate = []\n");
    assert!(message.contains("hooks.activate") && message.contains("empty"), "{message}");
    let message = parse_err("[hooks]\nhealth = \"  \"\n");
    assert!(message.contains("hooks.health"), "{message}");
    let message = parse_err("[hooks]\nrollback_timeout = \"0s\"\n");
    assert!(message.contains("hooks.rollback_timeout"), "{message}");
    let message = parse_err("[hooks\nactivate = \"true\"\n");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn success_and_failure_with_exit_code_and_output_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ok = spec("[hooks]\nactivate = [\"/bin/sh\", \"-c\", \"echo starting\"]\n");
    assert_eq!(run_activate(&ok, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);

    let failing = spec("[hooks]\nactivate = \"echo to-stdout; echo to-stderr >&2; exit 3\"\n");
    match run_activate(&failing, &env(dir.path()), &limits()).unwrap() {
        HookOutcome::Failed { status, output_tail } => {
            assert!(status.contains('3'), "{status}");
            assert!(output_tail.contains("to-stdout"), "{output_tail}");
            assert!(output_tail.contains("to-stderr"), "{output_tail}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn output_tail_is_bounded_and_keeps_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("[hooks]\nrollback = \"head -c 200000 /dev/zero | tr '\\\\0' x; echo; echo THE-END; exit 1\"\n");
    match run_rollback(&s, &env(dir.path()), &limits()).unwrap() {
        HookOutcome::Failed { output_tail, .. } => {
            assert!(output_tail.len() <= OUTPUT_TAIL_BYTES, "{}", output_tail.len());
            assert!(output_tail.ends_with("THE-END"), "{}", &output_tail[output_tail.len() - 20..]);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn program_that_cannot_start_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("[hooks]\nactivate = [\"/nonexistent/ferry-hook\"]\n");
    match run_activate(&s, &env(dir.path()), &limits()).unwrap() {
        HookOutcome::Failed { status, .. } => {
            assert!(status.contains("could not start"), "{status}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn relative_program_is_resolved_in_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("bin")).unwrap();
    symlink("/bin/sh", dir.path().join("bin/sh")).unwrap();
    let s = spec("[hooks]\nactivate = [\"./bin/sh\", \"-c\", \"echo ran > ran.txt\"]\n");
    assert_eq!(run_activate(&s, &env(dir.path()), &limits()).unwrap(), HookOutcome::Ok);
    assert_eq!(fs::read_to_string(dir.path().join("ran.txt")).unwrap(), "ran\n");
}

#[test]
fn a_relative_slot_path_is_made_absolute_for_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("bin")).unwrap();
    symlink("/bin/sh", dir.path().join("bin/sh")).unwrap();
    let s = spec("[hooks]\nactivate = [\"./bin/sh\", \"-c\", \"echo $FERRY_SLOT_PATH > where.txt\"]\n");
    // Relative to the agent's working directory, as a relative `state_dir` makes it.
    let cwd = std::env::current_dir().unwrap();
    let relative: PathBuf = std::iter::repeat_n("..", cwd.components().count() - 1)
        .collect::<PathBuf>()
        .join(dir.path().strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let hook_env = HookEnv { slot_path: relative, ..env(dir.path()) };
    assert_eq!(run_activate(&s, &hook_env, &limits()).unwrap(), HookOutcome::Ok);
    let seen = fs::read_to_string(dir.path().join("where.txt")).unwrap();
    assert!(Path::new(seen.trim()).is_absolute(), "{seen}");
    assert_eq!(fs::canonicalize(seen.trim()).unwrap(), fs::canonicalize(dir.path()).unwrap());
}

fn alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name; a zombie is dead.
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()), Some("Z" | "X")),
        Err(_) => false,
    }
}

#[test]
fn timeout_kills_the_child_and_its_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        "[hooks]\nactivate = \"sleep 100 & echo $! > grandchild.pid; echo waiting; sleep 100\"\n\
         activate_timeout = \"1s\"\n",
    );
    let started = Instant::now();
    let outcome = run_activate(&s, &env(dir.path()), &limits()).unwrap();
    let elapsed = started.elapsed();
    match &outcome {
        HookOutcome::TimedOut { after, output_tail } => {
            assert_eq!(*after, Duration::from_secs(1));
            assert!(output_tail.contains("waiting"), "{output_tail}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "killed promptly: {elapsed:?}");

    let grandchild = fs::read_to_string(dir.path().join("grandchild.pid")).unwrap();
    let grandchild = grandchild.trim();
    let give_up = Instant::now() + Duration::from_secs(3);
    while alive(grandchild) && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(grandchild), "grandchild {grandchild} survived the timeout");
}

#[test]
fn agent_limit_caps_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("[hooks]\nrollback = \"sleep 100\"\nrollback_timeout = \"1h\"\n");
    let limits = HookLimits { max_timeout: Duration::from_millis(300), ..HookLimits::default() };
    let started = Instant::now();
    let outcome = run_rollback(&s, &env(dir.path()), &limits).unwrap();
    assert!(matches!(outcome, HookOutcome::TimedOut { after, .. } if after == Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

const THIRD_TIME_LUCKY: &str = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; \
     echo attempt $n $FERRY_ATTEMPT; [ $n -ge 3 ]";

fn counting_spec(retries: u32) -> HookSpec {
    spec(&format!("[hooks]\nhealth = \"{THIRD_TIME_LUCKY}\"\nhealth_retries = {retries}\nhealth_interval = \"10ms\"\n"))
}

#[test]
fn health_retries_until_the_first_success() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run_health(&counting_spec(5), &env(dir.path()), &limits()).unwrap();
    assert_eq!(outcome, HookOutcome::Ok);
    assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap().trim(), "3", "stops at success");
}

#[test]
fn health_gives_up_after_its_retries() {
    let dir = tempfile::tempdir().unwrap();
    match run_health(&counting_spec(1), &env(dir.path()), &limits()).unwrap() {
        HookOutcome::Failed { output_tail, .. } => {
            assert_eq!(output_tail, "attempt 2 2", "last attempt's output");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap().trim(), "2");

    let dir = tempfile::tempdir().unwrap();
    let limits = HookLimits { max_health_retries: 0, ..HookLimits::default() };
    assert!(!run_health(&counting_spec(5), &env(dir.path()), &limits).unwrap().is_ok());
    assert_eq!(fs::read_to_string(dir.path().join("count")).unwrap().trim(), "1", "capped by the agent");
}

#[test]
fn hooks_see_ferry_variables_and_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("[hooks]\nactivate = \"env > env.txt\"\n");
    let mut hook_env = env(dir.path());
    assert!(run_activate(&s, &hook_env, &limits()).unwrap().is_ok());
    let text = fs::read_to_string(dir.path().join("env.txt")).unwrap();
    let vars: std::collections::HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("FERRY_RELEASE"), Some(&"42"));
    assert_eq!(vars.get("FERRY_COMMIT"), Some(&"3f1c0e4b9a7d2c5e8f6a1b0c9d8e7f6a5b4c3d2e"));
    assert_eq!(vars.get("FERRY_SLOT"), Some(&"b"));
    assert_eq!(vars.get("FERRY_PREVIOUS_SLOT"), Some(&""));
    assert_eq!(vars.get("FERRY_SLOT_PATH").map(PathBuf::from), Some(dir.path().to_path_buf()));
    assert_eq!(vars.get("FERRY_CHANNEL"), Some(&"stable"));
    assert_eq!(vars.get("FERRY_HOOK"), Some(&"activate"));
    assert!(vars.contains_key("PATH"));
    // `cargo test` runs us with CARGO_* set; none of it may leak into hooks.
    assert!(!vars.keys().any(|k| k.starts_with("CARGO") || k.starts_with("RUST_")), "{text}");

    hook_env.previous_slot = Some("a".into());
    assert!(run_activate(&s, &hook_env, &limits()).unwrap().is_ok());
    let text = fs::read_to_string(dir.path().join("env.txt")).unwrap();
    assert!(text.lines().any(|l| l == "FERRY_PREVIOUS_SLOT=a"), "{text}");
}

#[test]
fn tail_keeps_the_last_bytes() {
    let mut tail = Tail::default();
    tail.push(&[b'a'; 3000]);
    tail.push(&[b'b'; 3000]);
    assert_eq!(tail.0.len(), OUTPUT_TAIL_BYTES);
    assert_eq!(tail.0[OUTPUT_TAIL_BYTES - 1], b'b');
    assert_eq!(tail.0[0], b'a');
    tail.push(&[b'c'; 10_000]);
    assert!(tail.0.iter().all(|&b| b == b'c'));
}
