//! Crash points: named steps of the apply protocol, the daemon's download and the report
//! upload where the crash tests stop the process dead, as a power cut or `kill -9` would.
//!
//! Compiled in only with the `failpoints` feature (built for tests, never shipped). At run
//! time `FAILPOINTS="<name>=return"` makes the process send itself `SIGKILL` at that step:
//! no destructors, no flushing, no cleanup of temporaries. Other `fail` actions (`sleep`,
//! `pause`, `panic`) work as the `fail` crate documents.
//!
//! | name                             | the state on disk when it fires                      |
//! |----------------------------------|------------------------------------------------------|
//! | `intake::before-store`           | manifest stored, no payload chunk yet                |
//! | `intake::after-chunk`            | some payload chunks stored, payload not verified     |
//! | `download::after-chunk`          | `run`: a downloaded chunk committed, not verified    |
//! | `download::after-verify`         | `run`: payload downloaded and verified, not applied  |
//! | `apply::after-import`            | pack imported, nothing journaled                     |
//! | `apply::after-validate`          | tree validated, nothing journaled                    |
//! | `apply::after-discard`           | journal `started`, inactive slot's record removed,   |
//! |                                  | its old tree not yet updated in place                |
//! | `apply::after-prepare`           | journal `started`, inactive slot empty               |
//! | `apply::after-checkout`          | slot written (whole or in place), synced, no record  |
//! | `apply::after-record`            | slot record written                                  |
//! | `apply::before-switch`           | journal `switching`, `current` unchanged             |
//! | `apply::after-switch`            | `current` switched, journal `trial`                  |
//! | `apply::before-health`           | activate hook ran                                    |
//! | `hooks::health-retry`            | a health check failed, about to retry                |
//! | `apply::after-commit`            | journal `committed`, event not recorded, not pruned  |
//! | `apply::rollback::before-switch` | journal `rolling-back`, `current` still new          |
//! | `apply::rollback::after-switch`  | `current` switched back, hooks not yet run           |
//! | `apply::rollback::after-hooks`   | rollback and re-activate hooks ran                   |
//! | `apply::rollback::after-discard` | failed slot's record gone, journal `rolling-back`    |
//! | `apply::rollback::before-refuse` | journal `rolled-back`, release not yet refused       |
//! | `upload::after-post`             | a report batch answered, acknowledgement not applied |
//! | `outbox::ack-before-commit`      | inside the acknowledgement's transaction             |
//! | `upload::after-ack`              | acknowledged records removed, next batch not built   |

/// Every crash point, for tests that iterate over them.
pub const CRASH_POINTS: &[&str] = &[
    "intake::before-store",
    "intake::after-chunk",
    "download::after-chunk",
    "download::after-verify",
    "apply::after-import",
    "apply::after-validate",
    "apply::after-discard",
    "apply::after-prepare",
    "apply::after-checkout",
    "apply::after-record",
    "apply::before-switch",
    "apply::after-switch",
    "apply::before-health",
    "hooks::health-retry",
    "apply::after-commit",
    "apply::rollback::before-switch",
    "apply::rollback::after-switch",
    "apply::rollback::after-hooks",
    "apply::rollback::after-discard",
    "apply::rollback::before-refuse",
    "upload::after-post",
    "outbox::ack-before-commit",
    "upload::after-ack",
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
