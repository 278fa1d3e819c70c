//! The patch section that may follow a delta payload's pack ([`ferry_proto::patch_section`]):
//! each patch is applied to its base blob from the object store, its output must have the
//! declared size and hash to the declared id, and the blob is then appended to the pack as
//! a thin-pack base is. Nothing in the section is trusted: a patch reads at most its declared
//! length, produces at most what it reads, and a wrong byte anywhere fails the id check.
//! Each base is loaded from the store once: patches sharing a base must follow each other
//! (the bundler orders them by base), so a small section cannot make the device inflate a
//! large base again and again.

use std::collections::HashSet;
use std::io::Read;

use ferry_proto::patch_section::{read_patch_header, read_section_start, PatchHeader, PatchSectionError, MAX_PATCHES};
use gix_hash::ObjectId;
use gix_pack::data::entry::Header;

use super::PackStream;
use crate::git::error::{GitError, Limit};

/// What the section's reader keeps between patches.
#[derive(Default)]
struct Progress {
    targets: HashSet<ObjectId>,
    bases_done: HashSet<ObjectId>,
    base: Option<(ObjectId, Vec<u8>)>,
}

impl PackStream<'_> {
    /// Reads the patch section from the stream and appends the blob each patch makes
    /// (unless the store already holds it).
    pub(super) fn apply_patches(&mut self) -> Result<(), GitError> {
        let at = self.tap.served;
        let count = read_section_start(&mut self.tap).map_err(|e| match e {
            PatchSectionError::NotASection(detail) => {
                GitError::malformed(format!("junk after the pack at offset {at}: not a patch section ({detail})"))
            }
            other => self.section_error(at, other),
        })?;
        let objects = u64::from(self.declared) + u64::from(self.appended) + u64::from(count);
        if objects > self.max_objects {
            return Err(GitError::size(Limit::Objects, self.max_objects, Some(objects), "pack and patch section"));
        }
        let mut progress = Progress::default();
        for _ in 0..count {
            let at = self.tap.served;
            let header =
                read_patch_header(&mut self.tap, self.kind.len_in_bytes()).map_err(|e| self.section_error(at, e))?;
            let target = ObjectId::from_bytes_or_panic(&header.target);
            if !progress.targets.insert(target) {
                return Err(GitError::malformed(format!("patch section at offset {at}: patches blob {target} twice")));
            }
            let blob = self.patched_blob(at, target, &header, &mut progress)?;
            if !self.bases.contains(&target) {
                self.append_object(Header::Blob, &blob, target)?;
                self.patched += 1;
            }
        }
        Ok(())
    }

    /// Applies one patch, whose framing `header` was read at offset `at`, and checks that
    /// it made `target`.
    fn patched_blob(
        &mut self,
        at: u64,
        target: ObjectId,
        header: &PatchHeader,
        progress: &mut Progress,
    ) -> Result<Vec<u8>, GitError> {
        let refused = |detail: String| GitError::malformed(format!("the patch for {target} at offset {at}: {detail}"));
        if header.target_size > self.max_object_size {
            return Err(GitError::size(
                Limit::ObjectSize,
                self.max_object_size,
                Some(header.target_size),
                format!("the patch for {target} at offset {at}"),
            ));
        }
        let base_id = ObjectId::from_bytes_or_panic(&header.base);
        if progress.base.as_ref().is_none_or(|(id, _)| *id != base_id) {
            if !progress.bases_done.insert(base_id) {
                return Err(refused(format!("its base {base_id} was used by an earlier, not the previous, patch")));
            }
            progress.base = None;
            let data = match self.find_in_store(&base_id)? {
                Some((gix_object::Kind::Blob, data)) => data,
                Some((kind, _)) => return Err(refused(format!("it applies to {base_id}, a {kind}, not a blob"))),
                None => {
                    return Err(GitError::ThinBaseMissing {
                        detail: format!("the patch for {target} applies to blob {base_id}, which this device lacks"),
                    })
                }
            };
            progress.base = Some((base_id, data));
        }
        let base = progress.base.as_ref().map_or(&[][..], |(_, data)| data.as_slice());
        // A patch never makes more bytes than it reads, so this capacity is never exceeded.
        let mut blob = Vec::new();
        usize::try_from(header.patch_len).ok().and_then(|len| blob.try_reserve_exact(len).ok()).ok_or_else(|| {
            GitError::size(Limit::ObjectSize, self.max_object_size, Some(header.patch_len), "a patch")
        })?;
        let mut patch = (&mut self.tap).take(header.patch_len);
        let applied = bsdiff::patch(base, &mut patch, &mut blob);
        let unread = patch.limit();
        if let Some(err) = self.tap.failure.take() {
            return Err(err);
        }
        match applied {
            Err(_) | Ok(()) if unread > 0 && self.tap.ready()? == 0 => {
                return Err(refused(format!("the stream ends {unread} bytes before its end (truncated payload)")))
            }
            Err(err) => {
                return Err(refused(format!(
                    "it reaches past the end of its base {base_id} or of its declared length ({err})"
                )))
            }
            Ok(()) if unread > 0 => return Err(refused(format!("it stops {unread} bytes before its declared end"))),
            Ok(()) => {}
        }
        if blob.len() as u64 != header.target_size {
            return Err(refused(format!("it makes {} bytes, not the declared {}", blob.len(), header.target_size)));
        }
        let made = gix_object::compute_hash(self.kind, gix_object::Kind::Blob, &blob)
            .map_err(|e| GitError::Store { detail: format!("hashing a patched blob: {e}") })?;
        if made != target {
            return Err(refused(format!("it makes blob {made}, not {target}")));
        }
        Ok(blob)
    }

    /// The error for a section refused at offset `at`: the stream's own refusal (a cap) if
    /// it made one.
    fn section_error(&mut self, at: u64, err: PatchSectionError) -> GitError {
        if let Some(failure) = self.tap.failure.take() {
            return failure;
        }
        match err {
            PatchSectionError::Io(source) => GitError::PackRead { source },
            PatchSectionError::TooLarge(detail) => GitError::size(
                Limit::Objects,
                MAX_PATCHES.into(),
                None,
                format!("the patch section after the pack, at offset {at} ({detail})"),
            ),
            other => GitError::malformed(format!("after the pack, at offset {at}: {other}")),
        }
    }
}
