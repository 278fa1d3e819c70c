//! `<binary> generate-docs OUT_DIR` for `ferry-agent` and `bundler`: writes the man pages
//! (`OUT_DIR/man/*.1`, one per command and subcommand) and the bash, zsh and fish
//! completions (`OUT_DIR/completions/`) generated from a binary's clap definition.
//!
//! Each binary depends on this crate only under its `docgen` feature, so the shipped
//! binaries carry neither generator nor the subcommand. The output is committed under
//! `deploy/`; `tests/tests/generated_docs.rs` fails when it is stale.

use anyhow::{bail, Context, Result};
use clap_complete::Shell;
use std::path::Path;
use std::process::ExitCode;

/// The hidden subcommand; looked for before the real command line is parsed.
const SUBCOMMAND: &str = "generate-docs";

/// Runs `generate-docs` when it is the first argument, returning the exit code; `None`
/// when the command line is something else.
pub fn intercept(cmd: clap::Command) -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != SUBCOMMAND {
        return None;
    }
    let name = cmd.get_name().to_string();
    let rest: Vec<_> = args.collect();
    let [out] = rest.as_slice() else {
        eprintln!("usage: {name} {SUBCOMMAND} OUT_DIR");
        return Some(ExitCode::from(64));
    };
    Some(match generate(cmd, Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::from(1)
        }
    })
}

/// Writes `out/man/NAME.1`, `out/man/NAME-SUB.1`… and `out/completions/{NAME.bash,_NAME,NAME.fish}`,
/// first removing this command's earlier pages so that a removed subcommand leaves none behind.
fn generate(cmd: clap::Command, out: &Path) -> Result<()> {
    if !out.is_dir() {
        bail!("{}: not a directory", out.display());
    }
    let name = cmd.get_name().to_string();
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for entry in std::fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
        let path = entry?.path();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        let page = file.strip_suffix(".1").unwrap_or_default();
        if page == name || page.strip_prefix(&name).is_some_and(|sub| sub.starts_with('-')) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    clap_mangen::generate_to(cmd.clone(), &man).with_context(|| format!("writing man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), &name, &completions)
            .with_context(|| format!("writing the {shell} completion to {}", completions.display()))?;
        println!("wrote {}", path.display());
    }
    println!("wrote {}/{name}*.1", man.display());
    Ok(())
}
