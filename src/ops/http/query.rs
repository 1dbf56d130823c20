//! URL pieces of a request: query parameters as Go's `FormValue` reads them, percent
//! decoding and encoding, HTML escaping for the index page.
//!
//! Pure string functions, called by the handlers on request threads.

use std::fmt::Write as _;

/// Go's `strconv.Atoi` with the error ignored: invalid → 0.
pub(super) fn go_atoi(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

/// Query parameters, decoded; the first value of a key wins (Go's `FormValue`).
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                Some((percent_decode(k, true)?, percent_decode(v, true)?))
            })
            .collect();
        Query(pairs)
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes (and `+` as space in query parts); `None` for a bad escape or a
/// result that is not UTF-8.
pub(super) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes everything but unreserved characters and `/`.
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

/// Go's `html.EscapeString`.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_encode_escape() {
        assert_eq!(html_escape("<a'&\">"), "&lt;a&#39;&amp;&#34;&gt;");
        assert_eq!(percent_encode("a b/c?"), "a%20b/c%3F");
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        let q = Query::parse("seconds=5&debug=1&seconds=9&flag");
        assert_eq!(
            (q.get("seconds"), q.get("flag"), q.get("x")),
            (Some("5"), Some(""), None)
        );
        assert_eq!((go_atoi("12"), go_atoi("x"), go_atoi("-3")), (12, 0, -3));
    }
}
