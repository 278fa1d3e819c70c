//! Helpers for Ferry's fuzz targets: an allocation-counting global allocator (so targets
//! can assert that a decoder never allocates beyond its limits), an independent signature
//! oracle (so they can assert that a verified document came out of valid signatures), and
//! the shared keys, framing and limits in [`shared`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_proto::envelope::Signature;
use ferry_proto::{DocKind, Envelope, KeyId, PublicKey, Role};

#[path = "shared.rs"]
pub mod shared;

pub use shared::{fixed_key, fuzz_limits, join, split, DEVICE_KEY};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and their peak.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

fn grow(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most heap bytes it had live at once (beyond
/// what was live before). Fuzz targets are single-threaded, so the count is `f`'s own.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// In-memory bytes a decoder may hold per input byte. serde pre-sizes each `Vec` from the
/// length postcard read, clamped to the bytes left in the input (and to 1 MiB per `Vec`),
/// so a claimed element costs one wire byte but up to its in-memory size (a `PublicKey` is
/// 192 bytes, a `KeyId` 32), and a trust root has four such vectors live at once.
pub const ALLOC_PER_INPUT_BYTE: usize = 320;

/// Asserts that decoding `input_len` bytes peaked at no more than `allowed` bytes plus
/// [`ALLOC_PER_INPUT_BYTE`] per input byte and a fixed allowance for error strings and
/// scratch buffers: allocation is linear in the input, which the limits cap.
pub fn assert_alloc_bound(what: &str, peak: usize, input_len: usize, allowed: usize) {
    let bound = allowed + ALLOC_PER_INPUT_BYTE * input_len + (64 << 10);
    assert!(peak <= bound, "{what}: peak allocation {peak} bytes for {input_len} input bytes exceeds {bound}");
}

/// Independent re-statement of the threshold rule: the distinct keys of `role` that have a
/// valid signature over `kind`'s tag and the payload.
pub fn valid_signers(env: &Envelope, kind: DocKind, role: &Role, keys: &BTreeMap<KeyId, PublicKey>) -> usize {
    let mut message = kind.signing_tag().to_vec();
    message.extend_from_slice(&env.payload);
    let authorised: BTreeSet<&KeyId> = role.keys.iter().collect();
    let valid: BTreeSet<KeyId> = env
        .signatures
        .iter()
        .filter(|Signature { key_id, sig }| {
            authorised.contains(key_id) && keys.get(key_id).is_some_and(|k| k.verify(&message, sig))
        })
        .map(|s| s.key_id)
        .collect();
    valid.len()
}

/// Asserts that `env` carries valid signatures of at least `role.threshold` distinct keys.
pub fn assert_signed(env: &Envelope, kind: DocKind, role: &Role, keys: &BTreeMap<KeyId, PublicKey>) {
    let valid = valid_signers(env, kind, role, keys);
    assert!(
        valid >= role.threshold.max(1) as usize,
        "{} accepted with {valid} valid signature(s), threshold {}",
        kind.name(),
        role.threshold
    );
}

/// Checks a tampered copy of a verified envelope: if it still verifies (`accepted`), the
/// flip may only have hit a signature the threshold did not need, so the document itself,
/// its kind and payload, must be exactly the original's.
pub fn assert_flip_harmless(original: &[u8], flipped: &[u8], accepted: bool) {
    if !accepted {
        return;
    }
    let limits = ferry_proto::Limits::default();
    let a = Envelope::decode(original, &limits).expect("the original decodes");
    let b = Envelope::decode(flipped, &limits).expect("an accepted envelope decodes");
    assert!(
        a.kind == b.kind && a.payload == b.payload,
        "a flipped byte changed the signed document and it still verifies"
    );
}

/// A position in `0..len` chosen from `data` (deterministic per input).
pub fn pick(data: &[u8], len: usize) -> usize {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    (h % len.max(1) as u64) as usize
}
