//! The CWOM service the API and the attempt lifecycle call: it validates work objects
//! ([`crate::cwom`]), stamps ids and times, and hands whole objects to the
//! [`crate::store::CwomStore`] of the database.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use std::sync::Arc;

use crate::storable;
use crate::store::CwomStore;

use crate::cwom::requests::{self, IssuePatch, ListQuery, NewArtifact, NewRun, OutputsInput, RunPatch};
use crate::cwom::types::*;
pub use crate::cwom::{CwomError, CwomResult};

/// What the worker knows when a task linked to an Issue starts.
#[derive(Debug, Clone)]
pub struct StartRun {
    /// The Run's id (derived from the task and attempt, so any daemon can close it).
    pub run_id: String,
    pub issue_id: String,
    /// The executing system's id (e.g. the worker id), recorded as a `system` Actor.
    pub executor_actor_id: String,
    /// Where it runs, e.g. `jct-worker`.
    pub runtime: String,
    pub started_at: DateTime<Utc>,
    /// Anything the caller wants to keep with the Run (e.g. the task id).
    pub meta: Meta,
}

/// The CWOM service: validation and storage of work objects on the daemon's database.
#[derive(Clone)]
pub struct Cwom {
    store: Arc<dyn CwomStore>,
}

/// Server times are kept to the microsecond, what both databases store: an object
/// answered from memory equals the same object read back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Cwom {
    pub fn new(store: Arc<dyn CwomStore>) -> Self {
        Cwom { store }
    }

    /// Creates an object of `kind` from a create body (JSON, as a client sends it).
    pub async fn create(&self, kind: ObjectKind, body: Value) -> CwomResult<Object> {
        let object = requests::new_object(kind, body, now())?;
        self.store.create(object).await
    }

    /// Stores an object built in Rust (validated by its `New*` builder).
    pub async fn create_object(&self, object: impl Into<Object>) -> CwomResult<Object> {
        self.store.create(object.into()).await
    }

    pub async fn get(&self, kind: ObjectKind, id: &str) -> CwomResult<Object> {
        storable_id(kind, id)?;
        self.store.get(kind, id).await?.ok_or_else(|| CwomError::NotFound { kind, id: id.to_string() })
    }

    pub async fn list(&self, query: &ListQuery) -> CwomResult<Vec<Object>> {
        self.store.list(query).await
    }

    pub async fn update_issue(&self, id: &str, patch: IssuePatch) -> CwomResult<Issue> {
        storable_id(ObjectKind::Issue, id)?;
        patch.validate()?;
        let at = now();
        let object = self
            .store
            .update(
                ObjectKind::Issue,
                id,
                Box::new(move |o| match o {
                    Object::Issue(issue) => patch.apply(issue, at),
                    other => unreachable!("the store read a {} as an Issue", other.kind()),
                }),
            )
            .await?;
        Ok(Issue::try_from(object).expect("update of an Issue returns an Issue"))
    }

    pub async fn update_run(&self, id: &str, patch: RunPatch) -> CwomResult<Run> {
        storable_id(ObjectKind::Run, id)?;
        patch.validate()?;
        let at = now();
        let object = self
            .store
            .update(
                ObjectKind::Run,
                id,
                Box::new(move |o| match o {
                    Object::Run(run) => patch.apply(run, at),
                    other => unreachable!("the store read a {} as a Run", other.kind()),
                }),
            )
            .await?;
        Ok(Run::try_from(object).expect("update of a Run returns a Run"))
    }

    // -----------------------------------------------------------------------------------
    // For the worker: a task linked to an Issue is recorded as a Run without HTTP.

    pub async fn issue_exists(&self, id: &str) -> CwomResult<bool> {
        self.store.exists(ObjectKind::Issue, id).await
    }

    /// Records the start of a run for an Issue: mode `system`, status `running`,
    /// `telemetry.started_at`, and as inputs what the Issue holds at this moment (its
    /// context packets, its doctrine, and its last constraint snapshot, pinned). Returns
    /// the new Run's id.
    pub async fn start_run(&self, start: StartRun) -> CwomResult<String> {
        let issue = Issue::try_from(self.get(ObjectKind::Issue, &start.issue_id).await?)
            .expect("a get of an Issue returns an Issue");
        // A role says what the target is to its holder; the Issue's roles are not the Run's.
        let strip = |refs: &[Ref]| refs.iter().map(|r| Ref::new(r.kind, r.id.clone())).collect::<Vec<_>>();
        let run = NewRun {
            kind: None,
            for_issue: Ref::new(ObjectKind::Issue, issue.id.clone()),
            repo: Ref::new(ObjectKind::Repo, issue.repo.id.clone()),
            status: Status::Running,
            mode: RunMode::System,
            executor: Executor {
                actor: Actor { actor_kind: ActorKind::System, actor_id: start.executor_actor_id, display: None },
                runtime: start.runtime,
                toolchain: Vec::new(),
            },
            inputs: RunInputs {
                context_packets: strip(&issue.context_packets),
                doctrine_refs: strip(&issue.doctrine_refs),
                constraint_snapshot: issue.constraints.last().map(|r| Ref::new(r.kind, r.id.clone())),
            },
            plan: Plan::default(),
            telemetry: Telemetry { started_at: Some(start.started_at.trunc_subsecs(6)), ..Telemetry::default() },
            cost: Cost::default(),
            outputs: OutputsInput::default(),
            failure: None,
            tags: Vec::new(),
            meta: start.meta,
        }
        .build(now())?;
        let run = Run { id: start.run_id, ..run };
        let id = run.id.clone();
        self.store.create(run.into()).await?;
        Ok(id)
    }

    /// Records the end of a run: `done` when `ok`, else `failed` with `failure` (category
    /// `unknown` when none is given). `telemetry` merges into the stored one; the duration is
    /// computed when both ends are known. A run already in a final status is refused
    /// ([`CwomError::FinalStatus`]).
    pub async fn finish_run(
        &self,
        run_id: &str,
        ok: bool,
        telemetry: Telemetry,
        failure: Option<Failure>,
    ) -> CwomResult<Run> {
        let failure = match (ok, failure) {
            (true, None) => None,
            (true, Some(_)) => return Err(requests::invalid("failure", "a run that succeeded has no failure")),
            (false, f) => Some(f.unwrap_or(Failure {
                category: FailureCategory::Unknown,
                message: "the run failed without a reported cause".into(),
            })),
        };
        let patch = RunPatch {
            status: Some(if ok { Status::Done } else { Status::Failed }),
            telemetry: Some(Telemetry {
                started_at: telemetry.started_at.map(|t| t.trunc_subsecs(6)),
                ended_at: telemetry.ended_at.map(|t| t.trunc_subsecs(6)),
                duration_s: telemetry.duration_s,
            }),
            failure: Some(failure),
            ..RunPatch::default()
        };
        self.update_run(run_id, patch).await
    }

    /// Registers a trace folder (`file://` URI) as a `trace` Artifact produced by the Run,
    /// for its Issue. Returns the Artifact's id.
    pub async fn add_trace_artifact(&self, run_id: &str, issue_id: &str, uri: &str) -> CwomResult<String> {
        let artifact = RunArtifact {
            artifact_type: ArtifactType::Trace,
            title: "Trace folder".into(),
            uri: uri.into(),
            media_type: Some("inode/directory".into()),
            digest: None,
            size_bytes: None,
        };
        self.add_run_artifact(run_id, issue_id, artifact).await
    }

    /// Registers something a Run produced as an Artifact of that Run, for its Issue.
    /// Returns the Artifact's id.
    pub async fn add_run_artifact(&self, run_id: &str, issue_id: &str, a: RunArtifact) -> CwomResult<String> {
        let artifact = NewArtifact {
            kind: None,
            produced_by: Ref::new(ObjectKind::Run, run_id),
            for_issue: Ref::new(ObjectKind::Issue, issue_id),
            artifact_type: a.artifact_type,
            title: a.title,
            uri: a.uri,
            digest: a.digest,
            media_type: a.media_type,
            size_bytes: a.size_bytes,
            preview: None,
            verification: Verification::default(),
            tags: Vec::new(),
            meta: Meta::new(),
        }
        .build(now())?;
        let id = artifact.id.clone();
        self.store.create(artifact.into()).await?;
        Ok(id)
    }
}

/// An Artifact a Run produced, as the attempt lifecycle reports it.
#[derive(Debug, Clone)]
pub struct RunArtifact {
    pub artifact_type: ArtifactType,
    pub title: String,
    pub uri: String,
    pub media_type: Option<String>,
    pub digest: Option<String>,
    pub size_bytes: Option<i64>,
}

/// No object has an id that no store can hold: such an id is not found, on either store
/// (PostgreSQL would refuse the lookup itself).
fn storable_id(kind: ObjectKind, id: &str) -> CwomResult<()> {
    match storable::check_text("id", id) {
        Ok(()) => Ok(()),
        Err(_) => Err(CwomError::NotFound { kind, id: id.to_string() }),
    }
}
