//! The one way a report batch enters the fleet database, shared by `bundler serve`
//! (`POST /v1/reports`) and `bundler reports import` (a USB stick), so both apply exactly
//! the same checks in the same order:
//!
//! 1. size: at most [`MAX_COMPRESSED`] bytes of zstd, expanding to at most the envelope
//!    limit (1 MiB), with a bounded zstd window, checked before anything is allocated;
//! 2. who claims to have sent it: [`ReportBatch::peek`] (unverified) and a valid
//!    [`DeviceId`];
//! 3. which key must have signed it: the enrolled key; an unknown device is refused unless
//!    enrolment on first use is on (then the batch's own key, checked in step 4);
//! 4. verification over the bytes received ([`ReportBatch::verify`]); only a
//!    [`VerifiedBatch`] reaches the database;
//! 5. storage in one transaction: records newer than the device's acknowledged sequence,
//!    and its status. A batch with nothing new is a replay and changes nothing, so an old
//!    batch replayed by anyone can never roll a device's status back.
//!
//! Every refusal is an [`IngestError`] with an HTTP status and a short code.

use ferry_proto::report::{BatchError, ReportBatch};
use ferry_proto::Limits;
use std::io::Read;

use crate::device_id::{DeviceId, DeviceIdError};
use crate::fleetdb::{BatchOutcome, FleetDb, FleetDbError};

#[cfg(test)]
mod tests;

/// Largest compressed batch accepted, in bytes.
pub const MAX_COMPRESSED: usize = 1 << 20;

/// Largest zstd window accepted (8 MiB: any level up to 19 without long mode), so a small
/// body cannot make the decoder allocate a large window.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A batch whose signature verified against the device's enrolled key (or, on first use,
/// its own). Only [`ingest`] makes one.
#[derive(Debug)]
pub struct VerifiedBatch {
    device_id: DeviceId,
    batch: ReportBatch,
}

impl VerifiedBatch {
    /// The device that signed it.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// The batch.
    pub fn batch(&self) -> &ReportBatch {
        &self.batch
    }
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The device.
    pub device_id: DeviceId,
    /// Its highest stored sequence number: the device may delete records up to it.
    pub acked: u64,
    /// Records this batch added.
    pub new_records: usize,
    /// Whether this batch enrolled the device (first use).
    pub enrolled: bool,
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Too large compressed or decompressed.
    #[error("size-exceeded: {what} is larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    /// Not a zstd frame (or one needing too large a window).
    #[error("malformed: the batch is not a usable zstd frame: {0}")]
    NotZstd(String),
    /// The envelope, the signature or the records.
    #[error("{}: {}", .source.reason(), .source)]
    Invalid { device: Option<String>, source: BatchError },
    /// A device id that cannot be stored.
    #[error("malformed: {0}")]
    BadDeviceId(#[from] DeviceIdError),
    /// A sequence number outside `1..=i64::MAX`.
    #[error("malformed: record sequence number {seq} is out of range (1 to 2^63-1)")]
    BadSequence { device: DeviceId, seq: u64 },
    /// The device is not enrolled (and enrolment on first use is off).
    #[error("unenrolled device {device}")]
    Unenrolled { device: DeviceId, key_id: String },
    /// The device is enrolled with another key.
    #[error("device {device} is enrolled with another key (enrolled key id {}, batch key id {})", short(.enrolled), short(.presented))]
    KeyMismatch { device: DeviceId, presented: String, enrolled: String },
    /// Nothing newer than what is stored.
    #[error("replay")]
    Replay { device: DeviceId, acked: u64 },
    /// The database failed.
    #[error("io: {0}")]
    Db(#[from] FleetDbError),
}

impl IngestError {
    /// The HTTP status that carries this refusal.
    pub fn status(&self) -> u16 {
        match self {
            IngestError::TooLarge { .. } => 413,
            IngestError::NotZstd(_)
            | IngestError::Invalid { .. }
            | IngestError::BadDeviceId(_)
            | IngestError::BadSequence { .. } => 400,
            IngestError::Unenrolled { .. } | IngestError::KeyMismatch { .. } => 403,
            IngestError::Replay { .. } => 409,
            IngestError::Db(_) => 500,
        }
    }

    /// A short stable code for logs and import lines.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::TooLarge { .. } => "size-exceeded",
            IngestError::NotZstd(_) | IngestError::BadDeviceId(_) | IngestError::BadSequence { .. } => "malformed",
            IngestError::Invalid { source, .. } => source.reason().code(),
            IngestError::Unenrolled { .. } => "unenrolled",
            IngestError::KeyMismatch { .. } => "key-mismatch",
            IngestError::Replay { .. } => "replay",
            IngestError::Db(_) => "io",
        }
    }

    /// The device the batch claims to come from, when known.
    pub fn device(&self) -> Option<&str> {
        match self {
            IngestError::Invalid { device, .. } => device.as_deref(),
            IngestError::BadSequence { device, .. }
            | IngestError::Unenrolled { device, .. }
            | IngestError::KeyMismatch { device, .. }
            | IngestError::Replay { device, .. } => Some(device.as_str()),
            _ => None,
        }
    }
}

/// Checks a compressed batch and stores it (see the module documentation for the order).
/// `now` (Unix seconds, server clock) becomes the device's `last_seen`.
pub fn ingest(db: &mut FleetDb, body: &[u8], enroll_on_first_use: bool, now: u64) -> Result<Acked, IngestError> {
    let limits = Limits::default();
    // Step 1: size.
    let envelope = decompress(body, limits.max_envelope)?;
    // Step 2: who claims it (unverified).
    let claimed =
        ReportBatch::peek(&envelope, &limits).map_err(|source| IngestError::Invalid { device: None, source })?;
    let device: DeviceId = claimed.device_id.parse()?;
    // Step 3: which key must have signed it.
    let key = match db.enrolled_key(&device)? {
        Some(enrolled) if enrolled.key != claimed.device_key => {
            return Err(IngestError::KeyMismatch {
                device,
                presented: claimed.device_key.id().to_hex(),
                enrolled: enrolled.key.id().to_hex(),
            })
        }
        Some(enrolled) => enrolled.key,
        None if enroll_on_first_use => claimed.device_key,
        None => return Err(IngestError::Unenrolled { device, key_id: claimed.device_key.id().to_hex() }),
    };
    // Step 4: verify over the bytes received.
    let batch = ReportBatch::verify(&envelope, &key, &limits)
        .map_err(|source| IngestError::Invalid { device: Some(device.to_string()), source })?;
    if let Some(r) = batch.records.iter().find(|r| r.seq == 0 || i64::try_from(r.seq).is_err()) {
        return Err(IngestError::BadSequence { device, seq: r.seq });
    }
    let verified = VerifiedBatch { device_id: device, batch };
    // Step 5: store.
    let device = verified.device_id.clone();
    match db.store_batch(&verified, enroll_on_first_use, now)? {
        BatchOutcome::Stored { acked, new_records, enrolled } => {
            Ok(Acked { device_id: device, acked, new_records, enrolled })
        }
        BatchOutcome::Replay { acked } => Err(IngestError::Replay { device, acked }),
        BatchOutcome::Unenrolled => Err(IngestError::Unenrolled { device, key_id: key.id().to_hex() }),
        BatchOutcome::KeyMismatch { enrolled } => {
            Err(IngestError::KeyMismatch { device, presented: key.id().to_hex(), enrolled })
        }
    }
}

/// The first sequence number a batch carries, unverified: the order in which to ingest the
/// files of a USB stick (oldest first, so nothing is taken for a replay). `None` when the
/// bytes do not decode (ingesting them will say why).
pub fn peek_first_seq(body: &[u8]) -> Option<u64> {
    let limits = Limits::default();
    let envelope = decompress(body, limits.max_envelope).ok()?;
    ReportBatch::peek(&envelope, &limits).ok()?.records.first().map(|r| r.seq)
}

fn short(key_id: &str) -> &str {
    crate::fleetdb::short_key_id(key_id)
}

/// zstd-decompresses at most `cap` bytes.
fn decompress(body: &[u8], cap: usize) -> Result<Vec<u8>, IngestError> {
    if body.len() > MAX_COMPRESSED {
        return Err(IngestError::TooLarge { what: "the compressed batch", limit: MAX_COMPRESSED });
    }
    let not_zstd = |e: std::io::Error| IngestError::NotZstd(e.to_string());
    let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(not_zstd)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(not_zstd)?;
    let mut out = Vec::new();
    decoder.take(cap as u64 + 1).read_to_end(&mut out).map_err(not_zstd)?;
    if out.len() > cap {
        return Err(IngestError::TooLarge { what: "the decompressed batch", limit: cap });
    }
    Ok(out)
}
