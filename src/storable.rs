//! What both stores can hold: the one place that decides whether a value may be written.
//!
//! A value the database would refuse must never reach it: PostgreSQL refuses a NUL
//! character in `text` and in `jsonb` (a 500 for a client's typo, and, through the intake's
//! coalesced INSERT, for its neighbours), while SQLite stores it without complaint, so the
//! two stores would disagree about what is valid. Every intake (the task model's
//! [`crate::task::NewTask::validate`], the CWOM request checks, and the API's generic body
//! check that runs for every route with a body) asks here first, and the answer names the
//! field: a JSON pointer (RFC 6901) for a place inside a JSON document, such as
//! `/payload/a/0`.
//!
//! The rules:
//! - no NUL (U+0000) in any string or object key, at any depth;
//! - times from [`TIME_MIN`] to [`TIME_MAX`] (years 0001 to 9999), kept to the microsecond;
//! - header values such as `X-Trace-Id`: printable ASCII only, within their length limit.
//!
//! Integers outside their column types (`int4` on PostgreSQL) never get this far: the
//! request types hold them as `i32`, so serde refuses them with a 422 naming the field.

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde_json::Value;

/// The earliest time both stores represent the same way: 0001-01-01T00:00:00Z.
///
/// PostgreSQL's `timestamptz` reaches from 4713 BC to 294276 AD, but SQLite's date
/// functions (used by its triggers and by anyone reading the file by hand) know only
/// years 0000 to 9999, and RFC 3339, the API's time format, writes four-digit years.
/// Year 0 is left out because PostgreSQL prints it as `0001 BC`, a different year from
/// the one a client sent.
pub fn time_min() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).expect("a valid date").and_utc()
}

/// The latest time both stores represent: 9999-12-31T23:59:59.999999Z.
pub fn time_max() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .expect("a valid date")
        .and_utc()
}

/// Shown in messages and in the README.
pub const TIME_MIN: &str = "0001-01-01T00:00:00Z";
pub const TIME_MAX: &str = "9999-12-31T23:59:59.999999Z";

/// A value no store may be given, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Unstorable {
    /// The field's name, or a JSON pointer into the body (`/payload/a/0`).
    pub field: String,
    pub reason: String,
}

impl Unstorable {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Unstorable { field: field.into(), reason: reason.into() }
    }
}

const NUL_REASON: &str = "must not contain the NUL character (U+0000)";

/// Refuses a NUL character in a plain text field.
pub fn check_text(field: &str, value: &str) -> Result<(), Unstorable> {
    if value.contains('\0') {
        return Err(Unstorable::new(field, NUL_REASON));
    }
    Ok(())
}

/// Refuses a NUL character in any string or object key of `value`, at any depth. `at` is
/// the JSON pointer of `value` itself (`""` for a whole body, `/payload` for a field); the
/// error names the pointer of the first offending place, or of the key's object member.
pub fn check_json(at: &str, value: &Value) -> Result<(), Unstorable> {
    match value {
        Value::String(s) if s.contains('\0') => Err(Unstorable::new(pointer_or_root(at), NUL_REASON)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_json(&format!("{at}/{i}"), item)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let here = format!("{at}/{}", escape_pointer(key));
                if key.contains('\0') {
                    return Err(Unstorable::new(here, format!("the key {NUL_REASON}")));
                }
                check_json(&here, item)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn pointer_or_root(at: &str) -> String {
    if at.is_empty() {
        "/".to_string()
    } else {
        at.to_string()
    }
}

/// One reference token of a JSON pointer (RFC 6901: `~` is `~0`, `/` is `~1`). A NUL is
/// shown as `\u0000` so the message stays one readable line.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1").replace('\0', "\\u0000")
}

/// Checks that a time lies in the range both stores represent, and returns it cut to the
/// microsecond (both stores keep microseconds; cutting here, not in each driver, makes
/// them round the same way).
pub fn check_time(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, Unstorable> {
    if t < time_min() || t > time_max() {
        return Err(Unstorable::new(field, format!("must be from {TIME_MIN} to {TIME_MAX}")));
    }
    Ok(t.trunc_subsecs(6))
}

/// Checks a header value meant to be stored (such as `X-Trace-Id`): 1 to `max` bytes of
/// printable ASCII (space to `~`). Control characters, NUL and bytes past ASCII are
/// refused: they do not survive every log, store and header they travel through.
pub fn check_header(name: &str, raw: &[u8], max: usize) -> Result<String, Unstorable> {
    if raw.is_empty() || raw.len() > max {
        return Err(Unstorable::new(name, format!("must be 1 to {max} characters")));
    }
    if let Some(b) = raw.iter().find(|b| !(0x20..=0x7e).contains(*b)) {
        return Err(Unstorable::new(name, format!("must be printable ASCII (found byte 0x{b:02x})")));
    }
    // Printable ASCII is UTF-8.
    Ok(String::from_utf8_lossy(raw).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_is_found_at_any_depth_and_named_by_pointer() {
        assert_eq!(check_json("/payload", &json!({"a": [1, "x\u{0}y"]})).unwrap_err().field, "/payload/a/1");
        assert_eq!(check_json("", &json!({"k/~": {"b\u{0}": 1}})).unwrap_err().field, "/k~1~0/b\\u0000");
        assert_eq!(check_json("", &json!("\u{0}")).unwrap_err().field, "/");
        assert!(check_json("/payload", &json!({"a": ["fine", {"b": "\u{1}é😀"}]})).is_ok());
        assert!(check_text("queue", "a\u{0}").is_err());
        assert!(check_text("queue", "a").is_ok());
    }

    #[test]
    fn times_outside_the_common_range_are_refused_and_inside_cut_to_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123456789Z").unwrap().with_timezone(&Utc);
        assert_eq!(check_time("run_at", t).unwrap().to_rfc3339(), "2026-01-01T00:00:00.123456+00:00");
        let zero = DateTime::parse_from_rfc3339("0000-12-31T23:59:59Z").unwrap().with_timezone(&Utc);
        assert!(check_time("run_at", zero).is_err());
        assert!(check_time("run_at", time_min()).is_ok());
        assert!(check_time("run_at", time_max()).is_ok());
        assert!(check_time("run_at", time_max() + chrono::Duration::microseconds(1)).is_err());
    }

    #[test]
    fn header_values_must_be_printable_ascii() {
        assert_eq!(check_header("X-Trace-Id", b"abc-1 2", 128).unwrap(), "abc-1 2");
        assert!(check_header("X-Trace-Id", b"a\tb", 128).is_err());
        assert!(check_header("X-Trace-Id", b"a\x80", 128).is_err());
        assert!(check_header("X-Trace-Id", b"", 128).is_err());
        assert!(check_header("X-Trace-Id", &[b'a'; 129], 128).is_err());
    }
}
