//! Serving a mirror directory read-only, the way a device's fetcher expects a static
//! server or CDN to behave.
//!
//! * Only layout paths are served (`trust/root.<n>`, `channels/<channel>/index`,
//!   `releases/<sha256>.manifest`, `payloads/<sha256>.ferry`), matched by grammar, so `..`,
//!   absolute paths, percent-encodings and anything else are a 404 before the file system
//!   is touched. A layout path that resolves outside the mirror (a symlink) is a 404 too.
//! * `ETag` is the quoted SHA-256 of the content, computed once per (path, device, inode,
//!   size, mtime, ctime) and cached; it is a strong validator, so a `Range` resume with
//!   `If-Range` can never splice two versions of a file.
//! * `If-None-Match` → 304; one `Range` (`a-b`, `a-`, `-n`) → 206 with `Content-Range`;
//!   several ranges or an invalid one → the whole file; unsatisfiable → 416; `If-Range`
//!   with anything but the current ETag → the whole file (200).
//! * `Cache-Control`: content-addressed `payloads/` and `releases/` are immutable for a
//!   year; `channels/*/index` and `trust/*` must be revalidated (`no-cache`).
//! * Bodies are streamed from the open file in 64 KiB reads; a payload is never held in
//!   memory.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferry_proto::ChannelName;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::AppState;

/// Bytes per read when streaming a body.
const CHUNK: usize = 64 << 10;

/// ETags remembered at most (the cache is emptied when full).
const MAX_CACHED_TAGS: usize = 4096;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// How a layout path may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// Content-addressed: never changes under its name.
    Immutable,
    /// Replaced in place (channel index) or small and security-relevant (trust roots).
    Revalidate,
}

impl Caching {
    fn header(self) -> &'static str {
        match self {
            Caching::Immutable => IMMUTABLE,
            Caching::Revalidate => REVALIDATE,
        }
    }
}

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    fn of(meta: &std::fs::Metadata) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A mirror directory being served.
pub struct MirrorFiles {
    root: PathBuf,
    tags: Mutex<HashMap<PathBuf, (Version, String)>>,
}

/// An open mirror file with its validator.
struct Opened {
    file: File,
    len: u64,
    etag: String,
}

impl MirrorFiles {
    /// Serves `root` (already canonical).
    pub fn new(root: PathBuf) -> MirrorFiles {
        MirrorFiles { root, tags: Mutex::new(HashMap::new()) }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens a layout path; `None` when absent, not a regular file, or outside the mirror.
    fn open(&self, rel: &str) -> io::Result<Option<Opened>> {
        let path = match std::fs::canonicalize(self.root.join(rel)) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !path.starts_with(&self.root) {
            tracing::warn!(path = rel, resolved = %path.display(), "refusing a mirror path that leads outside the mirror");
            return Ok(None);
        }
        // Checked before opening, so a FIFO planted in the mirror cannot block us.
        if !std::fs::metadata(&path)?.is_file() {
            return Ok(None);
        }
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let etag = self.etag(&path, &file, &meta)?;
        Ok(Some(Opened { file, len: meta.len(), etag }))
    }

    /// The cached ETag of this version of the file, or its SHA-256 read from `file`.
    fn etag(&self, path: &Path, file: &File, meta: &std::fs::Metadata) -> io::Result<String> {
        let version = Version::of(meta);
        if let Some((v, tag)) = self.tags.lock().unwrap_or_else(PoisonError::into_inner).get(path) {
            if *v == version {
                return Ok(tag.clone());
            }
        }
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut reader = file;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
        }
        let tag = format!("\"{}\"", hex::encode(sha2::Digest::finalize(hasher)));
        let mut tags = self.tags.lock().unwrap_or_else(PoisonError::into_inner);
        if tags.len() >= MAX_CACHED_TAGS {
            tags.clear();
        }
        tags.insert(path.to_path_buf(), (version, tag.clone()));
        Ok(tag)
    }
}

/// The layout path a request names, and how it may be cached; `None` for anything else.
fn layout_path(request_path: &str) -> Option<(String, Caching)> {
    let rel = request_path.strip_prefix('/')?;
    let is_sha256 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let parts: Vec<&str> = rel.split('/').collect();
    let caching = match parts.as_slice() {
        ["trust", name] => {
            let n: u64 = name.strip_prefix("root.")?.parse().ok()?;
            (*name == format!("root.{n}")).then_some(Caching::Revalidate)?
        }
        ["channels", channel, "index"] => channel.parse::<ChannelName>().ok().map(|_| Caching::Revalidate)?,
        ["releases", name] => is_sha256(name.strip_suffix(".manifest")?).then_some(Caching::Immutable)?,
        ["payloads", name] => is_sha256(name.strip_suffix(".ferry")?).then_some(Caching::Immutable)?,
        _ => return None,
    };
    Some((rel.to_owned(), caching))
}

/// What to answer, given the request's conditional and range headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    NotModified,
    Full,
    Partial { start: u64, end: u64 },
    Unsatisfiable,
}

fn plan(headers: &HeaderMap, len: u64, etag: &str) -> Plan {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        // Weak comparison, as RFC 9110 asks for If-None-Match.
        let matches = inm.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
        if matches {
            return Plan::NotModified;
        }
    }
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Plan::Full;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        // Strong comparison; a date never matches (no Last-Modified is sent).
        if if_range.to_str().ok().map(str::trim) != Some(etag) {
            return Plan::Full;
        }
    }
    match parse_range(range, len) {
        None => Plan::Full,
        Some(Ok((start, end))) => Plan::Partial { start, end },
        Some(Err(())) => Plan::Unsatisfiable,
    }
}

/// One byte range: `Some(Ok((first, last)))`; `Some(Err(()))` when it cannot be satisfied;
/// `None` when the header is to be ignored (invalid, another unit, several ranges).
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let (unit, spec) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let digits = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // More digits than a u64 holds: past any file's end.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    let (first, last) = spec.trim().split_once('-')?;
    if first.trim().is_empty() {
        let suffix = digits(last)?;
        if suffix == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len - suffix.min(len), len - 1)));
    }
    let first = digits(first)?;
    let last = if last.trim().is_empty() { None } else { Some(digits(last)?) };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    if first >= len {
        return Some(Err(()));
    }
    Some(Ok((first, last.map_or(len - 1, |l| l.min(len - 1)))))
}

/// Handles every request that no other route took: GET and HEAD of mirror files.
pub async fn get(State(state): State<Arc<AppState>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")]).into_response();
    }
    let Some((rel, caching)) = state.mirror.as_ref().and_then(|_| layout_path(uri.path())) else {
        tracing::debug!(path = uri.path(), "not a mirror layout path");
        return not_found();
    };
    let opened = {
        let state = Arc::clone(&state);
        let rel = rel.clone();
        tokio::task::spawn_blocking(move || state.mirror.as_ref().map(|m| m.open(&rel)).transpose()).await
    };
    let opened = match opened {
        Ok(Ok(Some(Some(o)))) => o,
        Ok(Ok(_)) => return not_found(),
        Ok(Err(e)) => {
            tracing::error!(path = rel, "reading mirror file: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Err(e) => {
            tracing::error!(path = rel, "mirror file task failed: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let Opened { file, len, etag } = opened;
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(caching.header()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    let (status, start, count) = match plan(&headers, len, &etag) {
        Plan::NotModified => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        Plan::Unsatisfiable => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            insert(response.headers_mut(), header::CONTENT_RANGE, format!("bytes */{len}"));
            insert(response.headers_mut(), header::CONTENT_LENGTH, "0".into());
            return response;
        }
        Plan::Full => (StatusCode::OK, 0, len),
        Plan::Partial { start, end } => {
            insert(response.headers_mut(), header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    insert(h, header::CONTENT_LENGTH, count.to_string());
    if method == Method::GET {
        match stream(file, start, count).await {
            Ok(body) => *response.body_mut() = body,
            Err(e) => {
                tracing::error!(path = rel, "reading mirror file: {e}");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    response
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

/// `count` bytes of `file` from `start`, read as the client takes them.
async fn stream(file: File, start: u64, count: u64) -> io::Result<Body> {
    let mut file = tokio::fs::File::from_std(file);
    file.seek(io::SeekFrom::Start(start)).await?;
    let reader = file.take(count);
    let chunks = futures_util::stream::try_unfold(reader, |mut reader| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), reader)))
    });
    Ok(Body::from_stream(chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"abc\"";

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn only_layout_paths_are_served() {
        let sha = "a".repeat(64);
        for (path, caching) in [
            ("/trust/root.1".to_string(), Caching::Revalidate),
            ("/trust/root.12".to_string(), Caching::Revalidate),
            ("/channels/stable/index".to_string(), Caching::Revalidate),
            (format!("/releases/{sha}.manifest"), Caching::Immutable),
            (format!("/payloads/{sha}.ferry"), Caching::Immutable),
        ] {
            assert_eq!(layout_path(&path).map(|p| p.1), Some(caching), "{path}");
        }
        for path in [
            "/".to_string(),
            "/trust/root.01".into(),
            "/trust/root.+1".into(),
            "/trust/../../etc/passwd".into(),
            "/channels/../index".into(),
            "/channels/Stable/index".into(),
            "/channels/%2e%2e/index".into(),
            format!("/payloads/{}.ferry", "A".repeat(64)),
            format!("/payloads/{sha}.ferry/"),
            format!("//payloads/{sha}.ferry"),
            format!("/payloads/../payloads/{sha}.ferry"),
            "/etc/passwd".into(),
            "trust/root.1".into(),
        ] {
            assert_eq!(layout_path(&path), None, "{path}");
        }
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=90-500", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("Bytes = 5-5", 100), Some(Ok((5, 5))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=99999999999999999999999-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-", 0), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=+1-2", 100), None);
        assert_eq!(parse_range("bytes=a-b", 100), None);
    }

    #[test]
    fn conditionals_come_before_ranges() {
        assert_eq!(plan(&headers(&[]), 100, TAG), Plan::Full);
        assert_eq!(plan(&headers(&[(header::IF_NONE_MATCH, TAG)]), 100, TAG), Plan::NotModified);
        assert_eq!(plan(&headers(&[(header::IF_NONE_MATCH, "\"x\", W/\"abc\"")]), 100, TAG), Plan::NotModified);
        assert_eq!(plan(&headers(&[(header::IF_NONE_MATCH, "*")]), 100, TAG), Plan::NotModified);
        assert_eq!(plan(&headers(&[(header::IF_NONE_MATCH, "\"x\"")]), 100, TAG), Plan::Full);
        let range = (header::RANGE, "bytes=10-");
        assert_eq!(plan(&headers(std::slice::from_ref(&range)), 100, TAG), Plan::Partial { start: 10, end: 99 });
        assert_eq!(
            plan(&headers(&[range.clone(), (header::IF_RANGE, TAG)]), 100, TAG),
            Plan::Partial { start: 10, end: 99 }
        );
        assert_eq!(plan(&headers(&[range.clone(), (header::IF_RANGE, "\"old\"")]), 100, TAG), Plan::Full);
        assert_eq!(plan(&headers(&[range.clone(), (header::IF_RANGE, "W/\"abc\"")]), 100, TAG), Plan::Full);
        assert_eq!(plan(&headers(&[range, (header::IF_RANGE, "Sat, 01 Jan 2000 00:00:00 GMT")]), 100, TAG), Plan::Full);
        assert_eq!(plan(&headers(&[(header::RANGE, "bytes=200-")]), 100, TAG), Plan::Unsatisfiable);
    }

    #[test]
    fn etags_are_cached_per_version_and_symlinks_out_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical").join("mirror");
        std::fs::create_dir_all(root.join("trust")).expect("mkdir");
        std::fs::write(root.join("trust/root.1"), b"one").expect("write");
        let files = MirrorFiles::new(root.clone());
        let first = files.open("trust/root.1").expect("open").expect("present");
        assert_eq!(first.etag, format!("\"{}\"", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"one"))));
        std::fs::write(root.join("trust/root.1.tmp"), b"two").expect("write");
        std::fs::rename(root.join("trust/root.1.tmp"), root.join("trust/root.1")).expect("rename");
        let second = files.open("trust/root.1").expect("open").expect("present");
        assert_ne!(first.etag, second.etag, "a replaced file kept its ETag");
        assert!(files.open("trust/root.2").expect("open").is_none());
        std::fs::write(dir.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("trust/root.3")).expect("symlink");
        assert!(files.open("trust/root.3").expect("open").is_none(), "followed a symlink out of the mirror");
        std::fs::create_dir(root.join("trust/root.4")).expect("mkdir");
        assert!(files.open("trust/root.4").expect("open").is_none(), "served a directory");
    }
}
