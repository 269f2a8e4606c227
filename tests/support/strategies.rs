//! Proptest strategies shared by the property tests and the body fuzzer: JSON values of
//! any shape, strings with NUL and odd Unicode, numbers at every edge, times across and
//! beyond the range both stores hold.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::Value;

/// Strings a client might send: plain, empty, with NUL, odd Unicode, long.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9_-]{1,12}",
        4 => any::<String>(),
        2 => "[aé😀\u{7f}\u{200b}\u{fffd}\u{10ffff} ]{0,6}",
        1 => "[a\u{0}é ]{1,4}",
        1 => Just(String::new()),
        1 => "[x]{120,140}",
    ]
}

/// JSON numbers at the edges of every type both stores read back.
pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![Just(0.0), Just(-0.0), Just(1e-300), Just(1.5e300), Just(0.1), Just(-2.5)].prop_map(Value::from),
    ]
}

/// Any JSON value, a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String),];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// RFC 3339 times across and beyond the range both stores hold (years 0 to 10000), with
/// up to nine fraction digits and any offset; and some that are no time at all.
pub fn time_text() -> impl Strategy<Value = String> {
    let valid = (0i32..=10000, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60, 0u32..60, "[0-9]{0,9}", -1i32..=1, 0u32..14)
        .prop_map(|(y, mo, d, h, mi, s, frac, sign, off)| {
            let year = if y > 9999 { format!("+{y}") } else { format!("{y:04}") };
            let frac = if frac.is_empty() { String::new() } else { format!(".{frac}") };
            let zone = match sign {
                0 => "Z".to_string(),
                1 => format!("+{off:02}:30"),
                _ => format!("-{off:02}:00"),
            };
            format!("{year}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}")
        });
    prop_oneof![6 => valid, 1 => text()]
}
