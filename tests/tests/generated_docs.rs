//! The man pages (`deploy/man/`) and shell completions (`deploy/completions/`) that the
//! packages ship are generated from the clap definitions by the hidden `generate-docs`
//! subcommand of the `docgen` builds. These tests regenerate them with the real binaries and
//! fail, naming every stale file and the command that refreshes them, when the committed
//! copies differ; and they check, through each binary's own `--help`, that every subcommand
//! has its page and is completed.

use ferry_tests::{binaries, run, workspace_root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File names directly in `dir` (empty when it does not exist).
fn names(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn refresh_command() -> String {
    let bins = binaries();
    format!(
        "{} generate-docs deploy && {} generate-docs deploy\n(or: cargo run -q -p ferry-agent --features docgen -- \
         generate-docs deploy && cargo run -q -p ferry-bundler --features docgen -- generate-docs deploy)",
        bins.agent.display(),
        bins.bundler.display()
    )
}

#[test]
fn committed_man_pages_and_completions_are_current() {
    let bins = binaries();
    let fresh = tempfile::tempdir().expect("tempdir");
    for bin in [&bins.agent, &bins.bundler] {
        run(Command::new(bin).arg("generate-docs").arg(fresh.path())).ok();
    }
    let deploy = workspace_root().join("deploy");
    let mut stale = Vec::new();
    for sub in ["man", "completions"] {
        let (new, old) = (fresh.path().join(sub), deploy.join(sub));
        let generated = names(&new);
        assert!(generated.len() >= 3, "generate-docs wrote only {generated:?} into {sub}/");
        for name in generated.union(&names(&old)) {
            let want = std::fs::read(new.join(name)).ok();
            let have = std::fs::read(old.join(name)).ok();
            match (want, have) {
                (Some(w), Some(h)) if w == h => {}
                (Some(_), Some(_)) => stale.push(format!("deploy/{sub}/{name}: differs from what generate-docs makes")),
                (Some(_), None) => stale.push(format!("deploy/{sub}/{name}: missing")),
                (None, _) => stale.push(format!("deploy/{sub}/{name}: no longer generated (remove it)")),
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the committed man pages and completions are stale:\n  {}\nrefresh them with:\n{}",
        stale.join("\n  "),
        refresh_command()
    );
}

/// The subcommands a binary's `--help` lists under `Commands:` (without `help`).
fn subcommands(bin: &Path, path: &[String]) -> Vec<String> {
    let r = run(Command::new(bin).args(path).arg("--help")).ok();
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in r.stdout.lines() {
        if line == "Commands:" {
            in_commands = true;
        } else if in_commands && line.is_empty() {
            break;
        } else if in_commands && line.starts_with("  ") && !line.starts_with("   ") {
            let name = line.split_whitespace().next().unwrap_or_default().to_string();
            if name != "help" {
                out.push(name);
            }
        }
    }
    out
}

/// Checks that `bin path…` and each of its subcommands, recursively, have a man page in
/// `deploy/man` and appear in each shell's completion file; adds what is missing to `problems`.
fn check_command(bin: &Path, name: &str, path: &mut Vec<String>, problems: &mut Vec<String>) {
    let man = workspace_root().join("deploy/man");
    let page = std::iter::once(name.to_string()).chain(path.iter().cloned()).collect::<Vec<_>>().join("-");
    if !man.join(format!("{page}.1")).is_file() {
        problems.push(format!("no man page deploy/man/{page}.1"));
    }
    for sub in subcommands(bin, path) {
        let completions = workspace_root().join("deploy/completions");
        // How each generator spells "complete `sub` here" (bash: a `case` arm `parent,sub)`).
        let shells = [
            (format!("{name}.bash"), format!(",{sub})")),
            (format!("_{name}"), format!("'{sub}:")),
            (format!("{name}.fish"), format!("-a \"{sub}\"")),
        ];
        for (file, needle) in shells {
            let text = std::fs::read_to_string(completions.join(&file)).unwrap_or_default();
            if !text.contains(&needle) {
                let full = std::iter::once(name).chain(path.iter().map(String::as_str)).chain([sub.as_str()]);
                problems.push(format!(
                    "deploy/completions/{file} does not complete `{}`",
                    full.collect::<Vec<_>>().join(" ")
                ));
            }
        }
        path.push(sub);
        check_command(bin, name, path, problems);
        path.pop();
    }
}

#[test]
fn every_subcommand_has_a_man_page_and_completions() {
    let bins = binaries();
    let mut problems = Vec::new();
    let all: [(&PathBuf, &str); 2] = [(&bins.agent, "ferry-agent"), (&bins.bundler, "bundler")];
    for (bin, name) in all {
        assert!(!subcommands(bin, &[]).is_empty(), "{name} --help lists no subcommands");
        check_command(bin, name, &mut Vec::new(), &mut problems);
    }
    assert!(problems.is_empty(), "{}\nrefresh them with:\n{}", problems.join("\n"), refresh_command());
}
