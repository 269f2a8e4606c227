//! A database failure as data: what kind it was, the database's code and message, and its
//! cause. Defined below the store so that models (CWOM's errors among them) can carry one
//! without importing the store; each driver turns its client library's error into a
//! [`StoreError`] once.

use std::fmt;
use std::sync::Arc;

/// Whether trying again later may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The database cannot be reached, refused the connection, or is shutting down.
    Unavailable,
    /// The database refused this statement's data: a constraint or trigger (perhaps one an
    /// operator added), or a value its types cannot hold. Trying again will not help, and
    /// the caller, not the server, owns the failure.
    Refused,
    /// Anything else: a bug, a corrupt row.
    Internal,
}

/// A database failure, with its cause.
///
/// Cloneable (the cause is shared) because one failed statement may answer many callers:
/// the PostgreSQL intake folds concurrent enqueues into one INSERT.
#[derive(Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    /// SQLSTATE (PostgreSQL) or result code name (SQLite), when the database gave one.
    code: Option<String>,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError { kind, code: None, message: message.into(), source: None }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Internal, message)
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Refused, message)
    }

    /// Keeps `source` as the cause.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Records the database's own code for the failure.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    pub fn is_unavailable(&self) -> bool {
        self.kind == StoreErrorKind::Unavailable
    }

    pub fn is_refused(&self) -> bool {
        self.kind == StoreErrorKind::Refused
    }

    /// SQLSTATE (PostgreSQL) or result code name (SQLite).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::Refused => "refused by the store",
            StoreErrorKind::Internal => "store error",
        };
        match &self.code {
            Some(code) => write!(f, "{what} ({code}): {}", self.message),
            None => write!(f, "{what}: {}", self.message),
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The full cause chain of an error, one cause after another, for logs.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_code_message_and_cause() {
        let io = std::io::Error::other("socket closed");
        let e = StoreError::unavailable("cannot reach the database").with_code("08006").caused_by(io);
        assert!(e.is_unavailable());
        assert_eq!(e.code(), Some("08006"));
        assert_eq!(e.to_string(), "store unavailable (08006): cannot reach the database");
        assert_eq!(chain(&e), "store unavailable (08006): cannot reach the database: socket closed");
        let cloned = e.clone();
        assert!(std::error::Error::source(&cloned).is_some(), "a clone shares the cause");
    }
}
