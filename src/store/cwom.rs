//! The CWOM store: the domain operations on work objects, implemented by both drivers
//! over the shared table mapping in `cwom_mapping`.
//!
//! Every write is one transaction that first checks the Refs it stores (a missing target
//! is a 422 naming the Ref, never a dangling row) and then writes the object's row and its
//! join-table lists. Reads assemble each object's Ref lists from the join tables.

use async_trait::async_trait;

use crate::cwom::error::CwomResult;
use crate::cwom::requests::ListQuery;
use crate::cwom::types::{Object, ObjectKind};

/// A change to a stored object, applied inside the store's transaction with the row
/// locked: it sees the current object and may refuse (e.g. leaving a final status).
pub type Change = Box<dyn FnOnce(&mut Object) -> CwomResult<()> + Send>;

#[async_trait]
pub trait CwomStore: Send + Sync + 'static {
    /// Stores a new object, linking it where the model says (a ContextPacket to its
    /// Issue), and returns it as stored. Refs that do not resolve give
    /// [`crate::cwom::CwomError::InvalidRef`]; a taken unique key gives
    /// [`crate::cwom::CwomError::AlreadyExists`].
    async fn create(&self, object: Object) -> CwomResult<Object>;

    /// The object with its Ref lists, or `None`.
    async fn get(&self, kind: ObjectKind, id: &str) -> CwomResult<Option<Object>>;

    /// Whether an object of `kind` with this id exists (without reading it).
    async fn exists(&self, kind: ObjectKind, id: &str) -> CwomResult<bool>;

    /// One page of a kind's objects, newest first.
    async fn list(&self, query: &ListQuery) -> CwomResult<Vec<Object>>;

    /// Reads the object under a row lock, applies `change`, checks the Refs it now holds
    /// and writes it back; returns it as stored. [`crate::cwom::CwomError::NotFound`] when
    /// there is no such object.
    async fn update(&self, kind: ObjectKind, id: &str, change: Change) -> CwomResult<Object>;
}
