//! The docs are tests: every command an operator is told to type must work.
//!
//! For each document (one `#[test]` each, so a document that disappears fails loudly):
//! * every fenced block tagged `sh` is executed, in order, all of them concatenated into one
//!   `bash -Eeuo pipefail` script (variables and files carry over between blocks), run in a
//!   fresh temporary directory with `PATH` starting at the freshly built `bundler` and
//!   `ferry-agent` (from [`ferry_tests::binaries`]) and `FERRY_REPO` set to the repository
//!   root, so a document can copy `"$FERRY_REPO"/deploy/examples/...`;
//! * a block tagged with a `file=PATH` attribute (```` ```toml file=dev/agent.toml ````) is
//!   written to `PATH` (relative to that directory) at that point of the script, so the
//!   configuration a reader sees is the one the commands use;
//! * a block tagged `sh-device` (commands that need root, systemd or a real device) is not
//!   run: every `ferry-agent …` / `bundler …` command line in it must parse (it is run with
//!   `--help` appended, which makes clap check every argument before it), the block must be
//!   valid bash (`bash -n`), and every `deploy/…` path it names must exist in the repository;
//! * anything else (`text`, `json`, `sh-setup`, plain `toml`, …) is only shown.
//!
//! The script gets no git identity or user config from the machine (`HOME` is a fresh
//! directory; author and committer are set in the environment), no proxy, and nothing on
//! stdin. It runs in its own process group: whatever it leaves running is killed, and
//! leaving a process behind fails the document, since a reader pasting the commands would be
//! left with it too. A failure names the document line of the command that failed, its
//! block, and the tail of the output; the whole log stays in `target/docs/<doc>.log` and the
//! working directory is kept.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::{binaries, workspace_root};

/// Longest a document's script may run.
const TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Lines of output shown when a document fails.
const TAIL_LINES: usize = 60;
/// Heredoc delimiter for `file=` blocks; a block containing it is refused.
const HEREDOC_END: &str = "FERRY_DOCS_END_OF_FILE";

#[test]
fn operator_guide_runs() {
    check_document("docs/operator-guide.md");
}

#[test]
fn device_guide_runs() {
    check_document("docs/device-guide.md");
}

#[test]
fn formats_examples_regenerate() {
    check_document("docs/formats.md");
}

#[test]
fn readme_walkthrough_runs() {
    check_document("README.md");
}

/// One fenced block of a Markdown document.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    fence_line: usize,
    /// The language tag (`sh`, `toml`, …), empty when none.
    lang: String,
    /// `file=PATH`, when given.
    file: Option<String>,
    /// The lines between the fences.
    lines: Vec<String>,
}

/// Splits a Markdown document into its fenced blocks (backtick fences of three or more,
/// indented at most three spaces, closed by a fence at least as long).
fn parse_blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        match &mut open {
            Some((len, block)) => {
                if indent <= 3 && ticks >= *len && trimmed[ticks..].trim().is_empty() {
                    let (_, block) = open.take().ok_or("unreachable: no open block")?;
                    blocks.push(block);
                } else {
                    block.lines.push(line.to_string());
                }
            }
            None if indent <= 3 && ticks >= 3 => {
                let info = trimmed[ticks..].trim();
                let mut words = info.split_whitespace();
                let lang = words.next().unwrap_or("").to_string();
                let mut file = None;
                for word in words {
                    match word.strip_prefix("file=") {
                        Some(path) if !path.is_empty() => file = Some(path.to_string()),
                        _ if lang == "sh" || lang == "sh-device" => {
                            return Err(format!("line {}: unknown attribute {word:?} on a {lang} block", i + 1))
                        }
                        _ => {}
                    }
                }
                if file.is_some() && lang.starts_with("sh") {
                    return Err(format!("line {}: file= is for configuration blocks, not {lang}", i + 1));
                }
                open = Some((ticks, Block { fence_line: i + 1, lang, file, lines: Vec::new() }));
            }
            None => {}
        }
    }
    match open {
        Some((_, block)) => Err(format!("the block opened at line {} is never closed", block.fence_line)),
        None => Ok(blocks),
    }
}

/// A bash script made of a document's blocks, and for each script line the document line
/// it came from.
struct Script {
    text: String,
    doc_line: Vec<usize>,
}

impl Script {
    fn push(&mut self, line: &str, doc_line: usize) {
        self.text.push_str(line);
        self.text.push('\n');
        self.doc_line.push(doc_line);
    }
}

/// Quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script for `sh` and `file=` blocks. `err_file` receives the line of a failing command.
fn build_script(doc: &str, blocks: &[Block]) -> Result<Script, String> {
    let mut s = Script { text: String::new(), doc_line: Vec::new() };
    s.push("set -Eeuo pipefail", 0);
    s.push(r#"trap 'printf "%s\n" "$LINENO" >> "$FERRY_DOCS_ERR_FILE"' ERR"#, 0);
    for block in blocks {
        let at = block.fence_line;
        if let Some(path) = &block.file {
            if path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(format!("{doc}:{at}: file={path} must be a relative path inside the working directory"));
            }
            if block.lines.iter().any(|l| l == HEREDOC_END) {
                return Err(format!("{doc}:{at}: the block contains the line {HEREDOC_END}"));
            }
            s.push(&format!("printf '\\n==> {doc}:{at}: writing %s\\n' {}", quote(path)), at);
            s.push(&format!("mkdir -p -- \"$(dirname -- {})\"", quote(path)), at);
            s.push(&format!("cat > {} <<'{HEREDOC_END}'", quote(path)), at);
            for (i, line) in block.lines.iter().enumerate() {
                s.push(line, at + 1 + i);
            }
            s.push(HEREDOC_END, at);
        } else if block.lang == "sh" {
            s.push(&format!("printf '\\n==> {doc}:{at}\\n'"), at);
            for (i, line) in block.lines.iter().enumerate() {
                s.push(line, at + 1 + i);
            }
        }
    }
    Ok(s)
}

/// Runs every check on one document and panics with a readable report on failure.
fn check_document(rel: &str) {
    let root = workspace_root();
    let text = fs::read_to_string(root.join(rel))
        .unwrap_or_else(|e| panic!("{rel}: cannot read it ({e}); the docs test expects this document to exist"));
    if let Err(report) = check_text(rel, &text, &root, true) {
        panic!("{report}");
    }
}

/// Checks a document's text: `sh-device` blocks, then the script. On failure, the report
/// to show; `keep` keeps the working directory of a failed script for inspection.
fn check_text(rel: &str, text: &str, root: &Path, keep: bool) -> Result<(), String> {
    let blocks = parse_blocks(text).map_err(|e| format!("{rel}: {e}"))?;
    let mut problems = Vec::new();
    for block in blocks.iter().filter(|b| b.lang == "sh-device") {
        problems.extend(check_device_block(rel, block, root));
    }
    if !problems.is_empty() {
        return Err(format!("{rel}: sh-device blocks do not check out:\n{}", problems.join("\n")));
    }
    let script = build_script(rel, &blocks)?;
    run_script(rel, text, &script, &blocks, root, keep)
}

/// Runs a document's script; on failure, a report with the failing line and the output
/// tail.
fn run_script(rel: &str, text: &str, script: &Script, blocks: &[Block], root: &Path, keep: bool) -> Result<(), String> {
    let bins = binaries();
    let bin_dir = bins.bundler.parent().expect("binary directory");
    assert_eq!(Some(bin_dir), bins.agent.parent(), "bundler and ferry-agent are built side by side");
    let work = tempfile::Builder::new().prefix("ferry-docs-").tempdir().expect("tempdir");
    let home = work.path().join(".home");
    fs::create_dir_all(&home).expect("mkdir home");
    let script_file = home.join("script.sh");
    fs::write(&script_file, &script.text).expect("write script");
    let err_file = home.join("failed-lines");
    let log_dir = root.join("target").join("docs");
    fs::create_dir_all(&log_dir).expect("mkdir target/docs");
    let stem = Path::new(rel).file_stem().and_then(|s| s.to_str()).unwrap_or("doc");
    let log_path = log_dir.join(format!("{stem}.log"));
    let log = fs::File::create(&log_path).expect("create log");

    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("bash");
    cmd.arg(&script_file)
        .current_dir(work.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("TZ", "UTC")
        .env("TMPDIR", std::env::temp_dir())
        .env("FERRY_REPO", root)
        .env("FERRY_DOCS_ERR_FILE", &err_file)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Fleet Operator")
        .env("GIT_AUTHOR_EMAIL", "ops@example.com")
        .env("GIT_COMMITTER_NAME", "Fleet Operator")
        .env("GIT_COMMITTER_EMAIL", "ops@example.com")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn bash");
    let group = child.id();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            kill_group(group);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let leftovers = group_alive(group);
    kill_group(group);
    let elapsed = started.elapsed();
    let output = fs::read_to_string(&log_path).unwrap_or_default();

    let failure = match status {
        None => Some(format!("timed out after {}s", TIMEOUT.as_secs())),
        Some(s) if !s.success() => Some(format!("the script failed ({s})")),
        Some(_) if leftovers => Some("the script left processes running (stop what you start)".to_string()),
        Some(_) => None,
    };
    let Some(failure) = failure else {
        eprintln!("{rel}: every sh block ran in {:.1}s (log: {})", elapsed.as_secs_f64(), log_path.display());
        return Ok(());
    };
    let mut report = format!("{rel}: {failure}\n");
    let failed_line = fs::read_to_string(&err_file)
        .ok()
        .and_then(|t| t.lines().filter_map(|l| l.trim().parse::<usize>().ok()).next_back())
        .and_then(|n| script.doc_line.get(n.wrapping_sub(1)).copied())
        .filter(|&n| n > 0);
    if let Some(line) = failed_line {
        let block = blocks.iter().rev().find(|b| b.fence_line <= line);
        let command = text.lines().nth(line - 1).unwrap_or("").trim();
        let _ = writeln!(report, "  at {rel}:{line}: {command}");
        if let Some(b) = block {
            let _ = writeln!(report, "  in the ```{} block that starts at line {}", b.lang, b.fence_line);
        }
    }
    let lines: Vec<&str> = output.lines().collect();
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    if keep {
        let _ = writeln!(report, "  working directory kept: {}", work.keep().display());
    }
    let _ = writeln!(report, "--- last {} lines of output (all of it: {}) ---", tail.len(), log_path.display());
    for l in tail {
        let _ = writeln!(report, "{l}");
    }
    Err(report)
}

/// Whether any process of the group is still alive.
fn group_alive(group: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// SIGKILLs every process of the group.
fn kill_group(group: u32) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).stderr(Stdio::null()).status();
}

/// Checks an `sh-device` block without running it; returns the problems found.
fn check_device_block(rel: &str, block: &Block, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let at = block.fence_line;
    let body = block.lines.join("\n") + "\n";
    match Command::new("bash").arg("-n").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(mut child) => {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(body.as_bytes());
            }
            let out = child.wait_with_output().expect("bash -n");
            if !out.status.success() {
                problems.push(format!("{rel}:{at}: not valid bash: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Err(e) => problems.push(format!("{rel}:{at}: cannot run bash -n: {e}")),
    }
    for (line, logical) in logical_lines(block) {
        for path in deploy_paths(&logical) {
            if !root.join(&path).exists() {
                problems.push(format!("{rel}:{line}: {path} does not exist in the repository"));
            }
        }
        for words in simple_commands(&logical) {
            let Some((bin, args)) = ferry_command(&words) else { continue };
            let mut cmd = Command::new(bin);
            cmd.args(args).arg("--help").env_remove("FERRY_CONFIG").stdin(Stdio::null());
            let out = cmd.output().expect("run a binary with --help");
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                problems.push(format!("{rel}:{line}: `{}` does not parse: {first}", words.join(" ")));
            }
        }
    }
    problems
}

/// The block's lines with backslash continuations joined and comments dropped, each with
/// the document line it starts on.
fn logical_lines(block: &Block) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in block.lines.iter().enumerate() {
        let line = strip_comment(raw);
        let (continued, text) = match line.strip_suffix('\\') {
            Some(t) => (true, t.to_string()),
            None => (false, line),
        };
        let entry = current.get_or_insert_with(|| (block.fence_line + 1 + i, String::new()));
        entry.1.push(' ');
        entry.1.push_str(&text);
        if !continued {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// `line` without a trailing `# comment` (a `#` that starts a word outside quotes).
fn strip_comment(line: &str) -> String {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return line[..i].trim_end().to_string(),
            None => {}
        }
        prev = c;
    }
    line.trim_end().to_string()
}

/// The simple commands of a line, split at `|`, `&&`, `||`, `;` and `&`, as words (quotes
/// removed, nothing expanded).
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None if c.is_whitespace() || matches!(c, '|' | '&' | ';') => {
                if let Some(w) = word.take() {
                    commands.last_mut().expect("one command at least").push(w);
                }
                if matches!(c, '|' | '&' | ';') && !commands.last().expect("one command at least").is_empty() {
                    commands.push(Vec::new());
                }
            }
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        commands.last_mut().expect("one command at least").push(w);
    }
    commands.retain(|c| !c.is_empty());
    commands
}

/// When `words` runs `bundler` or `ferry-agent` (after `sudo`, `env` and `VAR=value`
/// prefixes; by name or by a path ending in the name): the built binary and its arguments.
fn ferry_command(words: &[String]) -> Option<(PathBuf, &[String])> {
    let mut rest = words;
    while let Some((first, tail)) = rest.split_first() {
        let is_assignment = first
            .split_once('=')
            .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if first == "sudo" || first == "env" || first == "exec" || is_assignment {
            rest = tail;
        } else {
            break;
        }
    }
    let (first, args) = rest.split_first()?;
    let name = first.rsplit('/').next().unwrap_or(first);
    match name {
        "bundler" => Some((binaries().bundler.clone(), args)),
        "ferry-agent" => Some((binaries().agent.clone(), args)),
        _ => None,
    }
}

/// Every `deploy/…` path named in `line`.
fn deploy_paths(line: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '@');
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(pos) = rest.find("deploy/") {
        let starts_word = rest[..pos].chars().next_back().is_none_or(|c| !is_path_char(c));
        let tail = &rest[pos..];
        let end = tail.find(|c: char| !is_path_char(c)).unwrap_or(tail.len());
        if starts_word {
            out.push(tail[..end].trim_end_matches(['.', '/']).to_string());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

#[test]
fn the_parser_finds_blocks_attributes_and_commands() {
    let doc = "text\n```sh\necho one \\\n  two # note\n```\n````toml file=a/b.toml\nx = 1\n```\n````\n```sh-device\n\
               sudo ferry-agent --config /etc/ferry/agent.toml status && bundler fleet --db f.db | less\n```\n";
    let blocks = parse_blocks(doc).expect("parses");
    assert_eq!(blocks.len(), 3);
    assert_eq!((blocks[0].fence_line, blocks[0].lang.as_str()), (2, "sh"));
    assert_eq!((blocks[1].file.as_deref(), blocks[1].lines.len()), (Some("a/b.toml"), 2), "inner fence kept");
    assert_eq!(logical_lines(&blocks[0]), vec![(3, " echo one    two".to_string())]);
    let line = &logical_lines(&blocks[2])[0].1;
    let cmds = simple_commands(line);
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert_eq!(cmds[0][..2], ["sudo".to_string(), "ferry-agent".to_string()]);
    assert!(parse_blocks("```sh\nnever closed\n").is_err());
    assert!(parse_blocks("```sh tyop\n```\n").is_err());
    assert_eq!(
        deploy_paths("cp deploy/examples/agent.toml /etc/ferry/ and see deploy/README.md."),
        ["deploy/examples/agent.toml", "deploy/README.md"]
    );
    let script = build_script("d.md", &blocks).expect("script");
    assert!(script.text.contains("cat > 'a/b.toml' <<'FERRY_DOCS_END_OF_FILE'\nx = 1\n```\n"), "{}", script.text);
    assert!(!script.text.contains("sudo"), "sh-device blocks are not run");
    let echo = script.text.lines().position(|l| l.starts_with("echo one")).expect("echo line");
    assert_eq!(script.doc_line[echo], 3);
}

#[test]
fn failures_name_the_line_the_block_and_the_output() {
    let root = workspace_root();
    let doc =
        "# t\n\n```sh\necho \"greeting from block one\"\n```\n\n```sh\ntrue\nls no-such-file-here\necho never\n```\n";
    let report = check_text("failing.md", doc, &root, false).expect_err("the script fails");
    assert!(report.contains("failing.md: the script failed"), "{report}");
    assert!(report.contains("at failing.md:9: ls no-such-file-here"), "{report}");
    assert!(report.contains("in the ```sh block that starts at line 7"), "{report}");
    assert!(report.contains("greeting from block one") && report.contains("no-such-file-here"), "{report}");
    assert!(!report.contains("\nnever"), "the script stops at the failure: {report}");

    let doc = "```toml file=conf/a.toml\nkey = 1\n```\n```sh\ngrep -x 'key = 1' conf/a.toml\nsleep 60 &\n```\n";
    let report = check_text("leftover.md", doc, &root, false).expect_err("a process is left running");
    assert!(report.contains("left processes running"), "{report}");

    let doc = "```sh-device\nsudo ferry-agent --config /etc/ferry/agent.toml status --jsno\n\
               bundler fleet --db f.db\ncp deploy/no/such/file /etc/\n```\n";
    let report = check_text("device.md", doc, &root, false).expect_err("bad flag and path");
    assert!(
        report.contains("device.md:2: `sudo ferry-agent --config /etc/ferry/agent.toml status --jsno` does not parse"),
        "{report}"
    );
    assert!(report.contains("device.md:4: deploy/no/such/file does not exist"), "{report}");
    assert!(!report.contains("bundler fleet"), "a valid command passes: {report}");
}
