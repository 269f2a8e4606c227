//! CWOM, the canonical work object model (`../shared/CWOM.md`): Repo, Issue, ContextPacket,
//! ConstraintSnapshot, DoctrineRef, Run, Artifact, as data, with their validation.
//!
//! | module | owns |
//! |---|---|
//! | [`types`] | the objects, primitives and enums, exactly as the JSON contract spells them |
//! | [`requests`] | create and patch bodies, list queries, and their validation |
//! | [`error`] | [`CwomError`], the outcomes of CWOM operations |
//!
//! The service that stores them is [`crate::cwom_service::Cwom`]; storage lives in the
//! drivers (`store/<dialect>/cwom.rs`, over `store/cwom_mapping.rs`); routes in `api/cwom.rs`.

pub mod error;
pub mod requests;
pub mod types;

pub use error::{CwomError, CwomResult};
