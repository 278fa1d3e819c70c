//! The patch section that may follow a delta payload's pack ([`ferry_proto::patch_section`]):
//! each patch is applied to its base blob from the object store, its output must have the
//! declared size and hash to the declared id, and the blob is then appended to the pack as
//! a thin-pack base is. Nothing in the section is trusted: a patch reads at most its declared
//! length, produces at most what it reads, and a wrong byte anywhere fails the id check.

use std::collections::HashSet;
use std::io::Read;

use ferry_proto::patch_section::{read_patch_header, read_section_start, PatchHeader, PatchSectionError};
use gix_hash::ObjectId;
use gix_object::Find;
use gix_pack::data::entry::Header;

use super::PackStream;
use crate::git::error::{GitError, Limit};

impl PackStream<'_> {
    /// Reads the patch section from the stream and appends the blob each patch makes.
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
        let mut targets = HashSet::new();
        for _ in 0..count {
            let at = self.tap.served;
            let header =
                read_patch_header(&mut self.tap, self.kind.len_in_bytes()).map_err(|e| self.section_error(at, e))?;
            let target = ObjectId::from_bytes_or_panic(&header.target);
            if !targets.insert(target) {
                return Err(GitError::malformed(format!("patch section at offset {at}: patches blob {target} twice")));
            }
            let blob = self.patched_blob(at, target, &header)?;
            self.append_object(Header::Blob, &blob)?;
            self.patched += 1;
        }
        Ok(())
    }

    /// Applies one patch, whose framing `header` was read at offset `at`, and checks that
    /// it made `target`.
    fn patched_blob(&mut self, at: u64, target: ObjectId, header: &PatchHeader) -> Result<Vec<u8>, GitError> {
        if header.target_size > self.max_object_size {
            return Err(GitError::size(
                Limit::ObjectSize,
                self.max_object_size,
                Some(header.target_size),
                format!("the patch for {target} at offset {at}"),
            ));
        }
        let base_id = ObjectId::from_bytes_or_panic(&header.base);
        let mut buf = Vec::new();
        let base = match self.bases.try_find(&base_id, &mut buf) {
            Ok(Some(data)) if data.kind == gix_object::Kind::Blob => data.data,
            Ok(Some(data)) => {
                return Err(GitError::malformed(format!(
                    "the patch for {target} at offset {at} applies to {base_id}, a {}, not a blob",
                    data.kind
                )))
            }
            Ok(None) => {
                return Err(GitError::ThinBaseMissing {
                    detail: format!("the patch for {target} applies to blob {base_id}, which this device lacks"),
                })
            }
            Err(err) => return Err(GitError::Store { detail: format!("{base_id}: {err}") }),
        };
        // A patch never makes more bytes than it reads, so this capacity is never exceeded.
        let mut blob = Vec::with_capacity(usize::try_from(header.patch_len).unwrap_or(usize::MAX));
        let mut patch = (&mut self.tap).take(header.patch_len);
        let applied = bsdiff::patch(base, &mut patch, &mut blob);
        let unread = patch.limit();
        if let Some(err) = self.tap.failure.take() {
            return Err(err);
        }
        let refused = |detail: String| GitError::malformed(format!("the patch for {target} at offset {at}: {detail}"));
        match applied {
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && self.tap.ready()? == 0 => {
                return Err(refused("the stream ends inside it (truncated payload)".into()))
            }
            Err(err) => return Err(refused(format!("does not apply to {base_id}: {err}"))),
            Ok(()) if unread > 0 => return Err(refused(format!("the stream ends {unread} bytes before its end"))),
            Ok(()) => {}
        }
        if blob.len() as u64 != header.target_size {
            return Err(refused(format!("makes {} bytes, not the declared {}", blob.len(), header.target_size)));
        }
        let made = gix_object::compute_hash(self.kind, gix_object::Kind::Blob, &blob)
            .map_err(|e| GitError::Store { detail: format!("hashing a patched blob: {e}") })?;
        if made != target {
            return Err(refused(format!("makes blob {made}, not {target}")));
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
            other => GitError::malformed(format!("after the pack, at offset {at}: {other}")),
        }
    }
}
