//! What a client may send: the create body of each kind, the patch bodies of Issue and
//! Run, and list queries; their validation, with errors that name the field.
//!
//! Checks that need no database live here (lengths, ranges, a Ref's kind, duplicates in a
//! list). Whether a Ref resolves is checked by the store, inside the transaction that
//! writes, so a Ref can never point at nothing.

use std::collections::HashSet;
use std::fmt::Display;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::{CwomError, CwomResult};
use super::types::*;
use crate::storable;

/// Limits from CWOM.md, in characters.
pub mod limits {
    pub const ID_MAX: usize = 128;
    pub const ROLE_MAX: usize = 64;
    pub const ACTOR_ID_MAX: usize = 128;
    pub const DISPLAY_MAX: usize = 256;
    pub const SOURCE_SYSTEM_MAX: usize = 64;
    pub const REPO_NAME_MAX: usize = 256;
    pub const SLUG_MAX: usize = 256;
    pub const TITLE_MAX: usize = 512;
    pub const VERSION_MAX: usize = 64;
    pub const SUMMARY_MAX: usize = 4000;
    pub const NAMESPACE_MAX: usize = 128;
    pub const DOCTRINE_NAME_MAX: usize = 256;
    pub const STATEMENT_MAX: usize = 4000;
    pub const URI_MAX: usize = 2000;
    pub const PREVIEW_MAX: usize = 4000;
    /// Not in CWOM.md: a runtime is a short label (`local`, `ci`, `container`).
    pub const RUNTIME_MAX: usize = 64;
    /// Energy is scored 0 to 5.
    pub const ENERGY_MAX: u8 = 5;
}

pub(crate) fn invalid(field: impl Display, reason: impl Display) -> CwomError {
    CwomError::Invalid(format!("{field}: {reason}"))
}

/// Deserializes a request body into `T`, naming the field that broke it by its path
/// ([`crate::fields`]); the CWOM routes and the task intake both read their bodies through it.
pub fn parse_body<T: DeserializeOwned>(body: Value) -> CwomResult<T> {
    // What no store can hold (a NUL anywhere) is refused first, named by JSON pointer.
    storable::check_json("", &body).map_err(|e| CwomError::Invalid(e.to_string()))?;
    if !body.is_object() {
        return Err(invalid("body", "must be a JSON object"));
    }
    crate::fields::from_value(body).map_err(|e| CwomError::Invalid(e.to_string()))
}

/// For patch fields where `null` (clear) differs from absent (leave alone).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---------------------------------------------------------------------------------------
// Field checks

fn text(field: &str, value: &str, min: usize, max: usize) -> CwomResult<()> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(invalid(
            field,
            if min == 0 {
                format!("must be at most {max} characters")
            } else {
                format!("must be {min} to {max} characters")
            },
        ));
    }
    Ok(())
}

fn opt_text(field: &str, value: &Option<String>, max: usize) -> CwomResult<()> {
    value.as_deref().map_or(Ok(()), |v| text(field, v, 0, max))
}

fn non_empty(field: &str, value: &str) -> CwomResult<()> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

fn non_negative(field: &str, value: Option<f64>) -> CwomResult<()> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(invalid(field, "must be a number of at least 0")),
        _ => Ok(()),
    }
}

fn actor(field: &str, a: &Actor) -> CwomResult<()> {
    text(&format!("{field}.actor_id"), &a.actor_id, 1, limits::ACTOR_ID_MAX)?;
    opt_text(&format!("{field}.display"), &a.display, limits::DISPLAY_MAX)
}

fn actors(field: &str, list: &[Actor]) -> CwomResult<()> {
    list.iter().enumerate().try_for_each(|(i, a)| actor(&format!("{field}[{i}]"), a))
}

fn source(field: &str, s: &Source) -> CwomResult<()> {
    text(&format!("{field}.system"), &s.system, 1, limits::SOURCE_SYSTEM_MAX)
}

/// A Ref's shape and kind; whether it resolves is the store's check.
fn reference(field: &str, r: &Ref, want: ObjectKind) -> CwomResult<()> {
    if r.kind != want {
        return Err(CwomError::InvalidRef(format!("{field}: must be a Ref to a {want}, not to a {}", r.kind)));
    }
    text(&format!("{field}.id"), &r.id, 1, limits::ID_MAX)?;
    opt_text(&format!("{field}.role"), &r.role, limits::ROLE_MAX)
}

fn opt_reference(field: &str, r: &Option<Ref>, want: ObjectKind) -> CwomResult<()> {
    r.as_ref().map_or(Ok(()), |r| reference(field, r, want))
}

/// Each Ref of a list, and no object twice: a list is a set of links, in order.
fn references(field: &str, refs: &[Ref], want: ObjectKind) -> CwomResult<()> {
    let mut seen = HashSet::new();
    for (i, r) in refs.iter().enumerate() {
        reference(&format!("{field}[{i}]"), r, want)?;
        if !seen.insert(r.id.as_str()) {
            return Err(invalid(format!("{field}[{i}]"), format!("names {} {} a second time", r.kind, r.id)));
        }
    }
    Ok(())
}

/// A client-given time must lie in the range both stores hold (see [`storable`]).
fn time(field: &str, t: Option<DateTime<Utc>>) -> CwomResult<()> {
    match t {
        Some(t) => storable::check_time(field, t).map(|_| ()).map_err(|e| CwomError::Invalid(e.to_string())),
        None => Ok(()),
    }
}

fn constraints(c: &Constraints) -> CwomResult<()> {
    time("constraints.time.deadline", c.time.as_ref().and_then(|t| t.deadline))?;
    if let Some(e) = &c.energy {
        if e.score_0_5.is_some_and(|s| s > limits::ENERGY_MAX) {
            return Err(invalid("constraints.energy.score_0_5", "must be from 0 to 5"));
        }
    }
    if let Some(b) = &c.budget {
        non_negative("constraints.budget.usd_available", b.usd_available)?;
        non_negative("constraints.budget.burn_limit_usd", b.burn_limit_usd)?;
    }
    Ok(())
}

fn telemetry(t: &Telemetry) -> CwomResult<()> {
    time("telemetry.started_at", t.started_at)?;
    time("telemetry.ended_at", t.ended_at)?;
    if let (Some(start), Some(end)) = (t.started_at, t.ended_at) {
        if end < start {
            return Err(invalid("telemetry.ended_at", "must not be before telemetry.started_at"));
        }
    }
    non_negative("telemetry.duration_s", t.duration_s)
}

fn cost(c: &Cost) -> CwomResult<()> {
    non_negative("cost.usd", c.usd)?;
    non_negative("cost.compute_s", c.compute_s)
}

fn relationships(r: &Relationships) -> CwomResult<()> {
    opt_reference("relationships.parent", &r.parent, ObjectKind::Issue)?;
    references("relationships.blocks", &r.blocks, ObjectKind::Issue)?;
    references("relationships.blocked_by", &r.blocked_by, ObjectKind::Issue)?;
    references("relationships.duplicates", &r.duplicates, ObjectKind::Issue)
}

fn failure(f: &Failure) -> CwomResult<()> {
    non_empty("failure.message", &f.message)
}

/// A status change: anything but leaving a final status.
pub(crate) fn transition(kind: ObjectKind, id: &str, from: Status, to: Status) -> CwomResult<()> {
    if from.is_final() && to != from {
        return Err(CwomError::FinalStatus { kind, id: id.to_string(), status: from, to });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Create bodies

/// Builds the stored object of `kind` from a create body: a fresh id, server times,
/// defaults filled in.
pub fn new_object(kind: ObjectKind, body: Value, now: DateTime<Utc>) -> CwomResult<Object> {
    Ok(match kind {
        ObjectKind::Repo => parse_body::<NewRepo>(body)?.build(now)?.into(),
        ObjectKind::Issue => parse_body::<NewIssue>(body)?.build(now)?.into(),
        ObjectKind::ContextPacket => parse_body::<NewContextPacket>(body)?.build(now)?.into(),
        ObjectKind::ConstraintSnapshot => parse_body::<NewConstraintSnapshot>(body)?.build(now)?.into(),
        ObjectKind::DoctrineRef => parse_body::<NewDoctrineRef>(body)?.build(now)?.into(),
        ObjectKind::Run => parse_body::<NewRun>(body)?.build(now)?.into(),
        ObjectKind::Artifact => parse_body::<NewArtifact>(body)?.build(now)?.into(),
    })
}

fn default_branch() -> String {
    "main".to_string()
}

/// `POST /cwom/repos`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    /// Optional; when sent it must be `"Repo"`.
    #[serde(default)]
    pub kind: Option<RepoKind>,
    pub name: String,
    pub slug: String,
    pub source: Source,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default)]
    pub owners: Vec<Actor>,
    #[serde(default)]
    pub policy: Option<RepoPolicy>,
    #[serde(default)]
    pub links: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl NewRepo {
    pub fn build(self, now: DateTime<Utc>) -> CwomResult<Repo> {
        text("name", &self.name, 1, limits::REPO_NAME_MAX)?;
        text("slug", &self.slug, 1, limits::SLUG_MAX)?;
        source("source", &self.source)?;
        non_empty("default_branch", &self.default_branch)?;
        actors("owners", &self.owners)?;
        Ok(Repo {
            kind: RepoKind,
            id: new_id(),
            name: self.name,
            slug: self.slug,
            source: self.source,
            default_branch: self.default_branch,
            visibility: self.visibility,
            owners: self.owners,
            policy: self.policy,
            links: self.links,
            tags: self.tags,
            meta: self.meta,
            created_at: now,
            updated_at: now,
        })
    }
}

/// `POST /cwom/issues`. `runs` is not accepted: the server keeps it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIssue {
    #[serde(default)]
    pub kind: Option<IssueKind>,
    pub repo: Ref,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub issue_type: IssueType,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub assignees: Vec<Actor>,
    #[serde(default)]
    pub watchers: Vec<Actor>,
    #[serde(default)]
    pub doctrine_refs: Vec<Ref>,
    #[serde(default)]
    pub constraints: Vec<Ref>,
    #[serde(default)]
    pub context_packets: Vec<Ref>,
    #[serde(default)]
    pub acceptance: Acceptance,
    #[serde(default)]
    pub relationships: Relationships,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl NewIssue {
    pub fn build(self, now: DateTime<Utc>) -> CwomResult<Issue> {
        reference("repo", &self.repo, ObjectKind::Repo)?;
        text("title", &self.title, 1, limits::TITLE_MAX)?;
        actors("assignees", &self.assignees)?;
        actors("watchers", &self.watchers)?;
        references("doctrine_refs", &self.doctrine_refs, ObjectKind::DoctrineRef)?;
        references("constraints", &self.constraints, ObjectKind::ConstraintSnapshot)?;
        references("context_packets", &self.context_packets, ObjectKind::ContextPacket)?;
        relationships(&self.relationships)?;
        Ok(Issue {
            kind: IssueKind,
            id: new_id(),
            repo: self.repo,
            title: self.title,
            description: self.description,
            issue_type: self.issue_type,
            priority: self.priority,
            status: self.status,
            assignees: self.assignees,
            watchers: self.watchers,
            doctrine_refs: self.doctrine_refs,
            constraints: self.constraints,
            context_packets: self.context_packets,
            acceptance: self.acceptance,
            relationships: self.relationships,
            runs: Vec::new(),
            tags: self.tags,
            meta: self.meta,
            created_at: now,
            updated_at: now,
        })
    }
}

/// `POST /cwom/context-packets`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContextPacket {
    #[serde(default)]
    pub kind: Option<ContextPacketKind>,
    pub for_issue: Ref,
    pub version: String,
    pub summary: String,
    #[serde(default)]
    pub inputs: PacketInputs,
    #[serde(default)]
    pub assumptions: Vec<String>,
    #[serde(default)]
    pub open_questions: Vec<String>,
    #[serde(default)]
    pub instructions: String,
    #[serde(default)]
    pub doctrine_refs: Vec<Ref>,
    #[serde(default)]
    pub constraint_snapshot: Option<Ref>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl NewContextPacket {
    pub fn build(self, now: DateTime<Utc>) -> CwomResult<ContextPacket> {
        reference("for_issue", &self.for_issue, ObjectKind::Issue)?;
        text("version", &self.version, 1, limits::VERSION_MAX)?;
        text("summary", &self.summary, 1, limits::SUMMARY_MAX)?;
        for (i, d) in self.inputs.documents.iter().enumerate() {
            non_empty(&format!("inputs.documents[{i}].title"), &d.title)?;
            non_empty(&format!("inputs.documents[{i}].uri"), &d.uri)?;
        }
        for (i, b) in self.inputs.data_blobs.iter().enumerate() {
            non_empty(&format!("inputs.data_blobs[{i}].name"), &b.name)?;
            non_empty(&format!("inputs.data_blobs[{i}].media_type"), &b.media_type)?;
        }
        references("doctrine_refs", &self.doctrine_refs, ObjectKind::DoctrineRef)?;
        opt_reference("constraint_snapshot", &self.constraint_snapshot, ObjectKind::ConstraintSnapshot)?;
        Ok(ContextPacket {
            kind: ContextPacketKind,
            id: new_id(),
            for_issue: self.for_issue,
            version: self.version,
            summary: self.summary,
            inputs: self.inputs,
            assumptions: self.assumptions,
            open_questions: self.open_questions,
            instructions: self.instructions,
            doctrine_refs: self.doctrine_refs,
            constraint_snapshot: self.constraint_snapshot,
            tags: self.tags,
            meta: self.meta,
            created_at: now,
            updated_at: now,
        })
    }
}

/// `POST /cwom/constraint-snapshots`. `captured_at` is set by the server.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConstraintSnapshot {
    #[serde(default)]
    pub kind: Option<ConstraintSnapshotKind>,
    pub scope: ConstraintScope,
    pub owner: Actor,
    #[serde(default)]
    pub constraints: Constraints,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl NewConstraintSnapshot {
    pub fn build(self, now: DateTime<Utc>) -> CwomResult<ConstraintSnapshot> {
        actor("owner", &self.owner)?;
        constraints(&self.constraints)?;
        Ok(ConstraintSnapshot {
            kind: ConstraintSnapshotKind,
            id: new_id(),
            scope: self.scope,
            owner: self.owner,
            constraints: self.constraints,
            tags: self.tags,
            meta: self.meta,
            captured_at: now,
        })
    }
}

/// `POST /cwom/doctrine-refs`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDoctrineRef {
    #[serde(default)]
    pub kind: Option<DoctrineRefKind>,
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub doctrine_type: DoctrineType,
    #[serde(default)]
    pub priority: DoctrinePriority,
    pub statement: String,
    #[serde(default)]
    pub rationale: Option<String>,
    #[serde(default)]
    pub links: Vec<String>,
    #[serde(default)]
    pub applicability: Applicability,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl NewDoctrineRef {
    pub fn build(self, now: DateTime<Utc>) -> CwomResult<DoctrineRef> {
        text("namespace", &self.namespace, 1, limits::NAMESPACE_MAX)?;
        text("name", &self.name, 1, limits::DOCTRINE_NAME_MAX)?;
        text("version", &self.version, 1, limits::VERSION_MAX)?;
        text("statement", &self.statement, 1, limits::STATEMENT_MAX)?;
        references("applicability.repo_refs", &self.applicability.repo_refs, ObjectKind::Repo)?;
        Ok(DoctrineRef {
            kind: DoctrineRefKind,
            id: new_id(),
            namespace: self.namespace,
            name: self.name,
            version: self.version,
            doctrine_type: self.doctrine_type,
            priority: self.priority,
            statement: self.statement,
            rationale: self.rationale,
            links: self.links,
            applicability: self.applicability,
            tags: self.tags,
            meta: self.meta,
            created_at: now,
            updated_at: now,
        })
    }
}

/// A Run's `outputs` as a client sends it: `artifacts` is the server's (an Artifact joins
/// it by naming the Run in `produced_by`).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputsInput {
    #[serde(default)]
    pub artifacts: Option<Vec<Ref>>,
    #[serde(default)]
    pub result_summary: Option<String>,
    #[serde(default)]
    pub decision_log: Option<Vec<String>>,
}

impl OutputsInput {
    fn check(&self) -> CwomResult<()> {
        if self.artifacts.as_ref().is_some_and(|a| !a.is_empty()) {
            return Err(invalid(
                "outputs.artifacts",
                "is kept by the server: create an Artifact whose produced_by names this Run",
            ));
        }
        Ok(())
    }
}

/// `POST /cwom/runs`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    #[serde(default)]
    pub kind: Option<RunKind>,
    pub for_issue: Ref,
    pub repo: Ref,
    #[serde(default)]
    pub status: Status,
    pub mode: RunMode,
    pub executor: Executor,
    #[serde(default)]
    pub inputs: RunInputs,
    #[serde(default)]
    pub plan: Plan,
    #[serde(default)]
    pub telemetry: Telemetry,
    #[serde(default)]
    pub cost: Cost,
    #[serde(default)]
    pub outputs: OutputsInput,
    #[serde(default)]
    pub failure: Option<Failure>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl NewRun {
    pub fn build(self, now: DateTime<Utc>) -> CwomResult<Run> {
        reference("for_issue", &self.for_issue, ObjectKind::Issue)?;
        reference("repo", &self.repo, ObjectKind::Repo)?;
        actor("executor.actor", &self.executor.actor)?;
        text("executor.runtime", &self.executor.runtime, 1, limits::RUNTIME_MAX)?;
        references("inputs.context_packets", &self.inputs.context_packets, ObjectKind::ContextPacket)?;
        references("inputs.doctrine_refs", &self.inputs.doctrine_refs, ObjectKind::DoctrineRef)?;
        opt_reference("inputs.constraint_snapshot", &self.inputs.constraint_snapshot, ObjectKind::ConstraintSnapshot)?;
        telemetry(&self.telemetry)?;
        cost(&self.cost)?;
        self.outputs.check()?;
        if let Some(f) = &self.failure {
            failure(f)?;
        }
        Ok(Run {
            kind: RunKind,
            id: new_id(),
            for_issue: self.for_issue,
            repo: self.repo,
            status: self.status,
            mode: self.mode,
            executor: self.executor,
            inputs: self.inputs,
            plan: self.plan,
            telemetry: self.telemetry,
            cost: self.cost,
            outputs: RunOutputs {
                artifacts: Vec::new(),
                result_summary: self.outputs.result_summary,
                decision_log: self.outputs.decision_log.unwrap_or_default(),
            },
            failure: self.failure,
            tags: self.tags,
            meta: self.meta,
            created_at: now,
            updated_at: now,
        })
    }
}

/// `POST /cwom/artifacts`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewArtifact {
    #[serde(default)]
    pub kind: Option<ArtifactKind>,
    pub produced_by: Ref,
    pub for_issue: Ref,
    #[serde(rename = "type")]
    pub artifact_type: ArtifactType,
    pub title: String,
    pub uri: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<i64>,
    #[serde(default)]
    pub preview: Option<String>,
    #[serde(default)]
    pub verification: Verification,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl NewArtifact {
    pub fn build(self, now: DateTime<Utc>) -> CwomResult<Artifact> {
        reference("produced_by", &self.produced_by, ObjectKind::Run)?;
        reference("for_issue", &self.for_issue, ObjectKind::Issue)?;
        text("title", &self.title, 1, limits::TITLE_MAX)?;
        text("uri", &self.uri, 1, limits::URI_MAX)?;
        if self.size_bytes.is_some_and(|n| n < 0) {
            return Err(invalid("size_bytes", "must be at least 0"));
        }
        opt_text("preview", &self.preview, limits::PREVIEW_MAX)?;
        for (i, c) in self.verification.checks.iter().enumerate() {
            non_empty(&format!("verification.checks[{i}].name"), &c.name)?;
        }
        Ok(Artifact {
            kind: ArtifactKind,
            id: new_id(),
            produced_by: self.produced_by,
            for_issue: self.for_issue,
            artifact_type: self.artifact_type,
            title: self.title,
            uri: self.uri,
            digest: self.digest,
            media_type: self.media_type,
            size_bytes: self.size_bytes,
            preview: self.preview,
            verification: self.verification,
            tags: self.tags,
            meta: self.meta,
            created_at: now,
            updated_at: now,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Patch bodies

/// `PATCH /cwom/issues/{id}`: every field optional; a field sent replaces the stored one
/// (`null` leaves it as it is). `repo` and `runs` cannot be changed.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuePatch {
    pub title: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub issue_type: Option<IssueType>,
    pub priority: Option<Priority>,
    pub status: Option<Status>,
    pub assignees: Option<Vec<Actor>>,
    pub watchers: Option<Vec<Actor>>,
    pub doctrine_refs: Option<Vec<Ref>>,
    pub constraints: Option<Vec<Ref>>,
    pub context_packets: Option<Vec<Ref>>,
    pub acceptance: Option<Acceptance>,
    pub relationships: Option<Relationships>,
    pub tags: Option<Vec<String>>,
    pub meta: Option<Meta>,
}

impl IssuePatch {
    /// The checks that need no stored Issue; run before touching the database.
    pub fn validate(&self) -> CwomResult<()> {
        if let Some(t) = &self.title {
            text("title", t, 1, limits::TITLE_MAX)?;
        }
        if let Some(a) = &self.assignees {
            actors("assignees", a)?;
        }
        if let Some(w) = &self.watchers {
            actors("watchers", w)?;
        }
        if let Some(r) = &self.doctrine_refs {
            references("doctrine_refs", r, ObjectKind::DoctrineRef)?;
        }
        if let Some(r) = &self.constraints {
            references("constraints", r, ObjectKind::ConstraintSnapshot)?;
        }
        if let Some(r) = &self.context_packets {
            references("context_packets", r, ObjectKind::ContextPacket)?;
        }
        if let Some(r) = &self.relationships {
            relationships(r)?;
        }
        Ok(())
    }

    /// Applies the patch to the stored Issue (inside the store's transaction).
    pub fn apply(self, issue: &mut Issue, now: DateTime<Utc>) -> CwomResult<()> {
        if let Some(status) = self.status {
            transition(ObjectKind::Issue, &issue.id, issue.status, status)?;
            issue.status = status;
        }
        macro_rules! set {
            ($($field:ident),+) => { $(if let Some(v) = self.$field { issue.$field = v; })+ };
        }
        set!(
            title,
            description,
            issue_type,
            priority,
            assignees,
            watchers,
            doctrine_refs,
            constraints,
            context_packets,
            acceptance,
            relationships,
            tags,
            meta
        );
        if let Some(parent) = &issue.relationships.parent {
            if parent.id == issue.id {
                return Err(invalid("relationships.parent", "an Issue cannot be its own parent"));
            }
        }
        issue.updated_at = now;
        Ok(())
    }
}

/// `PATCH /cwom/runs/{id}`: `status`, `telemetry`, `cost`, `outputs`, `failure` (and
/// `tags`, `meta`). `telemetry` and `cost` merge: a sub-field sent replaces that
/// sub-field. `failure: null` clears it.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPatch {
    pub status: Option<Status>,
    pub telemetry: Option<Telemetry>,
    pub cost: Option<Cost>,
    pub outputs: Option<OutputsInput>,
    #[serde(default, deserialize_with = "present")]
    pub failure: Option<Option<Failure>>,
    pub tags: Option<Vec<String>>,
    pub meta: Option<Meta>,
}

impl RunPatch {
    pub fn validate(&self) -> CwomResult<()> {
        if let Some(t) = &self.telemetry {
            non_negative("telemetry.duration_s", t.duration_s)?;
        }
        if let Some(c) = &self.cost {
            cost(c)?;
        }
        if let Some(o) = &self.outputs {
            o.check()?;
        }
        if let Some(Some(f)) = &self.failure {
            failure(f)?;
        }
        Ok(())
    }

    /// Applies the patch to the stored Run (inside the store's transaction). When the
    /// patch moves an end of the run, both ends are known and no duration was sent, the
    /// duration is computed, so it never contradicts the times.
    pub fn apply(self, run: &mut Run, now: DateTime<Utc>) -> CwomResult<()> {
        if let Some(status) = self.status {
            transition(ObjectKind::Run, &run.id, run.status, status)?;
            run.status = status;
        }
        if let Some(t) = self.telemetry {
            let merged = &mut run.telemetry;
            merged.started_at = t.started_at.or(merged.started_at);
            merged.ended_at = t.ended_at.or(merged.ended_at);
            merged.duration_s = t.duration_s.or(merged.duration_s);
            let moved = t.started_at.is_some() || t.ended_at.is_some();
            if let (true, None, Some(start), Some(end)) = (moved, t.duration_s, merged.started_at, merged.ended_at) {
                merged.duration_s = Some((end - start).num_microseconds().unwrap_or(0) as f64 / 1e6);
            }
            telemetry(merged)?;
        }
        if let Some(c) = self.cost {
            run.cost.usd = c.usd.or(run.cost.usd);
            run.cost.tokens = c.tokens.or(run.cost.tokens);
            run.cost.compute_s = c.compute_s.or(run.cost.compute_s);
        }
        if let Some(o) = self.outputs {
            if let Some(s) = o.result_summary {
                run.outputs.result_summary = Some(s);
            }
            if let Some(log) = o.decision_log {
                run.outputs.decision_log = log;
            }
        }
        if let Some(f) = self.failure {
            run.failure = f;
        }
        if let Some(t) = self.tags {
            run.tags = t;
        }
        if let Some(m) = self.meta {
            run.meta = m;
        }
        run.updated_at = now;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Lists

/// Filters of one kind's list, as CWOM.md names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFilter {
    Repos {
        visibility: Option<Visibility>,
    },
    Issues {
        repo_id: Option<String>,
        status: Option<Status>,
        issue_type: Option<IssueType>,
        priority: Option<Priority>,
    },
    ContextPackets,
    ConstraintSnapshots,
    DoctrineRefs {
        namespace: Option<String>,
        doctrine_type: Option<DoctrineType>,
    },
    Runs {
        issue_id: Option<String>,
        repo_id: Option<String>,
        status: Option<Status>,
        mode: Option<RunMode>,
    },
    Artifacts {
        run_id: Option<String>,
        issue_id: Option<String>,
        artifact_type: Option<ArtifactType>,
    },
}

impl ListFilter {
    /// No filter: every object of `kind`.
    pub fn all(kind: ObjectKind) -> ListFilter {
        match kind {
            ObjectKind::Repo => ListFilter::Repos { visibility: None },
            ObjectKind::Issue => ListFilter::Issues { repo_id: None, status: None, issue_type: None, priority: None },
            ObjectKind::ContextPacket => ListFilter::ContextPackets,
            ObjectKind::ConstraintSnapshot => ListFilter::ConstraintSnapshots,
            ObjectKind::DoctrineRef => ListFilter::DoctrineRefs { namespace: None, doctrine_type: None },
            ObjectKind::Run => ListFilter::Runs { issue_id: None, repo_id: None, status: None, mode: None },
            ObjectKind::Artifact => ListFilter::Artifacts { run_id: None, issue_id: None, artifact_type: None },
        }
    }

    pub fn kind(&self) -> ObjectKind {
        match self {
            ListFilter::Repos { .. } => ObjectKind::Repo,
            ListFilter::Issues { .. } => ObjectKind::Issue,
            ListFilter::ContextPackets => ObjectKind::ContextPacket,
            ListFilter::ConstraintSnapshots => ObjectKind::ConstraintSnapshot,
            ListFilter::DoctrineRefs { .. } => ObjectKind::DoctrineRef,
            ListFilter::Runs { .. } => ObjectKind::Run,
            ListFilter::Artifacts { .. } => ObjectKind::Artifact,
        }
    }

    /// The filter names this kind's list accepts (besides `limit` and `offset`).
    pub fn names(kind: ObjectKind) -> &'static [&'static str] {
        match kind {
            ObjectKind::Repo => &["visibility"],
            ObjectKind::Issue => &["repo_id", "status", "type", "priority"],
            ObjectKind::ContextPacket | ObjectKind::ConstraintSnapshot => &[],
            ObjectKind::DoctrineRef => &["namespace", "type"],
            ObjectKind::Run => &["issue_id", "repo_id", "status", "mode"],
            ObjectKind::Artifact => &["run_id", "issue_id", "type"],
        }
    }
}

/// One page of one kind's objects, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: ListFilter,
    pub limit: u32,
    pub offset: u64,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn new(filter: ListFilter) -> ListQuery {
        ListQuery { filter, limit: Self::DEFAULT_LIMIT, offset: 0 }
    }

    /// Parses a query string's pairs for `kind`'s list; an unknown name or a bad value is
    /// refused.
    pub fn parse(kind: ObjectKind, pairs: &[(String, String)]) -> CwomResult<ListQuery> {
        fn value<T: std::str::FromStr<Err = UnknownValue>>(name: &str, v: &str) -> CwomResult<T> {
            v.parse().map_err(|e: UnknownValue| CwomError::InvalidFilter(format!("{name}: {e}")))
        }
        fn id(name: &str, v: &str) -> CwomResult<String> {
            if v.is_empty() || v.chars().count() > limits::ID_MAX {
                return Err(CwomError::InvalidFilter(format!("{name}: must be 1 to {} characters", limits::ID_MAX)));
            }
            storable::check_text(name, v).map_err(|e| CwomError::InvalidFilter(e.to_string()))?;
            Ok(v.to_string())
        }
        let mut q = ListQuery::new(ListFilter::all(kind));
        for (name, v) in pairs {
            match (name.as_str(), &mut q.filter) {
                ("limit", _) => {
                    q.limit = v.parse::<u32>().ok().filter(|n| (1..=Self::MAX_LIMIT).contains(n)).ok_or_else(|| {
                        CwomError::InvalidFilter(format!("limit must be from 1 to {} (got {v:?})", Self::MAX_LIMIT))
                    })?
                }
                ("offset", _) => {
                    q.offset =
                        v.parse::<u64>().ok().filter(|n| *n <= i64::MAX as u64).ok_or_else(|| {
                            CwomError::InvalidFilter(format!("offset must be a whole number (got {v:?})"))
                        })?
                }
                ("visibility", ListFilter::Repos { visibility }) => *visibility = Some(value(name, v)?),
                ("repo_id", ListFilter::Issues { repo_id, .. } | ListFilter::Runs { repo_id, .. }) => {
                    *repo_id = Some(id(name, v)?)
                }
                ("status", ListFilter::Issues { status, .. } | ListFilter::Runs { status, .. }) => {
                    *status = Some(value(name, v)?)
                }
                ("type", ListFilter::Issues { issue_type, .. }) => *issue_type = Some(value(name, v)?),
                ("priority", ListFilter::Issues { priority, .. }) => *priority = Some(value(name, v)?),
                ("namespace", ListFilter::DoctrineRefs { namespace, .. }) => *namespace = Some(v.clone()),
                ("type", ListFilter::DoctrineRefs { doctrine_type, .. }) => *doctrine_type = Some(value(name, v)?),
                ("issue_id", ListFilter::Runs { issue_id, .. } | ListFilter::Artifacts { issue_id, .. }) => {
                    *issue_id = Some(id(name, v)?)
                }
                ("mode", ListFilter::Runs { mode, .. }) => *mode = Some(value(name, v)?),
                ("run_id", ListFilter::Artifacts { run_id, .. }) => *run_id = Some(id(name, v)?),
                ("type", ListFilter::Artifacts { artifact_type, .. }) => *artifact_type = Some(value(name, v)?),
                (other, _) => {
                    let mut known: Vec<&str> = ListFilter::names(kind).to_vec();
                    known.extend(["limit", "offset"]);
                    return Err(CwomError::InvalidFilter(format!(
                        "unknown filter {other:?} for {} (known: {})",
                        kind.path(),
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_body_names_the_bad_field() {
        let body = json!({"namespace": "eng", "name": "n", "version": "1", "type": "rule", "statement": "s"});
        let e = parse_body::<NewDoctrineRef>(body).unwrap_err().to_string();
        assert!(e.starts_with("type: unknown variant `rule`"), "{e}");
        let e = parse_body::<NewDoctrineRef>(json!({"namespace": "eng"})).unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
        let e = parse_body::<NewRepo>(json!({"name": "a", "slug": "a", "source": {"system": "gh"}, "colour": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = parse_body::<NewRepo>(json!([1])).unwrap_err().to_string();
        assert!(e.starts_with("body:"), "{e}");
    }

    #[test]
    fn final_statuses_are_never_left() {
        assert!(transition(ObjectKind::Issue, "i", Status::Planned, Status::Done).is_ok());
        assert!(transition(ObjectKind::Issue, "i", Status::Done, Status::Done).is_ok());
        for from in [Status::Done, Status::Failed, Status::Canceled] {
            assert!(matches!(
                transition(ObjectKind::Run, "r", from, Status::Running),
                Err(CwomError::FinalStatus { .. })
            ));
        }
    }

    #[test]
    fn list_queries_accept_only_their_filters() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let parsed = ListQuery::parse(ObjectKind::Issue, &q(&[("status", "done"), ("type", "bug"), ("limit", "5")]));
        assert_eq!(
            parsed.unwrap(),
            ListQuery {
                filter: ListFilter::Issues {
                    repo_id: None,
                    status: Some(Status::Done),
                    issue_type: Some(IssueType::Bug),
                    priority: None
                },
                limit: 5,
                offset: 0
            }
        );
        assert!(ListQuery::parse(ObjectKind::Repo, &q(&[("status", "done")])).is_err());
        assert!(ListQuery::parse(ObjectKind::Issue, &q(&[("status", "cancelled")])).is_err());
        assert!(ListQuery::parse(ObjectKind::Run, &q(&[("limit", "0")])).is_err());
        assert!(ListQuery::parse(ObjectKind::ContextPacket, &q(&[("issue_id", "x")])).is_err());
    }

    #[test]
    fn ref_lists_refuse_wrong_kinds_and_repeats() {
        let r = |kind, id: &str| Ref::new(kind, id);
        assert!(references("x", &[r(ObjectKind::Run, "a")], ObjectKind::Run).is_ok());
        assert!(matches!(
            references("x", &[r(ObjectKind::Issue, "a")], ObjectKind::Run),
            Err(CwomError::InvalidRef(_))
        ));
        let e = references("x", &[r(ObjectKind::Run, "a"), r(ObjectKind::Run, "a")], ObjectKind::Run).unwrap_err();
        assert!(e.to_string().starts_with("x[1]:"), "{e}");
    }
}
