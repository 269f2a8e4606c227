//! CWOM errors: why an operation on work objects did not do what was asked.

use super::types::{ObjectKind, Ref, Status};
use crate::failure::StoreError;

/// Why a CWOM operation did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CwomError {
    /// A field breaks a rule; the message starts with the field's name.
    #[error("{0}")]
    Invalid(String),
    /// A Ref names no object of its kind, or the wrong kind; the message names the Ref.
    #[error("{0}")]
    InvalidRef(String),
    #[error("{0}")]
    InvalidFilter(String),
    #[error("no {kind} with id {id:?}")]
    NotFound { kind: ObjectKind, id: String },
    /// A unique key is taken (repo slug; doctrine namespace, name and version).
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in a final status, which nothing may leave.
    #[error("{kind} {id} is {status}, a final status; it cannot become {to}")]
    FinalStatus { kind: ObjectKind, id: String, status: Status, to: Status },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type CwomResult<T> = Result<T, CwomError>;

impl CwomError {
    pub(crate) fn missing_ref(field: &str, target: &Ref) -> CwomError {
        CwomError::InvalidRef(format!("{field}: no {} with id {:?}", target.kind, target.id))
    }
}
