//! Process helpers shared by the comparisons: run a command and fail with its stderr,
//! time a whole process, medians, shell quoting, tool versions and the machine line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs `cmd` to completion and returns its stdout; fails with its stderr's last lines.
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, tail(&String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a `bash -c` script (with `set -euo pipefail`) and returns its stdout.
pub fn bash(script: &str) -> Result<String> {
    output(Command::new("bash").arg("-c").arg(format!("set -euo pipefail\n{script}")))
}

/// Wall time of a whole `bash -c` script (with `set -euo pipefail`); stdout is discarded.
pub fn time_bash(script: &str) -> Result<Duration> {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("set -euo pipefail\n{script}"));
    time(&mut cmd)
}

/// Wall time of a whole process, from spawn to exit; stdout is discarded, stderr kept
/// for the error.
pub fn time(cmd: &mut Command) -> Result<Duration> {
    let what = describe(cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, tail(&String::from_utf8_lossy(&out.stderr)));
    }
    Ok(took)
}

/// The median of `samples` (the mean of the middle two for an even count); 0 when empty.
pub fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// `path` quoted for a POSIX shell.
pub fn q(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A short version string for a tool (`git 2.47.3`, `ostree 2022.7`…).
pub fn tool_version(tool: &str) -> String {
    let full = |arg: &str| {
        Command::new(tool)
            .arg(arg)
            .output()
            .ok()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    };
    let version = match tool {
        "ostree" => full("--version")
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .map(|v| v.trim().trim_matches('\'').to_owned()),
        "zstd" => full("--version")
            .split_whitespace()
            .find(|w| w.starts_with('v'))
            .map(|v| v.trim_end_matches(',').to_owned()),
        "rsync" | "git" => full("--version").split_whitespace().nth(2).map(str::to_owned),
        "wrk" => full("--version").split_whitespace().nth(1).map(str::to_owned),
        "nginx" => full("-v").split('/').nth(1).map(|v| v.trim().to_owned()),
        _ => full("--version").lines().next().and_then(|l| l.split_whitespace().last()).map(str::to_owned),
    };
    format!("{tool} {}", version.unwrap_or_else(|| "(version unknown)".into()))
}

/// Fails with one line naming every missing program.
pub fn require(programs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("sh").arg("-c").arg(format!("command -v {p}")).output().is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {} (bench/run installs them: apt-get install -y ostree rsync zstd nginx-light wrk)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Cores and CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores ({cpu}), 1-minute load average {load} as they ended")
}

/// Total size in bytes and number of regular files under `dir` (links not followed).
pub fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let mut bytes = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let (b, f) = tree_size(&entry.path())?;
            bytes += b;
            files += f;
        } else if kind.is_file() {
            bytes += entry.metadata()?.len();
            files += 1;
        }
    }
    Ok((bytes, files))
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds with two decimals (three under a second).
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{s:.3} s")
    } else {
        format!("{s:.2} s")
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args().take(4) {
        let a = a.to_string_lossy();
        s.push(' ');
        s.push_str(a.lines().find(|l| !l.trim().is_empty() && !l.starts_with("set -")).unwrap_or(""));
    }
    s
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_quoting_and_thousands() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(&[ms(4), ms(1), ms(2), ms(3)]), Duration::from_micros(2500));
        assert_eq!(median(&[]), Duration::ZERO);
        assert_eq!(q(Path::new("/a b/it's")), r"'/a b/it'\''s'");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
