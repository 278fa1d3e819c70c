//! Name parsing: `ChannelName`, `GitOid`, `ObjectFormat`, `Sha256Digest`, label keys and
//! values, from UTF-8 text and through their serde (postcard) decoders.
//!
//! Properties: whatever parses displays as the input and survives an encode/decode round
//! trip; a channel name is a valid git ref component (checked with `gix-validate`, an
//! independent implementation) and a safe single path component; an object id is the
//! hex of a gix object id of the right kind; label values hold no control characters.
#![no_main]

use ferry_proto::envelope::{decode_document, encode_document};
use ferry_proto::names::{check_label_key, check_label_value};
use ferry_proto::{ChannelName, GitOid, ObjectFormat, Sha256Digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        let _ = decode_document::<ChannelName>("c", data);
        let _ = decode_document::<GitOid>("o", data);
        return;
    };
    if let Ok(c) = s.parse::<ChannelName>() {
        assert_eq!(c.to_string(), s);
        assert!(!s.is_empty() && s.len() <= 64 && !s.contains('/') && s != "." && s != "..");
        let reference = format!("refs/ferry/{c}/1");
        assert!(gix_validate::reference::name(reference.as_bytes().into()).is_ok(), "{reference:?}");
        assert_eq!(decode_document::<ChannelName>("c", &encode_document(&c)).ok(), Some(c));
    }
    if let Ok(o) = s.parse::<GitOid>() {
        assert_eq!(o.as_str(), s);
        let id = gix_hash::ObjectId::from_hex(s.as_bytes()).expect("a GitOid is hex");
        let kind = match o.format() {
            ObjectFormat::Sha1 => gix_hash::Kind::Sha1,
            ObjectFormat::Sha256 => gix_hash::Kind::Sha256,
        };
        assert_eq!(id.kind(), kind);
        assert_eq!(id.to_string(), s);
        assert_eq!(o.format().hex_len(), s.len());
        assert_eq!(decode_document::<GitOid>("o", &encode_document(&o)).ok(), Some(o));
    }
    if let Ok(f) = s.parse::<ObjectFormat>() {
        assert_eq!(f.to_string(), s);
    }
    if let Ok(d) = s.parse::<Sha256Digest>() {
        assert_eq!(d.to_hex(), s);
    }
    if check_label_key(s).is_ok() {
        assert!(!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()));
    }
    if check_label_value(s).is_ok() {
        assert!(s.len() <= 256 && !s.chars().any(char::is_control));
    }
    let _ = decode_document::<ChannelName>("c", data);
    let _ = decode_document::<GitOid>("o", data);
});
