//! Report records and batches: what a device tells the operator, signed with the device's
//! own Ed25519 key (an [`crate::Envelope`] of kind `report-batch`), zstd-compressed in
//! transit or on a USB stick.
//!
//! Records carry a per-device sequence number; the operator's side acknowledges the
//! highest sequence it stored, and only an acknowledgement removes records on the device,
//! so a retried upload never duplicates and a lost one never loses anything. A batch also
//! carries the device's current status, so the newest state arrives even when routine
//! records were compacted away (their number is in `dropped`).

use serde::{Deserialize, Serialize};

use crate::envelope::{decode_document, encode_document, DocKind, Envelope, EnvelopeError};
use crate::keys::{PublicKey, SigningKey};
use crate::limits::Limits;
use crate::Reason;

/// Report batch document format version.
pub const REPORT_FORMAT: u32 = 1;

/// One event on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecord {
    /// Per-device sequence number, strictly increasing.
    pub seq: u64,
    /// Unix seconds (device clock).
    pub at: u64,
    /// What happened: `agent-start`, `fetched`, `verified`, `switched`, `applied`,
    /// `rolled-back`, `rejected`, `drift`, …
    pub kind: String,
    /// The release it concerns.
    pub release: Option<u64>,
    /// Typed reason code for failures ([`Reason::code`]).
    pub reason: Option<String>,
    /// For a person.
    pub message: String,
}

/// The device's state when the batch was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Channel followed.
    pub channel: String,
    /// Device labels.
    pub labels: Vec<(String, String)>,
    /// Applied release, if any.
    pub release: Option<u64>,
    /// Its snapshot commit.
    pub commit: Option<String>,
    /// `a` or `b`.
    pub slot: Option<String>,
    /// `healthy`, `trial`, `rolled-back`, `none`.
    pub health: String,
    /// The newest failure's reason code, if any.
    pub last_failure: Option<String>,
    /// Paths drifted at the last check.
    pub drift_paths: u64,
    /// Whether applying is paused on the device.
    pub paused: bool,
}

/// A batch of records from one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// The device's id.
    pub device_id: String,
    /// The device's public key (what signs this batch; enrolled on first use where the
    /// operator allows it).
    pub device_key: PublicKey,
    /// Unix seconds when the batch was made.
    pub created: u64,
    /// Routine records compacted away on the device since the last acknowledged batch.
    pub dropped: u64,
    /// The device's state now.
    pub status: DeviceStatus,
    /// Records, in increasing `seq`.
    pub records: Vec<ReportRecord>,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The envelope or signature.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Records out of order, or a device id that is not the one signing.
    #[error("report batch is inconsistent: {0}")]
    Inconsistent(String),
}

impl BatchError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            BatchError::Envelope(e) => e.reason(),
            BatchError::Inconsistent(_) => Reason::Malformed,
        }
    }
}

impl ReportBatch {
    /// Highest sequence number carried (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.records.last().map(|r| r.seq).unwrap_or(0)
    }

    /// Signs the batch with the device key: the envelope bytes to send.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        Envelope::sign(DocKind::ReportBatch, encode_document(self), &[key]).encode()
    }

    /// Decodes the batch without checking the signature, to learn which device claims it
    /// (so the caller can look up that device's enrolled key). Never trust the result
    /// before [`ReportBatch::verify`].
    pub fn peek(bytes: &[u8], limits: &Limits) -> Result<ReportBatch, BatchError> {
        let env = Envelope::decode(bytes, limits)?;
        Ok(decode_document("report batch", &env.payload)?)
    }

    /// Verifies a batch signed by `device_key` and checks its records are in strictly
    /// increasing order.
    pub fn verify(bytes: &[u8], device_key: &PublicKey, limits: &Limits) -> Result<ReportBatch, BatchError> {
        let env = Envelope::decode(bytes, limits)?;
        let role = crate::Role { keys: vec![device_key.id()], threshold: 1 };
        let keys = [(device_key.id(), *device_key)].into_iter().collect();
        env.verify_role(DocKind::ReportBatch, "device", &role, &keys)?;
        let batch: ReportBatch = decode_document("report batch", &env.payload)?;
        if batch.device_key != *device_key {
            return Err(BatchError::Inconsistent(
                "the batch names another device key than the one that signed it".into(),
            ));
        }
        if batch.format != REPORT_FORMAT {
            return Err(EnvelopeError::Unsupported { what: "report batch", version: batch.format }.into());
        }
        if batch.records.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(BatchError::Inconsistent("records are not in increasing sequence order".into()));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(key: &SigningKey) -> ReportBatch {
        ReportBatch {
            format: REPORT_FORMAT,
            device_id: "pump-17".into(),
            device_key: key.public(),
            created: 1_700_000_000,
            dropped: 3,
            status: DeviceStatus {
                channel: "stable".into(),
                release: Some(4),
                health: "healthy".into(),
                ..Default::default()
            },
            records: (1..=3)
                .map(|seq| ReportRecord {
                    seq,
                    at: 1_700_000_000 + seq,
                    kind: "applied".into(),
                    release: Some(seq),
                    reason: None,
                    message: "ok".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn signed_batches_verify_and_tampering_is_refused() {
        let key = SigningKey::generate().expect("rng");
        let other = SigningKey::generate().expect("rng");
        let bytes = batch(&key).sign(&key);
        let l = Limits::default();
        assert_eq!(ReportBatch::verify(&bytes, &key.public(), &l).expect("verifies"), batch(&key));
        assert_eq!(ReportBatch::peek(&bytes, &l).expect("peek").device_id, "pump-17");
        assert_eq!(
            ReportBatch::verify(&bytes, &other.public(), &l).expect_err("other key").reason(),
            Reason::Signature
        );
        for i in (0..bytes.len()).step_by(5) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(ReportBatch::verify(&bad, &key.public(), &l).is_err(), "flip at {i} accepted");
        }
        let mut unordered = batch(&key);
        unordered.records.swap(0, 1);
        let err = ReportBatch::verify(&unordered.sign(&key), &key.public(), &l).expect_err("unordered");
        assert_eq!(err.reason(), Reason::Malformed);
    }
}
