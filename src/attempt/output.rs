//! What an attempt produces while it runs: lines for `log.txt` and artifacts (files under
//! the trace folder's `artifacts/`, or references), each artifact recorded as an Artifact
//! of the attempt's CWOM Run when the task is linked to an Issue.
//!
//! [`AttemptSink`] is a cheap handle on an open attempt, so a running handler (through the
//! worker) and the worker-protocol routes (through [`crate::remote`]) store artifacts the
//! same way.

use serde::Serialize;

use super::cwom_run::{self, RunLink};
use crate::cwom::types::ArtifactType;
use crate::cwom_service::Cwom;
use crate::task::TaskId;
use crate::trace::{self, TaskTrace};

/// An artifact an attempt produced.
#[derive(Debug, Clone)]
pub struct PostedArtifact {
    pub name: String,
    pub artifact_type: ArtifactType,
    pub media_type: Option<String>,
    pub content: ArtifactContent,
}

#[derive(Debug, Clone)]
pub enum ArtifactContent {
    Bytes(Vec<u8>),
    Uri(String),
}

/// A stored artifact as the route answers it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StoredArtifact {
    pub task_id: TaskId,
    pub name: String,
    #[serde(rename = "type")]
    pub artifact_type: ArtifactType,
    pub media_type: Option<String>,
    pub uri: String,
    pub size_bytes: Option<i64>,
    pub digest: Option<String>,
    pub cwom_artifact_id: Option<String>,
}

/// Why an artifact was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    Invalid(String),
    #[error("task {id} already has an artifact named {name:?}")]
    Exists { id: TaskId, name: String },
    #[error("could not write the artifact: {0}")]
    Io(#[source] std::io::Error),
}

/// A handle on an open attempt for storing what it produces.
#[derive(Clone)]
pub struct AttemptSink {
    task: TaskId,
    folder: Option<TaskTrace>,
    /// The attempt's Run, for a linked task, and where to record its Artifacts.
    run: Option<(RunLink, Cwom)>,
}

impl AttemptSink {
    pub(super) fn new(task: TaskId, folder: Option<TaskTrace>, run: Option<RunLink>, cwom: &Cwom) -> Self {
        AttemptSink { task, folder, run: run.map(|r| (r, cwom.clone())) }
    }

    /// A sink for an attempt this process does not hold open (no folder, no Run):
    /// references are recorded as given, files refused.
    pub fn detached(task: TaskId) -> Self {
        AttemptSink { task, folder: None, run: None }
    }

    /// Appends lines to `log.txt`, stamped and tagged (blocking file writes).
    pub fn append(&self, tag: &str, lines: &[String]) {
        if let Some(folder) = &self.folder {
            if let Err(e) = folder.append_lines(tag, lines) {
                tracing::error!(task_id = %self.task, error = %e, "could not append to log.txt");
            }
        }
    }

    /// Stores an artifact: a file under `artifacts/` (never overwriting one) with its size
    /// and digest, or a reference; for a linked task also an Artifact of the Run.
    pub async fn store(&self, posted: PostedArtifact) -> Result<StoredArtifact, ArtifactError> {
        if !trace::is_safe_artifact_name(&posted.name) {
            return Err(ArtifactError::Invalid(
                "name: must be 1 to 128 of A-Z a-z 0-9 . _ - and not start with a dot".into(),
            ));
        }
        let id = self.task;
        let (uri, size_bytes, digest) = match posted.content {
            ArtifactContent::Uri(uri) => (uri, None, None),
            ArtifactContent::Bytes(bytes) => {
                let folder = self.folder.clone().ok_or_else(|| {
                    ArtifactError::Invalid(
                        "content_base64: this daemon keeps no trace folder for the attempt; send a uri".into(),
                    )
                })?;
                let name = posted.name.clone();
                let digest = sha256(&bytes);
                let size = bytes.len() as i64;
                let written = tokio::task::spawn_blocking(move || folder.write_artifact(&name, &bytes))
                    .await
                    .map_err(|e| ArtifactError::Io(std::io::Error::other(e)))?;
                let path = match written {
                    Ok(path) => path,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(ArtifactError::Exists { id, name: posted.name })
                    }
                    Err(e) => return Err(ArtifactError::Io(e)),
                };
                let path = std::path::absolute(&path).unwrap_or(path);
                (format!("file://{}", path.display()), Some(size), Some(digest))
            }
        };
        let cwom_artifact_id = match &self.run {
            Some((run, cwom)) => {
                let artifact = cwom_run::NewRunArtifact {
                    artifact_type: posted.artifact_type,
                    title: posted.name.clone(),
                    uri: uri.clone(),
                    media_type: posted.media_type.clone(),
                    digest: digest.clone(),
                    size_bytes,
                };
                cwom_run::add_artifact(cwom, id, run, artifact).await
            }
            None => None,
        };
        Ok(StoredArtifact {
            task_id: id,
            name: posted.name,
            artifact_type: posted.artifact_type,
            media_type: posted.media_type,
            uri,
            size_bytes,
            digest,
            cwom_artifact_id,
        })
    }
}

/// `sha256:<hex>` of the bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
