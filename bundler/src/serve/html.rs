//! Escaping and encoding for the dashboard's hand-written HTML: text into HTML, strings
//! into URL path segments and query values and back, and base64 for the stylesheet's
//! `Content-Security-Policy` hash. Small on purpose: each function is the one place its
//! rule lives, and the tests pin the hostile inputs.

use std::fmt;

/// `s` as HTML text or a quoted attribute value: `&`, `<`, `>`, `"` and `'` become
/// character references, so nothing a device sent can open a tag, close an attribute or
/// start an entity. Everything else is kept (the page is UTF-8).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Displays a string through [`html_escape`], for `write!`.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&html_escape(self.0))
    }
}

/// `s` as one URL path segment or query value: every byte but RFC 3986's unreserved
/// characters is `%XX`. The result is plain ASCII with nothing HTML treats specially.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query value as a browser sends it from a link or a GET form: `+` is a space, `%XX`
/// a byte; a `%` not followed by two hex digits is kept as is; invalid UTF-8 becomes U+FFFD.
fn query_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key` in a query string (`a=1&b=2`), decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (query_decode(k) == key).then(|| query_decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escape_neutralises_markup_from_devices() {
        assert_eq!(html_escape("pump-1"), "pump-1");
        assert_eq!(
            html_escape("<img src=x onerror=alert(1)>"),
            "&lt;img src=x onerror=alert(1)&gt;",
            "a tag in a device id"
        );
        assert_eq!(html_escape("\"><script>"), "&quot;&gt;&lt;script&gt;", "breaking out of an attribute");
        assert_eq!(html_escape("' onmouseover='x"), "&#39; onmouseover=&#39;x", "single-quoted attributes");
        assert_eq!(html_escape("&lt; stays text"), "&amp;lt; stays text", "an entity is shown, not decoded");
        assert_eq!(html_escape("Pumpe Nr. 7 — Größe ✓"), "Pumpe Nr. 7 — Größe ✓");
        assert_eq!(Esc("a<b").to_string(), "a&lt;b");
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("gw-17_a.b~c"), "gw-17_a.b~c");
        assert_eq!(percent_encode("a b/c?d#e%f&g\"<"), "a%20b%2Fc%3Fd%23e%25f%26g%22%3C");
        assert_eq!(percent_encode("ü"), "%C3%BC");
    }

    #[test]
    fn query_values_are_decoded_as_browsers_encode_them() {
        let q = "channel=lab+2&state=failing&x=%3Cb%3E&channel=other";
        assert_eq!(query_value(q, "channel").as_deref(), Some("lab 2"), "the first value wins");
        assert_eq!(query_value(q, "state").as_deref(), Some("failing"));
        assert_eq!(query_value(q, "x").as_deref(), Some("<b>"));
        assert_eq!(query_value(q, "missing"), None);
        assert_eq!(query_value("state", "state").as_deref(), Some(""));
        assert_eq!(query_value("c=%C3%BC", "c").as_deref(), Some("ü"));
        assert_eq!(query_value("c=100%&d=%zz%4", "c").as_deref(), Some("100%"));
        assert_eq!(query_value("c=100%&d=%zz%4", "d").as_deref(), Some("%zz%4"));
        assert_eq!(query_value("c=%FF", "c").as_deref(), Some("\u{FFFD}"));
        for s in ["a b/c?d#e%f&g=h+i", "ü<>\"'"] {
            assert_eq!(query_value(&format!("k={}", percent_encode(s)), "k").as_deref(), Some(s), "round trip");
        }
    }
}
