//! Crash points: named steps of the apply protocol where the crash tests stop the process
//! dead, as a power cut or `kill -9` would.
//!
//! Compiled in only with the `failpoints` feature (built for tests, never shipped). At run
//! time `FAILPOINTS="<name>=return"` makes the process send itself `SIGKILL` at that step:
//! no destructors, no flushing, no cleanup of temporaries. Other `fail` actions (`sleep`,
//! `pause`, `panic`) work as the `fail` crate documents.
//!
//! | name                          | the state on disk when it fires                     |
//! |-------------------------------|-----------------------------------------------------|
//! | `intake::after-chunk`         | some payload chunks stored, payload not verified    |
//! | `apply::after-import`         | pack imported, nothing journaled                    |
//! | `apply::after-validate`       | tree validated, nothing journaled                   |
//! | `apply::after-prepare`        | journal `started`, inactive slot empty              |
//! | `apply::after-checkout`       | slot written and fsynced, no record                 |
//! | `apply::after-record`         | slot record written                                 |
//! | `apply::before-switch`        | journal `switching`, `current` unchanged            |
//! | `apply::after-switch`         | `current` switched, journal `trial`                 |
//! | `apply::before-health`        | activate hook ran                                   |
//! | `apply::rollback::before-switch` | journal `rolling-back`, `current` still new      |
//! | `apply::rollback::after-switch`  | `current` switched back, hooks not yet run       |

/// Every crash point, for tests that iterate over them.
pub const CRASH_POINTS: &[&str] = &[
    "intake::after-chunk",
    "apply::after-import",
    "apply::after-validate",
    "apply::after-prepare",
    "apply::after-checkout",
    "apply::after-record",
    "apply::before-switch",
    "apply::after-switch",
    "apply::before-health",
    "apply::rollback::before-switch",
    "apply::rollback::after-switch",
];

/// Marks a crash point (see the module docs).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            let _ = fail::eval($name, |_| $crate::crash::die($name));
        }
    };
}

/// Kills this process with `SIGKILL`.
#[cfg(feature = "failpoints")]
pub fn die(point: &str) {
    eprintln!("ferry-agent: crash point {point}: killing myself");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    loop {
        std::thread::park();
    }
}
