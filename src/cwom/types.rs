//! CWOM objects as the API shows them (`../shared/CWOM.md`): the seven kinds, their
//! primitives (Actor, Source, Ref) and value objects, and every enum with its wire spelling.
//!
//! These are the stored and answered shapes. What a client may send to create or change
//! one lives in `requests`; how each maps to tables lives in `record`.
//!
//! Every optional field is always present in the JSON (as `null` when unset), so a client
//! sees one fixed key set per kind.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The free JSON object every CWOM object carries (namespaced keys recommended).
pub type Meta = Map<String, Value>;

/// A value that is not one of an enum's spellings; says which ones are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not one of {expected}")]
pub struct UnknownValue {
    pub given: String,
    pub expected: String,
}

/// An enum whose JSON spelling CWOM.md fixes; the same text is its database value.
macro_rules! wire_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| UnknownValue {
                    given: s.to_string(),
                    expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

wire_enum! {
    /// The seven kinds of object; a [`Ref`] names one.
    pub enum ObjectKind {
        Repo => "Repo",
        Issue => "Issue",
        ContextPacket => "ContextPacket",
        ConstraintSnapshot => "ConstraintSnapshot",
        DoctrineRef => "DoctrineRef",
        Run => "Run",
        Artifact => "Artifact",
    }
}

impl ObjectKind {
    /// The collection's path segment under `/cwom`.
    pub fn path(self) -> &'static str {
        match self {
            ObjectKind::Repo => "repos",
            ObjectKind::Issue => "issues",
            ObjectKind::ContextPacket => "context-packets",
            ObjectKind::ConstraintSnapshot => "constraint-snapshots",
            ObjectKind::DoctrineRef => "doctrine-refs",
            ObjectKind::Run => "runs",
            ObjectKind::Artifact => "artifacts",
        }
    }

    pub fn from_path(segment: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.iter().copied().find(|k| k.path() == segment)
    }

    /// Immutable once created: new knowledge means a new object, so history stays exact.
    pub fn is_immutable(self) -> bool {
        matches!(self, ObjectKind::ContextPacket | ObjectKind::ConstraintSnapshot)
    }
}

wire_enum! {
    /// Where an Issue or a Run is in its life. `done`, `failed` and `canceled` are final:
    /// nothing moves an object out of them (a change is refused with 409).
    #[derive(Default)]
    pub enum Status {
        /// Known, not yet ready to start. The default.
        #[default]
        Planned => "planned",
        /// Everything needed is there; may start.
        Ready => "ready",
        /// In progress.
        Running => "running",
        /// Waiting on something outside.
        Blocked => "blocked",
        /// Finished with success. Final.
        Done => "done",
        /// Finished without success. Final.
        Failed => "failed",
        /// Given up before the end. Final.
        Canceled => "canceled",
    }
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Canceled)
    }
}

wire_enum! {
    pub enum IssueType {
        Feature => "feature",
        Bug => "bug",
        Chore => "chore",
        Research => "research",
        Ops => "ops",
        Doc => "doc",
        Incident => "incident",
    }
}

wire_enum! {
    /// P0 is the most urgent.
    #[derive(Default)]
    pub enum Priority {
        P0 => "P0",
        P1 => "P1",
        #[default]
        P2 => "P2",
        P3 => "P3",
        P4 => "P4",
    }
}

wire_enum! {
    /// Who drives a Run.
    pub enum RunMode {
        Human => "human",
        Agent => "agent",
        Hybrid => "hybrid",
        System => "system",
    }
}

wire_enum! {
    pub enum ArtifactType {
        CodePatch => "code_patch",
        Commit => "commit",
        Pr => "pr",
        Build => "build",
        ContainerImage => "container_image",
        Doc => "doc",
        Report => "report",
        Dataset => "dataset",
        Log => "log",
        Trace => "trace",
        Binary => "binary",
        Link => "link",
    }
}

wire_enum! {
    #[derive(Default)]
    pub enum VerificationStatus {
        #[default]
        Unverified => "unverified",
        Passed => "passed",
        Failed => "failed",
    }
}

wire_enum! {
    pub enum DoctrineType {
        Principle => "principle",
        Policy => "policy",
        Procedure => "procedure",
        Heuristic => "heuristic",
        Pattern => "pattern",
    }
}

wire_enum! {
    #[derive(Default)]
    pub enum DoctrinePriority {
        Must => "must",
        #[default]
        Should => "should",
        May => "may",
    }
}

wire_enum! {
    #[derive(Default)]
    pub enum Visibility {
        Public => "public",
        #[default]
        Private => "private",
        Internal => "internal",
    }
}

wire_enum! {
    /// Whose constraints a snapshot captures.
    pub enum ConstraintScope {
        Personal => "personal",
        Repo => "repo",
        Org => "org",
        System => "system",
        Run => "run",
    }
}

wire_enum! {
    /// Why a Run failed.
    pub enum FailureCategory {
        Policy => "policy",
        Build => "build",
        Test => "test",
        Runtime => "runtime",
        Dependency => "dependency",
        Unknown => "unknown",
    }
}

wire_enum! {
    pub enum ActorKind {
        Human => "human",
        Agent => "agent",
        System => "system",
    }
}

wire_enum! {
    pub enum Connectivity {
        Offline => "offline",
        Limited => "limited",
        Ok => "ok",
    }
}

wire_enum! {
    pub enum RiskTolerance {
        Low => "low",
        Medium => "medium",
        High => "high",
    }
}

/// The constant `kind` field of one object type: it serializes as the kind's name and
/// accepts nothing else, so a `Repo` can never claim to be an `Issue`.
macro_rules! kind_tag {
    ($name:ident => $kind:ident) => {
        #[doc = concat!("The `kind` of a ", stringify!($kind), ": always `\"", stringify!($kind), "\"`.")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            pub const KIND: ObjectKind = ObjectKind::$kind;
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(Self::KIND.as_str())
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                concat!(stringify!($kind), "Kind").into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "const": stringify!($kind) })
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let given = String::deserialize(d)?;
                if given == Self::KIND.as_str() {
                    Ok($name)
                } else {
                    Err(serde::de::Error::invalid_value(
                        serde::de::Unexpected::Str(&given),
                        &concat!("\"", stringify!($kind), "\""),
                    ))
                }
            }
        }
    };
}

kind_tag!(RepoKind => Repo);
kind_tag!(IssueKind => Issue);
kind_tag!(ContextPacketKind => ContextPacket);
kind_tag!(ConstraintSnapshotKind => ConstraintSnapshot);
kind_tag!(DoctrineRefKind => DoctrineRef);
kind_tag!(RunKind => Run);
kind_tag!(ArtifactKind => Artifact);

/// A new object id: a UUID v7, so ids sort by creation time and never repeat across kinds.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---------------------------------------------------------------------------------------
// Primitives

/// Someone or something that acts: a person, an agent, or the system itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub actor_kind: ActorKind,
    pub actor_id: String,
    #[serde(default)]
    pub display: Option<String>,
}

/// Where an object comes from outside (e.g. `github`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub system: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// A pointer to another object. Must resolve to exactly one existing object of `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ref {
    pub kind: ObjectKind,
    pub id: String,
    /// What the target is to the holder (e.g. `primary_context`).
    #[serde(default)]
    pub role: Option<String>,
}

impl Ref {
    pub fn new(kind: ObjectKind, id: impl Into<String>) -> Ref {
        Ref { kind, id: id.into(), role: None }
    }
}

// ---------------------------------------------------------------------------------------
// Repo

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoPolicy {
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    #[serde(default)]
    pub secrets_profile: Option<String>,
}

/// A code repository; contains Issues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    pub kind: RepoKind,
    pub id: String,
    pub name: String,
    /// Unique; stays the same when the name changes.
    pub slug: String,
    pub source: Source,
    pub default_branch: String,
    pub visibility: Visibility,
    pub owners: Vec<Actor>,
    pub policy: Option<RepoPolicy>,
    pub links: Vec<String>,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Issue

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    #[serde(default)]
    pub criteria: Vec<String>,
    #[serde(default)]
    pub tests_expected: Option<Vec<String>>,
}

/// Links to other Issues.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Relationships {
    #[serde(default)]
    pub parent: Option<Ref>,
    #[serde(default)]
    pub blocks: Vec<Ref>,
    #[serde(default)]
    pub blocked_by: Vec<Ref>,
    #[serde(default)]
    pub duplicates: Vec<Ref>,
}

/// A unit of intended work in a Repo; collects context, doctrine and constraints, and the
/// Runs that worked on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Issue {
    pub kind: IssueKind,
    pub id: String,
    pub repo: Ref,
    pub title: String,
    pub description: String,
    #[serde(rename = "type")]
    pub issue_type: IssueType,
    pub priority: Priority,
    pub status: Status,
    pub assignees: Vec<Actor>,
    pub watchers: Vec<Actor>,
    pub doctrine_refs: Vec<Ref>,
    /// Refs to ConstraintSnapshots.
    pub constraints: Vec<Ref>,
    pub context_packets: Vec<Ref>,
    pub acceptance: Acceptance,
    pub relationships: Relationships,
    /// Every Run for this Issue, oldest first; maintained by the server.
    pub runs: Vec<Ref>,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// ContextPacket

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub title: String,
    pub uri: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub excerpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataBlob {
    pub name: String,
    pub media_type: String,
    #[serde(default)]
    pub uri: Option<String>,
    /// The content itself, for small blobs.
    #[serde(default)]
    pub inline: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PacketInputs {
    #[serde(default)]
    pub documents: Vec<Document>,
    #[serde(default)]
    pub data_blobs: Vec<DataBlob>,
    #[serde(default)]
    pub links: Vec<String>,
}

/// What was known for an Issue at one moment. Immutable: new knowledge is a new packet
/// with a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextPacket {
    pub kind: ContextPacketKind,
    pub id: String,
    pub for_issue: Ref,
    pub version: String,
    pub summary: String,
    pub inputs: PacketInputs,
    pub assumptions: Vec<String>,
    pub open_questions: Vec<String>,
    pub instructions: String,
    pub doctrine_refs: Vec<Ref>,
    pub constraint_snapshot: Option<Ref>,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// ConstraintSnapshot

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeConstraint {
    #[serde(default)]
    pub available_minutes: Option<u32>,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnergyConstraint {
    /// 0 (none) to 5 (full).
    #[serde(default)]
    pub score_0_5: Option<u8>,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConstraint {
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConstraint {
    #[serde(default)]
    pub usd_available: Option<f64>,
    #[serde(default)]
    pub burn_limit_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolsConstraint {
    #[serde(default)]
    pub allowed: Vec<String>,
    #[serde(default)]
    pub blocked: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConstraint {
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub connectivity: Option<Connectivity>,
    #[serde(default)]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskConstraint {
    #[serde(default)]
    pub tolerance: Option<RiskTolerance>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// Every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default)]
    pub time: Option<TimeConstraint>,
    #[serde(default)]
    pub energy: Option<EnergyConstraint>,
    #[serde(default)]
    pub health: Option<HealthConstraint>,
    #[serde(default)]
    pub budget: Option<BudgetConstraint>,
    #[serde(default)]
    pub tools: Option<ToolsConstraint>,
    #[serde(default)]
    pub environment: Option<EnvironmentConstraint>,
    #[serde(default)]
    pub risk: Option<RiskConstraint>,
}

/// The limits someone or something worked under at one moment. Immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstraintSnapshot {
    pub kind: ConstraintSnapshotKind,
    pub id: String,
    pub scope: ConstraintScope,
    pub owner: Actor,
    pub constraints: Constraints,
    pub tags: Vec<String>,
    pub meta: Meta,
    /// Set by the server when the snapshot is stored (it has no created/updated times).
    pub captured_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// DoctrineRef

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Applicability {
    /// Refs to Repos.
    #[serde(default)]
    pub repo_refs: Vec<Ref>,
    #[serde(default)]
    pub issue_types: Vec<IssueType>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A rule of the house (principle, policy, procedure…), versioned: (namespace, name,
/// version) is unique.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DoctrineRef {
    pub kind: DoctrineRefKind,
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub doctrine_type: DoctrineType,
    pub priority: DoctrinePriority,
    pub statement: String,
    pub rationale: Option<String>,
    pub links: Vec<String>,
    pub applicability: Applicability,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Run

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Executor {
    pub actor: Actor,
    /// Where it ran, e.g. `local`, `ci`, `container`.
    pub runtime: String,
    #[serde(default)]
    pub toolchain: Vec<String>,
}

/// What a Run consumed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInputs {
    #[serde(default)]
    pub context_packets: Vec<Ref>,
    #[serde(default)]
    pub doctrine_refs: Vec<Ref>,
    /// Pinned at start.
    #[serde(default)]
    pub constraint_snapshot: Option<Ref>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub steps: Vec<String>,
    #[serde(default)]
    pub risk_notes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    #[serde(default)]
    pub usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub compute_s: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunOutputs {
    /// Every Artifact produced by this Run, oldest first; maintained by the server.
    #[serde(default)]
    pub artifacts: Vec<Ref>,
    #[serde(default)]
    pub result_summary: Option<String>,
    #[serde(default)]
    pub decision_log: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub category: FailureCategory,
    pub message: String,
}

/// One execution of work for an Issue: what went in, who ran it, what came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub kind: RunKind,
    pub id: String,
    pub for_issue: Ref,
    pub repo: Ref,
    pub status: Status,
    pub mode: RunMode,
    pub executor: Executor,
    pub inputs: RunInputs,
    pub plan: Plan,
    pub telemetry: Telemetry,
    pub cost: Cost,
    pub outputs: RunOutputs,
    pub failure: Option<Failure>,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Artifact

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub status: VerificationStatus,
    #[serde(default)]
    pub evidence_uri: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    #[serde(default)]
    pub status: VerificationStatus,
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// Something a Run produced (a patch, a build, a trace folder…), for an Issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub id: String,
    pub produced_by: Ref,
    pub for_issue: Ref,
    #[serde(rename = "type")]
    pub artifact_type: ArtifactType,
    pub title: String,
    pub uri: String,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size_bytes: Option<i64>,
    pub preview: Option<String>,
    pub verification: Verification,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Any object

/// An object of any kind, as the generic parts of the service and the store pass it.
/// Serializes as the object itself.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Object {
    Repo(Repo),
    Issue(Issue),
    ContextPacket(ContextPacket),
    ConstraintSnapshot(ConstraintSnapshot),
    DoctrineRef(DoctrineRef),
    Run(Run),
    Artifact(Artifact),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Repo(_) => ObjectKind::Repo,
            Object::Issue(_) => ObjectKind::Issue,
            Object::ContextPacket(_) => ObjectKind::ContextPacket,
            Object::ConstraintSnapshot(_) => ObjectKind::ConstraintSnapshot,
            Object::DoctrineRef(_) => ObjectKind::DoctrineRef,
            Object::Run(_) => ObjectKind::Run,
            Object::Artifact(_) => ObjectKind::Artifact,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Object::Repo(o) => &o.id,
            Object::Issue(o) => &o.id,
            Object::ContextPacket(o) => &o.id,
            Object::ConstraintSnapshot(o) => &o.id,
            Object::DoctrineRef(o) => &o.id,
            Object::Run(o) => &o.id,
            Object::Artifact(o) => &o.id,
        }
    }

    /// A Ref to this object.
    pub fn to_ref(&self) -> Ref {
        Ref::new(self.kind(), self.id())
    }
}

/// Unwraps an [`Object`] into its one kind.
macro_rules! object_into {
    ($($variant:ident),+) => {
        $(
            impl TryFrom<Object> for $variant {
                type Error = Object;
                fn try_from(o: Object) -> Result<Self, Object> {
                    match o {
                        Object::$variant(v) => Ok(v),
                        other => Err(other),
                    }
                }
            }

            impl From<$variant> for Object {
                fn from(v: $variant) -> Object {
                    Object::$variant(v)
                }
            }
        )+
    };
}

object_into!(Repo, Issue, ContextPacket, ConstraintSnapshot, DoctrineRef, Run, Artifact);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_use_the_contract_spelling() {
        assert_eq!(serde_json::to_value(Priority::P0).unwrap(), "P0");
        assert_eq!(serde_json::to_value(ArtifactType::CodePatch).unwrap(), "code_patch");
        assert_eq!(serde_json::to_value(ArtifactType::ContainerImage).unwrap(), "container_image");
        assert_eq!(serde_json::to_value(Status::Canceled).unwrap(), "canceled");
        assert_eq!(serde_json::to_value(ObjectKind::ConstraintSnapshot).unwrap(), "ConstraintSnapshot");
        assert_eq!("blocked".parse::<Status>().unwrap(), Status::Blocked);
        assert!("cancelled".parse::<Status>().unwrap_err().expected.contains("canceled"));
        for s in Status::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn kind_tags_accept_only_their_kind() {
        assert_eq!(serde_json::to_value(IssueKind).unwrap(), "Issue");
        assert!(serde_json::from_value::<IssueKind>("Issue".into()).is_ok());
        assert!(serde_json::from_value::<IssueKind>("Run".into()).is_err());
    }

    #[test]
    fn paths_map_both_ways() {
        for k in ObjectKind::ALL {
            assert_eq!(ObjectKind::from_path(k.path()), Some(*k));
        }
        assert_eq!(ObjectKind::from_path("tasks"), None);
        assert!(ObjectKind::ContextPacket.is_immutable() && !ObjectKind::Issue.is_immutable());
        assert!(Status::Canceled.is_final() && !Status::Blocked.is_final());
    }
}
