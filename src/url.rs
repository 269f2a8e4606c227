//! Percent-encoding of URL parts (RFC 3986): the one set of characters left as they are, for
//! every link the dashboard writes and every request path the MCP server builds, and the one
//! decoder for path segments.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded, so a value
/// can never close a query parameter or leave its path segment.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `raw` as one query value or path segment.
pub fn encode(raw: &str) -> String {
    utf8_percent_encode(raw, UNRESERVED).to_string()
}

/// A path segment with its `%XX` decoded; bytes that are not UTF-8 become U+FFFD.
pub fn decode(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_but_unreserved_and_decodes_back() {
        assert_eq!(encode("a b/c?d=e&f~g.h_i-j%"), "a%20b%2Fc%3Fd%3De%26f~g.h_i-j%25");
        assert_eq!(encode("ü"), "%C3%BC");
        for s in ["issue/1 & 2", "ü%41", "..", "x%"] {
            assert_eq!(decode(&encode(s)), s);
        }
        // A trailing escape decodes too; a broken one stays as written.
        assert_eq!(decode("ab%41"), "abA");
        assert_eq!(decode("a%4"), "a%4");
    }
}
