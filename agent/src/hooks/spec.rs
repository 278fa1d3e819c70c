//! Reading a release's `ferry.toml`: the hook commands, their timeouts and retries, and
//! one-line errors naming the file, line and key of a problem.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::DEFAULT_ROLLBACK_TIMEOUT;
use super::{HookError, FILE_NAME};
use super::{DEFAULT_ACTIVATE_TIMEOUT, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_RETRIES, DEFAULT_HEALTH_TIMEOUT};

/// `ferry.toml` is a few lines; refuse to read a large file into memory.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A hook command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookCommand {
    /// Run as is: program and arguments. A relative program with a `/` in it
    /// (`./bin/activate`) is resolved against the slot; a bare name is looked up in `PATH`.
    Argv(Vec<String>),
    /// Run with `/bin/sh -c`.
    Shell(String),
}

impl HookCommand {
    /// The program to start and its arguments, for a hook run in `slot_dir`.
    pub(super) fn program_and_args(&self, slot_dir: &Path) -> (PathBuf, Vec<String>) {
        match self {
            HookCommand::Shell(script) => ("/bin/sh".into(), vec!["-c".into(), script.clone()]),
            HookCommand::Argv(argv) => {
                let (program, args) = argv.split_first().map_or(("", &[][..]), |(p, a)| (p, a));
                let program = Path::new(program);
                let program = if program.is_relative() && program.components().count() > 1 {
                    slot_dir.join(program)
                } else {
                    program.to_path_buf()
                };
                (program, args.to_vec())
            }
        }
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        let parts: &[String] = match self {
            HookCommand::Argv(argv) if argv.is_empty() => {
                return Err(format!("`{key}` is an empty array; give a program to run"))
            }
            HookCommand::Argv(argv) if argv[0].trim().is_empty() => {
                return Err(format!("`{key}` has an empty program name"))
            }
            HookCommand::Shell(script) if script.trim().is_empty() => {
                return Err(format!("`{key}` is an empty command"))
            }
            HookCommand::Argv(argv) => argv,
            HookCommand::Shell(script) => std::slice::from_ref(script),
        };
        if parts.iter().any(|p| p.contains('\0')) {
            return Err(format!("`{key}` contains a NUL character"));
        }
        Ok(())
    }
}

impl fmt::Display for HookCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookCommand::Argv(argv) => write!(f, "{argv:?}"),
            HookCommand::Shell(script) => write!(f, "{script:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for HookCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = HookCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command: a string (run with /bin/sh -c) or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HookCommand, E> {
                Ok(HookCommand::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HookCommand, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(HookCommand::Argv(argv))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

/// A duration written like `10s`, `1m 30s` or `500ms`.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. \"10s\" or \"2m\"")))
    }
}

/// `ferry.toml` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    hooks: RawHooks,
}

/// `[hooks]` as written; every key optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawHooks {
    activate: Option<HookCommand>,
    health: Option<HookCommand>,
    rollback: Option<HookCommand>,
    activate_timeout: Option<HumanDuration>,
    health_timeout: Option<HumanDuration>,
    health_retries: Option<u32>,
    health_interval: Option<HumanDuration>,
    rollback_timeout: Option<HumanDuration>,
}

/// A release's validated hooks. [`HookSpec::default`] is "no hooks".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    activate: Option<HookCommand>,
    health: Option<HookCommand>,
    rollback: Option<HookCommand>,
    activate_timeout: Duration,
    health_timeout: Duration,
    health_retries: u32,
    health_interval: Duration,
    rollback_timeout: Duration,
}

impl Default for HookSpec {
    fn default() -> Self {
        HookSpec {
            activate: None,
            health: None,
            rollback: None,
            activate_timeout: DEFAULT_ACTIVATE_TIMEOUT,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            health_retries: DEFAULT_HEALTH_RETRIES,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            rollback_timeout: DEFAULT_ROLLBACK_TIMEOUT,
        }
    }
}

impl HookSpec {
    /// Parses the text of a `ferry.toml`; `path` is only used in error messages.
    /// Does no I/O.
    pub fn parse(text: &str, path: &Path) -> Result<HookSpec, HookError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| malformed_from_toml(path, text, &e))?;
        let invalid = |key: &str, message: String| HookError::Malformed {
            path: path.to_path_buf(),
            line: None,
            key: Some(format!("hooks.{key}")),
            message,
        };
        let hooks = raw.hooks;
        for (key, command) in [("activate", &hooks.activate), ("health", &hooks.health), ("rollback", &hooks.rollback)]
        {
            if let Some(command) = command {
                command.validate(key).map_err(|m| invalid(key, m))?;
            }
        }
        let defaults = HookSpec::default();
        let positive = |key: &str, value: Option<HumanDuration>, default: Duration| match value {
            None => Ok(default),
            Some(HumanDuration(d)) if d.is_zero() => Err(invalid(key, format!("`{key}` must be longer than 0s"))),
            Some(HumanDuration(d)) => Ok(d),
        };
        Ok(HookSpec {
            activate_timeout: positive("activate_timeout", hooks.activate_timeout, defaults.activate_timeout)?,
            health_timeout: positive("health_timeout", hooks.health_timeout, defaults.health_timeout)?,
            health_retries: hooks.health_retries.unwrap_or(defaults.health_retries),
            health_interval: hooks.health_interval.map_or(defaults.health_interval, |d| d.0),
            rollback_timeout: positive("rollback_timeout", hooks.rollback_timeout, defaults.rollback_timeout)?,
            activate: hooks.activate,
            health: hooks.health,
            rollback: hooks.rollback,
        })
    }

    /// The activate command, if any.
    pub fn activate(&self) -> Option<&HookCommand> {
        self.activate.as_ref()
    }
    /// The health command, if any.
    pub fn health(&self) -> Option<&HookCommand> {
        self.health.as_ref()
    }
    /// The rollback command, if any.
    pub fn rollback(&self) -> Option<&HookCommand> {
        self.rollback.as_ref()
    }
    /// Time allowed for the activate command.
    pub fn activate_timeout(&self) -> Duration {
        self.activate_timeout
    }
    /// Time allowed for each health attempt.
    pub fn health_timeout(&self) -> Duration {
        self.health_timeout
    }
    /// Further health attempts after a failed first one.
    pub fn health_retries(&self) -> u32 {
        self.health_retries
    }
    /// Pause between health attempts.
    pub fn health_interval(&self) -> Duration {
        self.health_interval
    }
    /// Time allowed for the rollback command.
    pub fn rollback_timeout(&self) -> Duration {
        self.rollback_timeout
    }
    /// Whether any hook is configured.
    pub fn has_any(&self) -> bool {
        self.activate.is_some() || self.health.is_some() || self.rollback.is_some()
    }
}

/// Reads `<slot_dir>/ferry.toml`; a missing file means no hooks.
pub fn load(slot_dir: &Path) -> Result<HookSpec, HookError> {
    let path = slot_dir.join(FILE_NAME);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HookSpec::default()),
        Err(source) => return Err(HookError::Read { path, source }),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| HookError::Read { path: path.clone(), source })?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(HookError::Malformed {
            path,
            line: None,
            key: None,
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    HookSpec::parse(&text, &path)
}

/// Turns a TOML error into one line: file, line number, the key on that line, message.
fn malformed_from_toml(path: &Path, text: &str, error: &toml::de::Error) -> HookError {
    let (line, key) = match error.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line_index = text.as_bytes()[..start].iter().filter(|&&b| b == b'\n').count();
            (Some(line_index + 1), key_on_line(text, line_index))
        }
        None => (None, None),
    };
    HookError::Malformed { path: path.to_path_buf(), line, key, message: error.message().trim().replace('\n', "; ") }
}

/// The dotted key assigned on line `index` (`hooks.health_timeout`), or the table a header
/// line opens, found by reading the text around it. Best effort, for error messages only.
fn key_on_line(text: &str, index: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(index)?.trim();
    let header = |l: &str| {
        let l = l.trim();
        l.starts_with('[').then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    };
    if let Some(table) = header(line) {
        return Some(table);
    }
    // A line without `=` continues a multi-line value: the line number has to do.
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    match lines[..index].iter().rev().find_map(|l| header(l)) {
        Some(table) => Some(format!("{table}.{key}")),
        None => Some(key.to_owned()),
    }
}
