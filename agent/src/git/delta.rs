//! Applying a git delta (the inflated data of an `OFS_DELTA` or `REF_DELTA` pack entry) to
//! its base object.
//!
//! The format is git's (`patch-delta.c`): the base's size and the result's size as
//! little-endian base-128 numbers, then instructions. A byte with its high bit set copies
//! from the base: its low four bits say which bytes of a little-endian offset follow, the
//! next three which bytes of a size (a size of 0 means 0x10000). A byte from 1 to 127
//! inserts that many bytes that follow it. A 0 byte is reserved.
//!
//! Everything here comes from an untrusted pack: the declared base size must be the base's,
//! the declared result size is checked against the caller's limit before the result is
//! allocated (fallibly), every copy must lie inside the base, and the instructions must make
//! exactly the declared size.

use std::fmt;

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DeltaError {
    /// The instructions are not a delta of this base.
    Malformed(String),
    /// The declared result is larger than the limit.
    TooLarge { declared: u64 },
    /// The result's memory could not be reserved.
    OutOfMemory { declared: u64 },
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeltaError::Malformed(detail) => write!(f, "malformed delta: {detail}"),
            DeltaError::TooLarge { declared } => write!(f, "the delta declares a {declared}-byte result"),
            DeltaError::OutOfMemory { declared } => {
                write!(f, "could not reserve {declared} bytes for the delta's result")
            }
        }
    }
}

fn malformed(detail: impl Into<String>) -> DeltaError {
    DeltaError::Malformed(detail.into())
}

/// Applies `delta` to `base`; the result may be at most `max_size` bytes.
pub(super) fn apply(base: &[u8], delta: &[u8], max_size: u64) -> Result<Vec<u8>, DeltaError> {
    let (base_size, used) = size(delta, "base size")?;
    if base_size != base.len() as u64 {
        return Err(malformed(format!("it declares a base of {base_size} bytes, its base has {}", base.len())));
    }
    let mut at = used;
    let (declared, used) = size(&delta[at..], "result size")?;
    at += used;
    if declared > max_size {
        return Err(DeltaError::TooLarge { declared });
    }
    let len = usize::try_from(declared).map_err(|_| DeltaError::TooLarge { declared })?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| DeltaError::OutOfMemory { declared })?;
    while let Some(&op) = delta.get(at) {
        at += 1;
        let chunk = if op & 0x80 != 0 {
            let mut field = |bits: u8, bytes: usize| -> Result<usize, DeltaError> {
                let mut value = 0usize;
                for byte in 0..bytes {
                    if bits & (1 << byte) != 0 {
                        let b = *delta.get(at).ok_or_else(|| malformed("a copy instruction is cut off"))?;
                        value |= usize::from(b) << (8 * byte);
                        at += 1;
                    }
                }
                Ok(value)
            };
            let offset = field(op & 0x0f, 4)?;
            let count = match field((op >> 4) & 0x07, 3)? {
                0 => 0x10000,
                count => count,
            };
            offset
                .checked_add(count)
                .and_then(|end| base.get(offset..end))
                .ok_or_else(|| malformed(format!("it copies {count} bytes at {offset} from a {base_size}-byte base")))?
        } else if op == 0 {
            return Err(malformed("it uses the reserved instruction 0"));
        } else {
            let end = at + usize::from(op);
            let chunk = delta.get(at..end).ok_or_else(|| malformed("an insert instruction is cut off"))?;
            at = end;
            chunk
        };
        if chunk.len() > len - out.len() {
            return Err(malformed(format!("its instructions make more than the declared {declared} bytes")));
        }
        out.extend_from_slice(chunk);
    }
    if out.len() != len {
        return Err(malformed(format!("its instructions make {} bytes, not the declared {declared}", out.len())));
    }
    Ok(out)
}

/// The result size a delta declares, read from its first bytes (after its base's size).
pub(super) fn result_size(delta: &[u8]) -> Result<u64, DeltaError> {
    let (_, used) = size(delta, "base size")?;
    Ok(size(&delta[used..], "result size")?.0)
}

/// A size at the start of `data`: seven bits per byte, least significant first, the high bit
/// set on every byte but the last. Returns the size and the bytes it took.
fn size(data: &[u8], what: &str) -> Result<(u64, usize), DeltaError> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate() {
        let shift = 7 * i as u32;
        let bits = u64::from(byte & 0x7f);
        if shift >= u64::BITS || (bits << shift) >> shift != bits {
            return Err(malformed(format!("its {what} does not fit in 64 bits")));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(malformed(format!("it ends inside its {what}")))
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The result size a delta declares.
    fn result_size(delta: &[u8]) -> u64 {
        let (_, used) = size(delta, "base size").expect("a base size");
        size(&delta[used..], "result size").expect("a result size").0
    }

    /// Appends `n` as a delta header's size.
    pub(in crate::git) fn encode_size(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// One instruction of a delta made by the tests.
    #[derive(Debug, Clone)]
    enum Op {
        Copy { offset: usize, len: usize },
        Insert(Vec<u8>),
    }

    /// Encodes `ops` as a delta against a base of `base_len` bytes, returning it and what it
    /// makes of `base`.
    fn encode(base: &[u8], ops: &[Op]) -> (Vec<u8>, Vec<u8>) {
        let mut made = Vec::new();
        let mut body = Vec::new();
        for op in ops {
            match op {
                Op::Copy { offset, len } => {
                    made.extend_from_slice(&base[*offset..offset + len]);
                    let mut cmd = 0x80u8;
                    let mut args = Vec::new();
                    for i in 0..4 {
                        let b = (offset >> (8 * i)) as u8;
                        if b != 0 {
                            cmd |= 1 << i;
                            args.push(b);
                        }
                    }
                    let stored = if *len == 0x10000 { 0 } else { *len };
                    for i in 0..3 {
                        let b = (stored >> (8 * i)) as u8;
                        if b != 0 {
                            cmd |= 0x10 << i;
                            args.push(b);
                        }
                    }
                    body.push(cmd);
                    body.extend_from_slice(&args);
                }
                Op::Insert(bytes) => {
                    made.extend_from_slice(bytes);
                    body.push(bytes.len() as u8);
                    body.extend_from_slice(bytes);
                }
            }
        }
        let mut delta = Vec::new();
        encode_size(base.len() as u64, &mut delta);
        encode_size(made.len() as u64, &mut delta);
        delta.extend_from_slice(&body);
        (delta, made)
    }

    #[test]
    fn copies_and_inserts_make_the_declared_result() {
        let base = b"hello, wide world".to_vec();
        let ops = [Op::Copy { offset: 0, len: 7 }, Op::Insert(b"small".to_vec()), Op::Copy { offset: 11, len: 6 }];
        let (delta, made) = encode(&base, &ops);
        assert_eq!(made, b"hello, small world");
        assert_eq!(apply(&base, &delta, 100), Ok(made));
    }

    #[test]
    fn a_copy_size_of_zero_means_64_kib() {
        let base = vec![7u8; 0x10000 + 3];
        let (delta, made) = encode(&base, &[Op::Copy { offset: 3, len: 0x10000 }]);
        assert_eq!(made.len(), 0x10000);
        assert_eq!(apply(&base, &delta, 1 << 20), Ok(made));
    }

    #[test]
    fn every_lie_is_refused_in_words() {
        let base = b"0123456789".to_vec();
        let refused = |delta: &[u8]| match apply(&base, delta, 64) {
            Err(DeltaError::Malformed(detail)) => detail,
            other => panic!("{delta:?} gave {other:?}"),
        };
        assert!(refused(&[11, 1, 0x91, 0, 1]).contains("declares a base of 11 bytes"));
        assert!(refused(&[10, 1, 0]).contains("reserved instruction 0"));
        assert!(refused(&[10, 4, 0x91, 8, 4]).contains("copies 4 bytes at 8"));
        assert!(refused(&[10, 2, 3, b'a', b'b', b'c']).contains("more than the declared 2 bytes"));
        assert!(refused(&[10, 4, 2, b'a', b'b']).contains("make 2 bytes, not the declared 4"));
        assert!(refused(&[10, 4, 3, b'a']).contains("insert instruction is cut off"));
        assert!(refused(&[10, 4, 0x93, 1]).contains("copy instruction is cut off"));
        assert!(refused(&[10, 0x80]).contains("ends inside its result size"));
        assert!(refused(&[]).contains("ends inside its base size"));
        let mut huge = vec![0xffu8; 10];
        huge.push(0x01);
        assert!(refused(&huge).contains("does not fit in 64 bits"));
        assert_eq!(apply(&base, &[10, 65, 0x90, 65], 64), Err(DeltaError::TooLarge { declared: 65 }));
        assert_eq!(
            apply(&base, &[10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], u64::MAX),
            Err(DeltaError::OutOfMemory { declared: u64::MAX >> 1 })
        );
    }

    fn ops_for(base_len: usize) -> impl Strategy<Value = Vec<Op>> {
        let copy = (0..base_len, 1..=base_len).prop_map(move |(offset, len)| Op::Copy {
            offset: offset.min(base_len - 1),
            len: len.min(base_len - offset.min(base_len - 1)),
        });
        let insert = proptest::collection::vec(any::<u8>(), 1..=127).prop_map(Op::Insert);
        proptest::collection::vec(prop_oneof![copy, insert], 0..12)
    }

    proptest! {
        #[test]
        fn any_well_formed_delta_makes_what_it_encodes(
            (base, ops) in proptest::collection::vec(any::<u8>(), 1..600)
                .prop_flat_map(|base| { let n = base.len(); (Just(base), ops_for(n)) })
        ) {
            let (delta, made) = encode(&base, &ops);
            prop_assert_eq!(apply(&base, &delta, made.len() as u64), Ok(made));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_exceed_the_declared_size(
            base in proptest::collection::vec(any::<u8>(), 0..64),
            delta in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok(out) = apply(&base, &delta, 1 << 16) {
                prop_assert_eq!(out.len() as u64, result_size(&delta));
            }
        }
    }
}
