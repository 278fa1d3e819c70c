//! The Ferry device agent: verifies, imports and applies releases atomically into A/B slots.
//!
//! [`agent::Agent`] is the engine (apply protocol, rollback); [`intake`] brings releases in
//! from files and mirror directories; [`reconcile`] runs on every start; [`status`] is the
//! read-only view. Below them: [`store`] (SQLite), [`git`] (objects, tree validation,
//! checkout), [`slots`] (A/B and `current`), [`hooks`] (`ferry.toml`).
//!
//! Reports home: [`identity`] (the device key), [`outbox`] (the events table as signed
//! batches), [`upload`] (to `[reports] url` after each poll) and [`export`] (to a USB stick).

pub mod agent;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod drift;
pub mod export;
pub mod failure;
pub mod fetch;
pub mod freshness;
pub mod fsutil;
pub mod git;
pub mod hold;
pub mod hooks;
pub mod identity;
pub mod intake;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod reconcile;
pub mod slots;
pub mod status;
pub mod store;
pub mod upload;
pub mod window;
