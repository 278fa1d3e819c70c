//! The git bundle header parser (`read_bundle_header`) on arbitrary bytes.
//!
//! Properties: it never reads past its byte cap nor accepts more lines than allowed,
//! never allocates beyond a few times the header cap; what parses has at least one ref,
//! object ids of the declared format and valid ref names, and leaves the reader right
//! after the blank line; rendering the parsed header and parsing it again gives the same
//! header.
#![no_main]

use ferry_fuzz::{assert_alloc_bound, fuzz_limits, peak_during};
use ferry_proto::bundle_header::{read_bundle_header, BundleHeader};
use ferry_proto::ObjectFormat;
use libfuzzer_sys::fuzz_target;

fn render(h: &BundleHeader) -> Vec<u8> {
    let mut out = format!("# v{} git bundle\n", h.version);
    if h.version == 3 {
        out.push_str(&format!("@object-format={}\n", h.object_format));
    }
    for p in &h.prerequisites {
        out.push_str(&format!("-{p} a comment\n"));
    }
    for (oid, name) in &h.refs {
        out.push_str(&format!("{oid} {name}\n"));
    }
    out.push('\n');
    out.into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let mut r = data;
    let (header, peak) = peak_during(|| read_bundle_header(&mut r, &limits));
    assert_alloc_bound("bundle header", peak, 0, 4 * limits.max_bundle_header);
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            return;
        }
    };
    let consumed = data.len() - r.len();
    assert!(consumed <= limits.max_bundle_header);
    assert!(data[..consumed].ends_with(b"\n\n"));
    assert!(header.version == 2 || header.version == 3);
    if header.version == 2 {
        assert_eq!(header.object_format, ObjectFormat::Sha1);
    }
    assert!(!header.refs.is_empty());
    assert!(header.refs.len() + header.prerequisites.len() <= limits.max_bundle_lines);
    for oid in header.prerequisites.iter().chain(header.refs.iter().map(|(o, _)| o)) {
        assert_eq!(oid.format(), header.object_format);
    }
    for (_, name) in &header.refs {
        assert!(name == "HEAD" || gix_validate::reference::name(name.as_bytes().into()).is_ok(), "{name:?}");
    }

    let text = render(&header);
    let mut again = &text[..];
    let big = ferry_proto::Limits { max_bundle_header: 1 << 20, max_bundle_lines: 1 << 10, ..limits };
    let reparsed = read_bundle_header(&mut again, &big).expect("a rendered header parses");
    assert_eq!(reparsed, header);
    assert!(again.is_empty());
});
