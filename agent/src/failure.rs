//! `Failure`: every refusal or error the engine reports, as one typed reason plus one line
//! a person can act on. Module errors convert into it through their own `reason()`.

use ferry_proto::Reason;

/// A typed failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// The reason code.
    pub reason: Reason,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure with this reason.
    pub fn new(reason: Reason, message: impl std::fmt::Display) -> Failure {
        Failure { reason, message: message.to_string() }
    }

    /// Prefixes the message with context.
    pub fn context(mut self, what: impl std::fmt::Display) -> Failure {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

macro_rules! from_reasoned {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure { reason: e.reason(), message: e.to_string() }
            }
        }
    )*};
}

from_reasoned!(
    crate::git::GitError,
    crate::slots::SlotError,
    crate::store::StoreError,
    crate::hooks::HookError,
    ferry_proto::envelope::EnvelopeError,
    ferry_proto::container::ContainerError,
    ferry_proto::manifest::PolicyError,
    ferry_proto::index::IndexPolicyError,
    ferry_proto::trust::TrustError,
    ferry_proto::digest::StreamError,
    ferry_proto::bundle_header::BundleHeaderError,
);

impl From<ferry_proto::manifest::BundleMismatch> for Failure {
    fn from(e: ferry_proto::manifest::BundleMismatch) -> Failure {
        Failure::new(Reason::DigestMismatch, e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(Reason::Io, e)
    }
}
