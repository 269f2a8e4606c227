//! How each CWOM kind maps onto its tables, in neither dialect's types (shared by both
//! drivers): the columns of each
//! table, a row as a list of [`Val`]s, the Ref lists kept in join tables (or derived from
//! a foreign key), and the [`WritePlan`] of checks and writes one operation makes.
//!
//! Both stores execute the same plans and read rows through the same codec, so the two
//! databases hold the same shape by construction; each store only owns its SQL text,
//! its parameter types and its transactions. The schema itself is in
//! `migrations/<dialect>/V2__cwom.sql`.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::error::StoreError;
use crate::cwom::requests::ListFilter;
use crate::cwom::types::*;

/// How a column is stored: TEXT/INTEGER on SQLite (JSON as checked TEXT, times as fixed
/// width text), text/bigint/jsonb/timestamptz on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColType {
    Text,
    Int,
    Json,
    Time,
}

/// One table of a kind: its name and columns, in the order rows are read.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, ColType)],
}

impl Table {
    pub fn column_list(&self) -> String {
        self.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }
}

use ColType::{Int, Json, Text, Time};

pub(crate) const REPOS: Table = Table {
    name: "cwom_repos",
    columns: &[
        ("id", Text),
        ("name", Text),
        ("slug", Text),
        ("source", Json),
        ("default_branch", Text),
        ("visibility", Text),
        ("owners", Json),
        ("policy", Json),
        ("links", Json),
        ("tags", Json),
        ("meta", Json),
        ("created_at", Time),
        ("updated_at", Time),
    ],
};

pub(crate) const ISSUES: Table = Table {
    name: "cwom_issues",
    columns: &[
        ("id", Text),
        ("repo_id", Text),
        ("repo_role", Text),
        ("title", Text),
        ("description", Text),
        ("type", Text),
        ("priority", Text),
        ("status", Text),
        ("assignees", Json),
        ("watchers", Json),
        ("acceptance", Json),
        ("relationships", Json),
        ("tags", Json),
        ("meta", Json),
        ("created_at", Time),
        ("updated_at", Time),
    ],
};

pub(crate) const CONTEXT_PACKETS: Table = Table {
    name: "cwom_context_packets",
    columns: &[
        ("id", Text),
        ("issue_id", Text),
        ("issue_role", Text),
        ("version", Text),
        ("summary", Text),
        ("inputs", Json),
        ("assumptions", Json),
        ("open_questions", Json),
        ("instructions", Text),
        ("constraint_snapshot_id", Text),
        ("constraint_snapshot_role", Text),
        ("tags", Json),
        ("meta", Json),
        ("created_at", Time),
        ("updated_at", Time),
    ],
};

pub(crate) const CONSTRAINT_SNAPSHOTS: Table = Table {
    name: "cwom_constraint_snapshots",
    columns: &[
        ("id", Text),
        ("scope", Text),
        ("owner", Json),
        ("constraints", Json),
        ("tags", Json),
        ("meta", Json),
        ("captured_at", Time),
    ],
};

pub(crate) const DOCTRINE_REFS: Table = Table {
    name: "cwom_doctrine_refs",
    columns: &[
        ("id", Text),
        ("namespace", Text),
        ("name", Text),
        ("version", Text),
        ("type", Text),
        ("priority", Text),
        ("statement", Text),
        ("rationale", Text),
        ("links", Json),
        ("applicability", Json),
        ("tags", Json),
        ("meta", Json),
        ("created_at", Time),
        ("updated_at", Time),
    ],
};

pub(crate) const RUNS: Table = Table {
    name: "cwom_runs",
    columns: &[
        ("id", Text),
        ("issue_id", Text),
        ("issue_role", Text),
        ("repo_id", Text),
        ("repo_role", Text),
        ("status", Text),
        ("mode", Text),
        ("executor", Json),
        ("constraint_snapshot_id", Text),
        ("constraint_snapshot_role", Text),
        ("plan", Json),
        ("telemetry", Json),
        ("cost", Json),
        ("result_summary", Text),
        ("decision_log", Json),
        ("failure", Json),
        ("tags", Json),
        ("meta", Json),
        ("created_at", Time),
        ("updated_at", Time),
    ],
};

pub(crate) const ARTIFACTS: Table = Table {
    name: "cwom_artifacts",
    columns: &[
        ("id", Text),
        ("run_id", Text),
        ("run_role", Text),
        ("issue_id", Text),
        ("issue_role", Text),
        ("type", Text),
        ("title", Text),
        ("uri", Text),
        ("digest", Text),
        ("media_type", Text),
        ("size_bytes", Int),
        ("preview", Text),
        ("verification", Json),
        ("tags", Json),
        ("meta", Json),
        ("created_at", Time),
        ("updated_at", Time),
    ],
};

pub(crate) fn table(kind: ObjectKind) -> &'static Table {
    match kind {
        ObjectKind::Repo => &REPOS,
        ObjectKind::Issue => &ISSUES,
        ObjectKind::ContextPacket => &CONTEXT_PACKETS,
        ObjectKind::ConstraintSnapshot => &CONSTRAINT_SNAPSHOTS,
        ObjectKind::DoctrineRef => &DOCTRINE_REFS,
        ObjectKind::Run => &RUNS,
        ObjectKind::Artifact => &ARTIFACTS,
    }
}

/// A column value, before either dialect's parameter types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Json(Option<Value>),
    Time(Option<DateTime<Utc>>),
}

fn text(s: &str) -> Val {
    Val::Text(Some(s.to_string()))
}

fn opt_text(s: &Option<String>) -> Val {
    Val::Text(s.clone())
}

fn json<T: Serialize>(v: &T) -> Val {
    // Serializing our own plain-data types cannot fail.
    Val::Json(Some(serde_json::to_value(v).expect("CWOM value objects serialize")))
}

fn opt_json<T: Serialize>(v: &Option<T>) -> Val {
    match v {
        Some(v) => json(v),
        None => Val::Json(None),
    }
}

fn time(t: DateTime<Utc>) -> Val {
    Val::Time(Some(t))
}

/// A row to write: column names and values.
pub(crate) type Row = Vec<(&'static str, Val)>;

/// The row of an object's own table (its Ref lists go to join tables).
pub(crate) fn row(object: &Object) -> Row {
    match object {
        Object::Repo(o) => vec![
            ("id", text(&o.id)),
            ("name", text(&o.name)),
            ("slug", text(&o.slug)),
            ("source", json(&o.source)),
            ("default_branch", text(&o.default_branch)),
            ("visibility", text(o.visibility.as_str())),
            ("owners", json(&o.owners)),
            ("policy", opt_json(&o.policy)),
            ("links", json(&o.links)),
            ("tags", json(&o.tags)),
            ("meta", json(&o.meta)),
            ("created_at", time(o.created_at)),
            ("updated_at", time(o.updated_at)),
        ],
        Object::Issue(o) => vec![
            ("id", text(&o.id)),
            ("repo_id", text(&o.repo.id)),
            ("repo_role", opt_text(&o.repo.role)),
            ("title", text(&o.title)),
            ("description", text(&o.description)),
            ("type", text(o.issue_type.as_str())),
            ("priority", text(o.priority.as_str())),
            ("status", text(o.status.as_str())),
            ("assignees", json(&o.assignees)),
            ("watchers", json(&o.watchers)),
            ("acceptance", json(&o.acceptance)),
            ("relationships", json(&o.relationships)),
            ("tags", json(&o.tags)),
            ("meta", json(&o.meta)),
            ("created_at", time(o.created_at)),
            ("updated_at", time(o.updated_at)),
        ],
        Object::ContextPacket(o) => vec![
            ("id", text(&o.id)),
            ("issue_id", text(&o.for_issue.id)),
            ("issue_role", opt_text(&o.for_issue.role)),
            ("version", text(&o.version)),
            ("summary", text(&o.summary)),
            ("inputs", json(&o.inputs)),
            ("assumptions", json(&o.assumptions)),
            ("open_questions", json(&o.open_questions)),
            ("instructions", text(&o.instructions)),
            ("constraint_snapshot_id", Val::Text(o.constraint_snapshot.as_ref().map(|r| r.id.clone()))),
            ("constraint_snapshot_role", Val::Text(o.constraint_snapshot.as_ref().and_then(|r| r.role.clone()))),
            ("tags", json(&o.tags)),
            ("meta", json(&o.meta)),
            ("created_at", time(o.created_at)),
            ("updated_at", time(o.updated_at)),
        ],
        Object::ConstraintSnapshot(o) => vec![
            ("id", text(&o.id)),
            ("scope", text(o.scope.as_str())),
            ("owner", json(&o.owner)),
            ("constraints", json(&o.constraints)),
            ("tags", json(&o.tags)),
            ("meta", json(&o.meta)),
            ("captured_at", time(o.captured_at)),
        ],
        Object::DoctrineRef(o) => vec![
            ("id", text(&o.id)),
            ("namespace", text(&o.namespace)),
            ("name", text(&o.name)),
            ("version", text(&o.version)),
            ("type", text(o.doctrine_type.as_str())),
            ("priority", text(o.priority.as_str())),
            ("statement", text(&o.statement)),
            ("rationale", opt_text(&o.rationale)),
            ("links", json(&o.links)),
            ("applicability", json(&o.applicability)),
            ("tags", json(&o.tags)),
            ("meta", json(&o.meta)),
            ("created_at", time(o.created_at)),
            ("updated_at", time(o.updated_at)),
        ],
        Object::Run(o) => {
            let pinned = o.inputs.constraint_snapshot.as_ref();
            vec![
                ("id", text(&o.id)),
                ("issue_id", text(&o.for_issue.id)),
                ("issue_role", opt_text(&o.for_issue.role)),
                ("repo_id", text(&o.repo.id)),
                ("repo_role", opt_text(&o.repo.role)),
                ("status", text(o.status.as_str())),
                ("mode", text(o.mode.as_str())),
                ("executor", json(&o.executor)),
                ("constraint_snapshot_id", Val::Text(pinned.map(|r| r.id.clone()))),
                ("constraint_snapshot_role", Val::Text(pinned.and_then(|r| r.role.clone()))),
                ("plan", json(&o.plan)),
                ("telemetry", json(&o.telemetry)),
                ("cost", json(&o.cost)),
                ("result_summary", opt_text(&o.outputs.result_summary)),
                ("decision_log", json(&o.outputs.decision_log)),
                ("failure", opt_json(&o.failure)),
                ("tags", json(&o.tags)),
                ("meta", json(&o.meta)),
                ("created_at", time(o.created_at)),
                ("updated_at", time(o.updated_at)),
            ]
        }
        Object::Artifact(o) => vec![
            ("id", text(&o.id)),
            ("run_id", text(&o.produced_by.id)),
            ("run_role", opt_text(&o.produced_by.role)),
            ("issue_id", text(&o.for_issue.id)),
            ("issue_role", opt_text(&o.for_issue.role)),
            ("type", text(o.artifact_type.as_str())),
            ("title", text(&o.title)),
            ("uri", text(&o.uri)),
            ("digest", opt_text(&o.digest)),
            ("media_type", opt_text(&o.media_type)),
            ("size_bytes", Val::Int(o.size_bytes)),
            ("preview", opt_text(&o.preview)),
            ("verification", json(&o.verification)),
            ("tags", json(&o.tags)),
            ("meta", json(&o.meta)),
            ("created_at", time(o.created_at)),
            ("updated_at", time(o.updated_at)),
        ],
    }
}

/// A row as read, in its table's column order.
pub(crate) struct Fields {
    table: &'static Table,
    vals: Vec<Val>,
}

impl Fields {
    pub fn new(table: &'static Table, vals: Vec<Val>) -> Fields {
        Fields { table, vals }
    }

    fn get(&self, column: &str) -> Result<&Val, String> {
        self.table
            .columns
            .iter()
            .position(|(c, _)| *c == column)
            .and_then(|i| self.vals.get(i))
            .ok_or_else(|| format!("no column {column}"))
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, String> {
        match self.get(column)? {
            Val::Text(s) => Ok(s.clone()),
            other => Err(format!("{column}: expected text, read {other:?}")),
        }
    }

    fn text(&self, column: &str) -> Result<String, String> {
        self.opt_text(column)?.ok_or_else(|| format!("{column} is NULL"))
    }

    fn parse<T: std::str::FromStr<Err = UnknownValue>>(&self, column: &str) -> Result<T, String> {
        self.text(column)?.parse().map_err(|e| format!("{column}: {e}"))
    }

    fn opt_json<T: DeserializeOwned>(&self, column: &str) -> Result<Option<T>, String> {
        match self.get(column)? {
            Val::Json(None) => Ok(None),
            Val::Json(Some(v)) => serde_json::from_value(v.clone()).map(Some).map_err(|e| format!("{column}: {e}")),
            other => Err(format!("{column}: expected JSON, read {other:?}")),
        }
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, String> {
        self.opt_json(column)?.ok_or_else(|| format!("{column} is NULL"))
    }

    fn time(&self, column: &str) -> Result<DateTime<Utc>, String> {
        match self.get(column)? {
            Val::Time(Some(t)) => Ok(*t),
            other => Err(format!("{column}: expected a time, read {other:?}")),
        }
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, String> {
        match self.get(column)? {
            Val::Int(n) => Ok(*n),
            other => Err(format!("{column}: expected an integer, read {other:?}")),
        }
    }

    fn reference(&self, kind: ObjectKind, id_col: &str, role_col: &str) -> Result<Ref, String> {
        Ok(Ref { kind, id: self.text(id_col)?, role: self.opt_text(role_col)? })
    }

    fn opt_reference(&self, kind: ObjectKind, id_col: &str, role_col: &str) -> Result<Option<Ref>, String> {
        match self.opt_text(id_col)? {
            Some(id) => Ok(Some(Ref { kind, id, role: self.opt_text(role_col)? })),
            None => Ok(None),
        }
    }
}

/// The object in a row, with its Ref lists still empty (see [`RefList`]).
pub(crate) fn object(kind: ObjectKind, f: &Fields) -> Result<Object, StoreError> {
    let read = || -> Result<Object, String> {
        Ok(match kind {
            ObjectKind::Repo => Object::Repo(Repo {
                kind: RepoKind,
                id: f.text("id")?,
                name: f.text("name")?,
                slug: f.text("slug")?,
                source: f.json("source")?,
                default_branch: f.text("default_branch")?,
                visibility: f.parse("visibility")?,
                owners: f.json("owners")?,
                policy: f.opt_json("policy")?,
                links: f.json("links")?,
                tags: f.json("tags")?,
                meta: f.json("meta")?,
                created_at: f.time("created_at")?,
                updated_at: f.time("updated_at")?,
            }),
            ObjectKind::Issue => Object::Issue(Issue {
                kind: IssueKind,
                id: f.text("id")?,
                repo: f.reference(ObjectKind::Repo, "repo_id", "repo_role")?,
                title: f.text("title")?,
                description: f.text("description")?,
                issue_type: f.parse("type")?,
                priority: f.parse("priority")?,
                status: f.parse("status")?,
                assignees: f.json("assignees")?,
                watchers: f.json("watchers")?,
                doctrine_refs: Vec::new(),
                constraints: Vec::new(),
                context_packets: Vec::new(),
                acceptance: f.json("acceptance")?,
                relationships: f.json("relationships")?,
                runs: Vec::new(),
                tags: f.json("tags")?,
                meta: f.json("meta")?,
                created_at: f.time("created_at")?,
                updated_at: f.time("updated_at")?,
            }),
            ObjectKind::ContextPacket => Object::ContextPacket(ContextPacket {
                kind: ContextPacketKind,
                id: f.text("id")?,
                for_issue: f.reference(ObjectKind::Issue, "issue_id", "issue_role")?,
                version: f.text("version")?,
                summary: f.text("summary")?,
                inputs: f.json("inputs")?,
                assumptions: f.json("assumptions")?,
                open_questions: f.json("open_questions")?,
                instructions: f.text("instructions")?,
                doctrine_refs: Vec::new(),
                constraint_snapshot: f.opt_reference(
                    ObjectKind::ConstraintSnapshot,
                    "constraint_snapshot_id",
                    "constraint_snapshot_role",
                )?,
                tags: f.json("tags")?,
                meta: f.json("meta")?,
                created_at: f.time("created_at")?,
                updated_at: f.time("updated_at")?,
            }),
            ObjectKind::ConstraintSnapshot => Object::ConstraintSnapshot(ConstraintSnapshot {
                kind: ConstraintSnapshotKind,
                id: f.text("id")?,
                scope: f.parse("scope")?,
                owner: f.json("owner")?,
                constraints: f.json("constraints")?,
                tags: f.json("tags")?,
                meta: f.json("meta")?,
                captured_at: f.time("captured_at")?,
            }),
            ObjectKind::DoctrineRef => Object::DoctrineRef(DoctrineRef {
                kind: DoctrineRefKind,
                id: f.text("id")?,
                namespace: f.text("namespace")?,
                name: f.text("name")?,
                version: f.text("version")?,
                doctrine_type: f.parse("type")?,
                priority: f.parse("priority")?,
                statement: f.text("statement")?,
                rationale: f.opt_text("rationale")?,
                links: f.json("links")?,
                applicability: f.json("applicability")?,
                tags: f.json("tags")?,
                meta: f.json("meta")?,
                created_at: f.time("created_at")?,
                updated_at: f.time("updated_at")?,
            }),
            ObjectKind::Run => Object::Run(Run {
                kind: RunKind,
                id: f.text("id")?,
                for_issue: f.reference(ObjectKind::Issue, "issue_id", "issue_role")?,
                repo: f.reference(ObjectKind::Repo, "repo_id", "repo_role")?,
                status: f.parse("status")?,
                mode: f.parse("mode")?,
                executor: f.json("executor")?,
                inputs: RunInputs {
                    context_packets: Vec::new(),
                    doctrine_refs: Vec::new(),
                    constraint_snapshot: f.opt_reference(
                        ObjectKind::ConstraintSnapshot,
                        "constraint_snapshot_id",
                        "constraint_snapshot_role",
                    )?,
                },
                plan: f.json("plan")?,
                telemetry: f.json("telemetry")?,
                cost: f.json("cost")?,
                outputs: RunOutputs {
                    artifacts: Vec::new(),
                    result_summary: f.opt_text("result_summary")?,
                    decision_log: f.json("decision_log")?,
                },
                failure: f.opt_json("failure")?,
                tags: f.json("tags")?,
                meta: f.json("meta")?,
                created_at: f.time("created_at")?,
                updated_at: f.time("updated_at")?,
            }),
            ObjectKind::Artifact => Object::Artifact(Artifact {
                kind: ArtifactKind,
                id: f.text("id")?,
                produced_by: f.reference(ObjectKind::Run, "run_id", "run_role")?,
                for_issue: f.reference(ObjectKind::Issue, "issue_id", "issue_role")?,
                artifact_type: f.parse("type")?,
                title: f.text("title")?,
                uri: f.text("uri")?,
                digest: f.opt_text("digest")?,
                media_type: f.opt_text("media_type")?,
                size_bytes: f.opt_int("size_bytes")?,
                preview: f.opt_text("preview")?,
                verification: f.json("verification")?,
                tags: f.json("tags")?,
                meta: f.json("meta")?,
                created_at: f.time("created_at")?,
                updated_at: f.time("updated_at")?,
            }),
        })
    };
    read().map_err(|e| StoreError::internal(format!("unreadable {} row: {e}", f.table.name)))
}

/// A list of Refs kept relationally: in a join table (ordered by `position`, with each
/// Ref's role), or derived from the foreign key of the objects that point back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefList {
    /// Issue.context_packets (also added to when a packet for the Issue is created).
    IssuePackets,
    IssueDoctrine,
    /// Issue.constraints.
    IssueConstraints,
    /// Run.inputs.context_packets.
    RunPackets,
    /// Run.inputs.doctrine_refs.
    RunDoctrine,
    PacketDoctrine,
    /// Issue.runs: the Runs whose `for_issue` is the Issue.
    IssueRuns,
    /// Run.outputs.artifacts: the Artifacts whose `produced_by` is the Run.
    RunArtifacts,
}

/// Where a [`RefList`] lives.
pub(crate) struct ListSource {
    pub table: &'static str,
    /// The column holding the owner's id.
    pub owner: &'static str,
    /// The column holding the target's id.
    pub target: &'static str,
    /// Join tables keep a role and an order; derived lists have neither (oldest first).
    pub join: bool,
}

impl RefList {
    pub fn source(self) -> ListSource {
        let join = |table, owner, target| ListSource { table, owner, target, join: true };
        match self {
            RefList::IssuePackets => join("cwom_issue_context_packets", "issue_id", "packet_id"),
            RefList::IssueDoctrine => join("cwom_issue_doctrine_refs", "issue_id", "doctrine_id"),
            RefList::IssueConstraints => join("cwom_issue_constraints", "issue_id", "snapshot_id"),
            RefList::RunPackets => join("cwom_run_context_packets", "run_id", "packet_id"),
            RefList::RunDoctrine => join("cwom_run_doctrine_refs", "run_id", "doctrine_id"),
            RefList::PacketDoctrine => join("cwom_packet_doctrine_refs", "packet_id", "doctrine_id"),
            RefList::IssueRuns => ListSource { table: "cwom_runs", owner: "issue_id", target: "id", join: false },
            RefList::RunArtifacts => ListSource { table: "cwom_artifacts", owner: "run_id", target: "id", join: false },
        }
    }

    pub fn owner_kind(self) -> ObjectKind {
        match self {
            RefList::IssuePackets | RefList::IssueDoctrine | RefList::IssueConstraints | RefList::IssueRuns => {
                ObjectKind::Issue
            }
            RefList::RunPackets | RefList::RunDoctrine | RefList::RunArtifacts => ObjectKind::Run,
            RefList::PacketDoctrine => ObjectKind::ContextPacket,
        }
    }

    pub fn target_kind(self) -> ObjectKind {
        match self {
            RefList::IssuePackets | RefList::RunPackets => ObjectKind::ContextPacket,
            RefList::IssueDoctrine | RefList::RunDoctrine | RefList::PacketDoctrine => ObjectKind::DoctrineRef,
            RefList::IssueConstraints => ObjectKind::ConstraintSnapshot,
            RefList::IssueRuns => ObjectKind::Run,
            RefList::RunArtifacts => ObjectKind::Artifact,
        }
    }

    /// The Ref lists an object of `kind` carries.
    pub fn of(kind: ObjectKind) -> &'static [RefList] {
        match kind {
            ObjectKind::Issue => {
                &[RefList::IssuePackets, RefList::IssueDoctrine, RefList::IssueConstraints, RefList::IssueRuns]
            }
            ObjectKind::Run => &[RefList::RunPackets, RefList::RunDoctrine, RefList::RunArtifacts],
            ObjectKind::ContextPacket => &[RefList::PacketDoctrine],
            _ => &[],
        }
    }

    /// Puts a list read from the database into its place in the object.
    pub fn set(self, object: &mut Object, refs: Vec<Ref>) {
        match (self, object) {
            (RefList::IssuePackets, Object::Issue(i)) => i.context_packets = refs,
            (RefList::IssueDoctrine, Object::Issue(i)) => i.doctrine_refs = refs,
            (RefList::IssueConstraints, Object::Issue(i)) => i.constraints = refs,
            (RefList::IssueRuns, Object::Issue(i)) => i.runs = refs,
            (RefList::RunPackets, Object::Run(r)) => r.inputs.context_packets = refs,
            (RefList::RunDoctrine, Object::Run(r)) => r.inputs.doctrine_refs = refs,
            (RefList::RunArtifacts, Object::Run(r)) => r.outputs.artifacts = refs,
            (RefList::PacketDoctrine, Object::ContextPacket(p)) => p.doctrine_refs = refs,
            (list, o) => unreachable!("{list:?} is not a list of {}", o.kind()),
        }
    }

    /// The list as the object holds it (join-table lists only: derived ones are read-only).
    fn get(self, object: &Object) -> &[Ref] {
        match (self, object) {
            (RefList::IssuePackets, Object::Issue(i)) => &i.context_packets,
            (RefList::IssueDoctrine, Object::Issue(i)) => &i.doctrine_refs,
            (RefList::IssueConstraints, Object::Issue(i)) => &i.constraints,
            (RefList::RunPackets, Object::Run(r)) => &r.inputs.context_packets,
            (RefList::RunDoctrine, Object::Run(r)) => &r.inputs.doctrine_refs,
            (RefList::PacketDoctrine, Object::ContextPacket(p)) => &p.doctrine_refs,
            (list, o) => unreachable!("{list:?} is not a stored list of {}", o.kind()),
        }
    }
}

/// Something that must hold before a plan writes; checked inside its transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    /// `target` names an existing object of its kind; else 422 naming `field`.
    Exists { field: String, target: Ref },
    /// The stored `kind` object `id` has `column` = `value`; else `Invalid(message)`.
    /// Keeps the causality chain consistent (a Run's Repo is its Issue's Repo…).
    Matches { kind: ObjectKind, id: String, column: &'static str, value: String, message: String },
}

/// One write of a plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// A new row. A unique violation becomes `AlreadyExists(on_duplicate)`.
    Insert { table: &'static str, row: Row, on_duplicate: Option<String> },
    /// Rewrites every column of the row with this id.
    Update { table: &'static str, id: String, row: Row },
    /// Makes the join-table list exactly `refs`, in order.
    ReplaceList { list: RefList, owner: String, refs: Vec<Ref> },
    /// Adds one Ref at the end of the owner's list, unless already there. The store
    /// locks the owner's row first, so concurrent appends keep their order.
    Append { list: RefList, owner: String, target: Ref },
}

/// The checks and writes of one operation, done in one transaction, all or nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct WritePlan {
    pub checks: Vec<Check>,
    pub ops: Vec<Op>,
}

fn exists(checks: &mut Vec<Check>, field: &str, target: &Ref) {
    checks.push(Check::Exists { field: field.to_string(), target: target.clone() });
}

fn exist_all(checks: &mut Vec<Check>, field: &str, targets: &[Ref]) {
    for (i, t) in targets.iter().enumerate() {
        exists(checks, &format!("{field}[{i}]"), t);
    }
}

/// Every Ref the object holds must resolve (and the causality chain must agree with
/// itself); derived lists are not checked, the server writes them.
fn checks(object: &Object) -> Vec<Check> {
    let mut c = Vec::new();
    match object {
        Object::Repo(_) | Object::ConstraintSnapshot(_) => {}
        Object::Issue(o) => {
            exists(&mut c, "repo", &o.repo);
            exist_all(&mut c, "doctrine_refs", &o.doctrine_refs);
            exist_all(&mut c, "constraints", &o.constraints);
            exist_all(&mut c, "context_packets", &o.context_packets);
            let r = &o.relationships;
            if let Some(p) = &r.parent {
                exists(&mut c, "relationships.parent", p);
            }
            exist_all(&mut c, "relationships.blocks", &r.blocks);
            exist_all(&mut c, "relationships.blocked_by", &r.blocked_by);
            exist_all(&mut c, "relationships.duplicates", &r.duplicates);
        }
        Object::ContextPacket(o) => {
            exists(&mut c, "for_issue", &o.for_issue);
            exist_all(&mut c, "doctrine_refs", &o.doctrine_refs);
            if let Some(s) = &o.constraint_snapshot {
                exists(&mut c, "constraint_snapshot", s);
            }
        }
        Object::DoctrineRef(o) => exist_all(&mut c, "applicability.repo_refs", &o.applicability.repo_refs),
        Object::Run(o) => {
            exists(&mut c, "for_issue", &o.for_issue);
            exists(&mut c, "repo", &o.repo);
            exist_all(&mut c, "inputs.context_packets", &o.inputs.context_packets);
            exist_all(&mut c, "inputs.doctrine_refs", &o.inputs.doctrine_refs);
            if let Some(s) = &o.inputs.constraint_snapshot {
                exists(&mut c, "inputs.constraint_snapshot", s);
            }
            c.push(Check::Matches {
                kind: ObjectKind::Issue,
                id: o.for_issue.id.clone(),
                column: "repo_id",
                value: o.repo.id.clone(),
                message: format!("repo: must be the Repo of Issue {}", o.for_issue.id),
            });
        }
        Object::Artifact(o) => {
            exists(&mut c, "produced_by", &o.produced_by);
            exists(&mut c, "for_issue", &o.for_issue);
            c.push(Check::Matches {
                kind: ObjectKind::Run,
                id: o.produced_by.id.clone(),
                column: "issue_id",
                value: o.for_issue.id.clone(),
                message: format!("for_issue: must be the Issue of Run {}", o.produced_by.id),
            });
        }
    }
    c
}

/// The stored join-table lists of the object, rewritten.
fn replace_lists(object: &Object) -> Vec<Op> {
    RefList::of(object.kind())
        .iter()
        .filter(|l| l.source().join)
        .map(|&list| Op::ReplaceList { list, owner: object.id().to_string(), refs: list.get(object).to_vec() })
        .collect()
}

/// Stores a new object: its row, its lists, and the links other objects gain from it.
pub(crate) fn create_plan(object: &Object) -> WritePlan {
    let on_duplicate = match object {
        Object::Repo(r) => Some(format!("a Repo with slug {:?} already exists", r.slug)),
        Object::DoctrineRef(d) => {
            Some(format!("a DoctrineRef {}/{} version {:?} already exists", d.namespace, d.name, d.version))
        }
        _ => None,
    };
    let mut ops = vec![Op::Insert { table: table(object.kind()).name, row: row(object), on_duplicate }];
    ops.extend(replace_lists(object));
    if let Object::ContextPacket(p) = object {
        // Creating a packet links it to its Issue.
        ops.push(Op::Append { list: RefList::IssuePackets, owner: p.for_issue.id.clone(), target: object.to_ref() });
    }
    WritePlan { checks: checks(object), ops }
}

/// Stores a changed object (Issue or Run) over its old row and lists.
pub(crate) fn update_plan(object: &Object) -> WritePlan {
    let mut ops = vec![Op::Update { table: table(object.kind()).name, id: object.id().to_string(), row: row(object) }];
    ops.extend(replace_lists(object));
    WritePlan { checks: checks(object), ops }
}

/// The column conditions of a list filter.
pub(crate) fn filter_columns(filter: &ListFilter) -> Vec<(&'static str, Val)> {
    let mut out = Vec::new();
    let mut some = |column: &'static str, value: Option<&str>| {
        if let Some(v) = value {
            out.push((column, text(v)));
        }
    };
    match filter {
        ListFilter::Repos { visibility } => some("visibility", visibility.map(Visibility::as_str)),
        ListFilter::Issues { repo_id, status, issue_type, priority } => {
            some("repo_id", repo_id.as_deref());
            some("status", status.map(Status::as_str));
            some("type", issue_type.map(IssueType::as_str));
            some("priority", priority.map(Priority::as_str));
        }
        ListFilter::ContextPackets | ListFilter::ConstraintSnapshots => {}
        ListFilter::DoctrineRefs { namespace, doctrine_type } => {
            some("namespace", namespace.as_deref());
            some("type", doctrine_type.map(DoctrineType::as_str));
        }
        ListFilter::Runs { issue_id, repo_id, status, mode } => {
            some("issue_id", issue_id.as_deref());
            some("repo_id", repo_id.as_deref());
            some("status", status.map(Status::as_str));
            some("mode", mode.map(RunMode::as_str));
        }
        ListFilter::Artifacts { run_id, issue_id, artifact_type } => {
            some("run_id", run_id.as_deref());
            some("issue_id", issue_id.as_deref());
            some("type", artifact_type.map(ArtifactType::as_str));
        }
    }
    out
}

/// Groups `(owner, ref)` pairs read in list order and puts each owner's list in place.
pub(crate) fn attach(objects: &mut [Object], list: RefList, pairs: Vec<(String, Ref)>) {
    let mut by_owner: std::collections::HashMap<String, Vec<Ref>> = std::collections::HashMap::new();
    for (owner, r) in pairs {
        by_owner.entry(owner).or_default().push(r);
    }
    for o in objects.iter_mut() {
        let refs = by_owner.remove(o.id()).unwrap_or_default();
        list.set(o, refs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cwom::requests::new_object;
    use serde_json::json;

    fn sample(kind: ObjectKind) -> Object {
        let r = |k: ObjectKind| json!({"kind": k.as_str(), "id": "x"});
        let actor = json!({"actor_kind": "human", "actor_id": "ann"});
        let body = match kind {
            ObjectKind::Repo => json!({"name": "n", "slug": "s", "source": {"system": "github"}}),
            ObjectKind::Issue => json!({"repo": r(ObjectKind::Repo), "title": "t", "type": "bug"}),
            ObjectKind::ContextPacket => json!({"for_issue": r(ObjectKind::Issue), "version": "1", "summary": "s"}),
            ObjectKind::ConstraintSnapshot => json!({"scope": "run", "owner": actor}),
            ObjectKind::DoctrineRef => {
                json!({"namespace": "a", "name": "b", "version": "1", "type": "policy", "statement": "s"})
            }
            ObjectKind::Run => json!({"for_issue": r(ObjectKind::Issue), "repo": r(ObjectKind::Repo),
                "mode": "agent", "executor": {"actor": actor, "runtime": "local"}}),
            ObjectKind::Artifact => json!({"produced_by": r(ObjectKind::Run), "for_issue": r(ObjectKind::Issue),
                "type": "log", "title": "t", "uri": "file:///x", "size_bytes": 3}),
        };
        new_object(kind, body, Utc::now()).unwrap()
    }

    #[test]
    fn rows_write_exactly_the_table_columns() {
        for &kind in ObjectKind::ALL {
            let o = sample(kind);
            let written: Vec<&str> = row(&o).iter().map(|(c, _)| *c).collect();
            let declared: Vec<&str> = table(kind).columns.iter().map(|(c, _)| *c).collect();
            assert_eq!(written, declared, "{kind}");
        }
    }

    #[test]
    fn a_row_reads_back_as_the_object() {
        for &kind in ObjectKind::ALL {
            let o = sample(kind);
            let vals = row(&o).into_iter().map(|(_, v)| v).collect();
            let back = object(kind, &Fields::new(table(kind), vals)).unwrap();
            assert_eq!(back, o, "{kind}");
        }
    }

    #[test]
    fn creating_a_packet_links_it_to_its_issue() {
        let plan = create_plan(&sample(ObjectKind::ContextPacket));
        assert!(plan
            .ops
            .iter()
            .any(|op| matches!(op, Op::Append { list: RefList::IssuePackets, owner, .. } if owner == "x")));
        assert!(plan.checks.iter().any(|c| matches!(c, Check::Exists { field, .. } if field == "for_issue")));
    }
}
