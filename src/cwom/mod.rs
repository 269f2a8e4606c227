//! CWOM, the canonical work object model (`../shared/CWOM.md`): Repo, Issue, ContextPacket,
//! ConstraintSnapshot, DoctrineRef, Run, Artifact; their storage on both databases and
//! their HTTP API under `/cwom`.

use crate::store::Backend;

pub mod api;

/// The CWOM service: validation and storage of work objects on the daemon's database.
#[derive(Clone)]
pub struct Cwom {
    backend: Backend,
}

impl Cwom {
    pub fn new(backend: &Backend) -> Self {
        Cwom { backend: backend.clone() }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}
