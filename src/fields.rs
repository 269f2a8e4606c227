//! Reading JSON into a request type, naming the field that broke it: the one parser every
//! request body goes through (the task intake's, the CWOM routes', the worker protocol's).
//!
//! `serde_path_to_error` tracks where the deserializer was when it failed, so a value of
//! the wrong type or spelling is named by its path (`source.system`, `steps[2].key`), and a
//! missing or unknown field by the object it belongs to.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a body is not a `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// Not JSON at all (only from bytes): the request is malformed (400).
    Syntax(String),
    /// JSON, but not the shape asked for (422): `field` is the path (`None` at the top).
    Data { field: Option<String>, reason: String },
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Syntax(reason) => f.write_str(reason),
            FieldError::Data { field: Some(field), reason } => write!(f, "{field}: {reason}"),
            FieldError::Data { field: None, reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for FieldError {}

/// A JSON value as a `T`.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| data(e.path(), e.inner()))
}

/// A JSON text as a `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| match e.inner().classify() {
        serde_json::error::Category::Data => data(e.path(), e.inner()),
        _ => FieldError::Syntax(e.inner().to_string()),
    })?;
    // Trailing characters after the value.
    de.end().map_err(|e| FieldError::Syntax(e.to_string()))?;
    Ok(value)
}

fn data(path: &serde_path_to_error::Path, inner: &serde_json::Error) -> FieldError {
    let path = path.to_string();
    FieldError::Data { field: (path != ".").then_some(path), reason: inner.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn errors_name_the_path_of_the_bad_value() {
        let e = from_value::<Outer>(json!({"name": 1})).unwrap_err();
        assert!(matches!(&e, FieldError::Data { field: Some(f), .. } if f == "name"), "{e:?}");
        let e = from_value::<Outer>(json!({"name": "a", "inner": {"n": -1}})).unwrap_err();
        assert!(e.to_string().starts_with("inner.n: invalid value"), "{e}");
        let e = from_value::<Outer>(json!({"name": "a", "list": [{"n": 1}, {"n": "x"}]})).unwrap_err();
        assert!(e.to_string().starts_with("list[1].n: invalid type"), "{e}");
        let e = from_value::<Outer>(json!({})).unwrap_err();
        assert_eq!(e, FieldError::Data { field: None, reason: "missing field `name`".into() });
        let e = from_value::<Outer>(json!({"name": "a", "colour": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        assert!(from_value::<Outer>(json!({"name": "a"})).is_ok());
    }

    #[test]
    fn bytes_tell_syntax_from_shape() {
        assert!(matches!(from_slice::<Outer>(b"{\"name\": "), Err(FieldError::Syntax(_))));
        assert!(matches!(from_slice::<Outer>(b"{\"name\": \"a\"} x"), Err(FieldError::Syntax(_))));
        let e = from_slice::<Outer>(br#"{"name": "a", "inner": {"n": true}}"#).unwrap_err();
        assert!(e.to_string().starts_with("inner.n: invalid type"), "{e}");
        assert!(from_slice::<Outer>(br#"{"name": "a"}"#).is_ok());
    }
}
