//! Parser for git bundle headers (v2 and v3), which gix does not read.
//!
//! ```text
//! # v3 git bundle
//! @object-format=sha256          (v3 only; capabilities)
//! -<oid> <comment>               prerequisites
//! <oid> <refname>                references
//!                                empty line, then the pack
//! ```
//!
//! Unknown capabilities are refused (`@filter=` means a partial pack that cannot be checked
//! out). Object ids must match the object format; ref names are validated with
//! `gix-validate`. The header is read with a byte cap and a line cap before allocating.

use std::io::{self, BufRead, Read};

use crate::limits::Limits;
use crate::names::{GitOid, ObjectFormat};
use crate::Reason;

/// A parsed bundle header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHeader {
    /// 2 or 3.
    pub version: u8,
    /// SHA-1 for v2; as declared for v3.
    pub object_format: ObjectFormat,
    /// Commits the receiver must already have.
    pub prerequisites: Vec<GitOid>,
    /// References the bundle carries: (tip, full ref name).
    pub refs: Vec<(GitOid, String)>,
}

/// Why a bundle header was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleHeaderError {
    /// A line that breaks the format.
    #[error("bad git bundle header at line {line}: {detail}")]
    Malformed { line: usize, detail: String },
    /// A version or capability this device cannot honour.
    #[error("unsupported git bundle: {0}")]
    Unsupported(String),
    /// Longer than the configured caps.
    #[error("git bundle header exceeds {0}")]
    TooLarge(String),
    /// Reading failed.
    #[error("reading git bundle header: {0}")]
    Io(#[from] io::Error),
}

impl BundleHeaderError {
    /// The typed reason.
    pub fn reason(&self) -> Reason {
        match self {
            BundleHeaderError::Malformed { .. } => Reason::Malformed,
            BundleHeaderError::Unsupported(_) => Reason::Unsupported,
            BundleHeaderError::TooLarge(_) => Reason::SizeExceeded,
            BundleHeaderError::Io(_) => Reason::Io,
        }
    }
}

/// Reads the header from `r`, leaving it positioned at the first pack byte.
pub fn read_bundle_header(r: &mut dyn BufRead, limits: &Limits) -> Result<BundleHeader, BundleHeaderError> {
    let mut budget = limits.max_bundle_header;
    let mut line_no = 0usize;
    let mut next_line = |r: &mut dyn BufRead| -> Result<String, BundleHeaderError> {
        line_no += 1;
        let mut buf = Vec::new();
        let n = r.take(budget as u64 + 1).read_until(b'\n', &mut buf)?;
        if n > budget {
            return Err(BundleHeaderError::TooLarge(format!("{} bytes", limits.max_bundle_header)));
        }
        budget -= n;
        if buf.pop() != Some(b'\n') {
            return Err(BundleHeaderError::Malformed { line: line_no, detail: "header ends before the pack".into() });
        }
        String::from_utf8(buf).map_err(|_| BundleHeaderError::Malformed { line: line_no, detail: "not UTF-8".into() })
    };

    let version = match next_line(r)?.as_str() {
        "# v2 git bundle" => 2u8,
        "# v3 git bundle" => 3u8,
        other => {
            return Err(BundleHeaderError::Malformed {
                line: 1,
                detail: format!("not a git bundle: {:?}", truncate(other)),
            })
        }
    };
    let mut header =
        BundleHeader { version, object_format: ObjectFormat::Sha1, prerequisites: Vec::new(), refs: Vec::new() };
    let mut in_capabilities = version == 3;
    let mut lines = 1usize;
    loop {
        let line = next_line(r)?;
        lines += 1;
        if lines > limits.max_bundle_lines + 1 {
            return Err(BundleHeaderError::TooLarge(format!("{} lines", limits.max_bundle_lines)));
        }
        if line.is_empty() {
            break;
        }
        if let Some(cap) = line.strip_prefix('@') {
            if !in_capabilities {
                return Err(BundleHeaderError::Malformed { line: lines, detail: "capability after refs".into() });
            }
            match cap.split_once('=') {
                Some(("object-format", fmt)) => {
                    header.object_format = fmt
                        .parse()
                        .map_err(|_| BundleHeaderError::Unsupported(format!("object format {:?}", truncate(fmt))))?;
                }
                _ => return Err(BundleHeaderError::Unsupported(format!("capability @{}", truncate(cap)))),
            }
            continue;
        }
        in_capabilities = false;
        if let Some(rest) = line.strip_prefix('-') {
            let oid = rest.split(' ').next().unwrap_or_default();
            header.prerequisites.push(parse_oid(oid, header.object_format, lines)?);
        } else {
            let (oid, name) = line.split_once(' ').ok_or_else(|| BundleHeaderError::Malformed {
                line: lines,
                detail: "ref line without a name".into(),
            })?;
            let oid = parse_oid(oid, header.object_format, lines)?;
            if name != "HEAD" {
                gix_validate::reference::name(name.as_bytes().into()).map_err(|e| BundleHeaderError::Malformed {
                    line: lines,
                    detail: format!("bad ref name {:?}: {e}", truncate(name)),
                })?;
            }
            header.refs.push((oid, name.to_owned()));
        }
    }
    if header.refs.is_empty() {
        return Err(BundleHeaderError::Malformed { line: lines, detail: "bundle carries no refs".into() });
    }
    Ok(header)
}

fn parse_oid(hex: &str, format: ObjectFormat, line: usize) -> Result<GitOid, BundleHeaderError> {
    let oid: GitOid = hex.parse().map_err(|e| BundleHeaderError::Malformed { line, detail: format!("{e}") })?;
    if oid.format() != format {
        return Err(BundleHeaderError::Malformed { line, detail: format!("object id {oid} is not {format}") });
    }
    Ok(oid)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn parse(s: &[u8]) -> Result<(BundleHeader, Vec<u8>), BundleHeaderError> {
        let mut r = s;
        let h = read_bundle_header(&mut r, &Limits::default())?;
        Ok((h, r.to_vec()))
    }

    #[test]
    fn v2_with_prerequisite() {
        let text = format!("# v2 git bundle\n-{A} old subject\n{B} refs/ferry/stable/2\n\nPACK");
        let (h, rest) = parse(text.as_bytes()).expect("parse");
        assert_eq!(h.version, 2);
        assert_eq!(h.prerequisites[0].as_str(), A);
        assert_eq!(h.refs[0].1, "refs/ferry/stable/2");
        assert_eq!(rest, b"PACK");
    }

    #[test]
    fn v3_sha256() {
        let oid = "a".repeat(64);
        let text = format!("# v3 git bundle\n@object-format=sha256\n{oid} refs/heads/main\n\nPACK");
        let (h, _) = parse(text.as_bytes()).expect("parse");
        assert_eq!(h.object_format, ObjectFormat::Sha256);
    }

    #[test]
    fn rejections() {
        let cases: Vec<(String, Reason)> = vec![
            (format!("# v3 git bundle\n@filter=blob:none\n{B} refs/heads/x\n\n"), Reason::Unsupported),
            (format!("# v3 git bundle\n@object-format=md5\n{B} refs/heads/x\n\n"), Reason::Unsupported),
            (format!("# v3 git bundle\n@object-format=sha256\n{B} refs/heads/x\n\n"), Reason::Malformed),
            (format!("# v4 git bundle\n{B} refs/heads/x\n\n"), Reason::Malformed),
            (format!("# v2 git bundle\n{B} refs/heads/../x\n\n"), Reason::Malformed),
            (format!("# v2 git bundle\n{B}\n\n"), Reason::Malformed),
            (format!("# v2 git bundle\n{}\n\n", B.to_uppercase() + " refs/heads/x"), Reason::Malformed),
            (format!("# v2 git bundle\n{B} refs/heads/x\n"), Reason::Malformed),
            ("# v2 git bundle\n\n".to_string(), Reason::Malformed),
            (format!("# v2 git bundle\n{B} refs/heads/x\n@object-format=sha1\n\n"), Reason::Malformed),
        ];
        for (text, reason) in cases {
            let err = parse(text.as_bytes()).expect_err(&text);
            assert_eq!(err.reason(), reason, "{text:?}: {err}");
        }
    }

    #[test]
    fn caps_are_enforced() {
        let limits = Limits { max_bundle_header: 100, max_bundle_lines: 3, ..Limits::default() };
        let long = format!("# v2 git bundle\n{B} refs/heads/{}\n\n", "x".repeat(200));
        let err = read_bundle_header(&mut long.as_bytes(), &limits).expect_err("long");
        assert_eq!(err.reason(), Reason::SizeExceeded);
        let many = format!("# v2 git bundle\n{}\n", format!("-{A}\n").repeat(5));
        let err = read_bundle_header(&mut many.as_bytes(), &limits).expect_err("many");
        assert_eq!(err.reason(), Reason::SizeExceeded);
    }
}
