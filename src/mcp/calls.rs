//! What each MCP tool does: its arguments read and checked, then the HTTP calls it makes. A
//! failure is a [`ToolError`], which the server hands back as a tool error; nothing here can
//! stop the MCP process.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::agent::{Agent, Serves};
use super::arguments as A;
use super::tools::ToolName;
use crate::client::{Client, ClientError};
use crate::tunables::{CLAIM_WAIT_MAX, MCP_CLAIM_WAIT_DEFAULT};
use crate::url::encode;

/// Why a tool call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool's input schema.
    #[error("invalid arguments: {0}")]
    Arguments(String),
    /// The tool is not one this server offers (unknown, or changing under `--read-only`).
    #[error("{0}")]
    NotOffered(String),
    #[error(transparent)]
    Server(#[from] ClientError),
}

impl ToolError {
    /// The error in the API's one error shape (`error`, `message`), with the HTTP status and
    /// whatever else the server's body carried (the existing `task_id` of a 409).
    pub fn body(&self) -> Value {
        match self {
            ToolError::Arguments(m) => json!({ "error": "invalid_arguments", "message": m }),
            ToolError::NotOffered(m) => json!({ "error": "tool_not_offered", "message": m }),
            ToolError::Server(ClientError::Api { status, code, message, body }) => {
                let mut out = match body {
                    Value::Object(map) => map.clone(),
                    _ => Map::new(),
                };
                out.insert("error".into(), json!(code));
                out.insert("message".into(), json!(message));
                out.insert("status".into(), json!(status));
                Value::Object(out)
            }
            ToolError::Server(e @ ClientError::Unreachable { .. }) => {
                json!({ "error": "server_unreachable", "message": e.to_string() })
            }
            ToolError::Server(e @ ClientError::Protocol { .. }) => {
                json!({ "error": "unexpected_answer", "message": e.to_string() })
            }
        }
    }
}

/// A call's arguments parsed into the tool's argument type (`mcp::arguments`).
fn args<T: serde::de::DeserializeOwned>(tool: ToolName, raw: &Map<String, Value>) -> Result<T, ToolError> {
    A::parse(raw).map_err(|e| ToolError::Arguments(format!("{}: {e}", tool.name())))
}

/// A task id, checked to be a UUID before it becomes part of a path.
fn task_id(raw: &str) -> Result<String, ToolError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| ToolError::Arguments(format!("task_id: {raw:?} is not a UUID")))
}

/// A path segment from a caller's string (`what` names the argument): everything but
/// unreserved characters percent-encoded, and no empty, `.` or `..` segment (URLs resolve
/// those, encoded or not), so a caller's string can never reach another route.
fn segment(what: &str, raw: &str) -> Result<String, ToolError> {
    if matches!(raw, "" | "." | "..") {
        return Err(ToolError::Arguments(format!("{what}: {raw:?} is not a name")));
    }
    Ok(encode(raw))
}

/// Runs one tool call against the server.
pub async fn call(
    client: &Client,
    agent: &Agent,
    tool: ToolName,
    raw: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let raw = raw.unwrap_or_default();
    match tool {
        ToolName::EnqueueTask => {
            args::<A::EnqueueTask>(tool, &raw)?;
            // The server validates every value (422 naming it); send the body as given.
            Ok(client.post_json("/tasks/enqueue", &Value::Object(raw)).await?)
        }
        ToolName::GetTask | ToolName::CancelTask | ToolName::RetryTask => {
            let id = task_id(&args::<A::TaskRef>(tool, &raw)?.task_id)?;
            Ok(match tool {
                ToolName::GetTask => client.get_json(&format!("/tasks/{id}")).await?,
                ToolName::CancelTask => client.post_json(&format!("/tasks/{id}/cancel"), &json!({})).await?,
                _ => client.post_json(&format!("/tasks/{id}/retry"), &json!({})).await?,
            })
        }
        ToolName::ListTasks => {
            let a: A::ListTasks = args(tool, &raw)?;
            let status = a.status.map(|s| s.to_string());
            let mut query = Vec::new();
            for (name, v) in [("status", &status), ("type", &a.task_type), ("queue", &a.queue)] {
                if let Some(v) = v {
                    query.push(format!("{name}={}", encode(v)));
                }
            }
            for (name, v) in [("limit", a.limit), ("offset", a.offset)] {
                if let Some(v) = v {
                    query.push(format!("{name}={v}"));
                }
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            Ok(client.get_json(&format!("/tasks{query}")).await?)
        }
        ToolName::GetTrace => {
            let a: A::GetTrace = args(tool, &raw)?;
            // `artifacts/<name>` is the one file below the folder; every part is encoded.
            let path = a.file.split('/').map(|part| segment("file", part)).collect::<Result<Vec<_>, _>>()?;
            let text = client.get_text(&format!("/tasks/{}/trace/{}", task_id(&a.task_id)?, path.join("/"))).await?;
            Ok(Value::String(text))
        }
        ToolName::ClaimTask => {
            let a: A::ClaimTask = args(tool, &raw)?;
            if a.types.is_empty() {
                return Err(ToolError::Arguments("types: name at least one task type".into()));
            }
            let wait = match a.wait_ms {
                None => MCP_CLAIM_WAIT_DEFAULT,
                Some(ms) if ms <= CLAIM_WAIT_MAX.as_millis() as u64 => Duration::from_millis(ms),
                Some(_) => {
                    let max = CLAIM_WAIT_MAX.as_millis();
                    return Err(ToolError::Arguments(format!("wait_ms: must be from 0 to {max}")));
                }
            };
            Ok(agent.claim(&Serves::new(a.types, a.queues), wait).await?)
        }
        ToolName::Heartbeat => {
            let a: A::Lease = args(tool, &raw)?;
            let body = json!({ "lease_token": a.lease_token });
            Ok(client.post_json(&format!("/tasks/{}/heartbeat", task_id(&a.task_id)?), &body).await?)
        }
        ToolName::AppendLog => {
            let a: A::AppendLog = args(tool, &raw)?;
            let id = task_id(&a.task_id)?;
            let body = json!({ "lease_token": a.lease_token, "seq": agent.next_seq(&id), "lines": a.lines });
            Ok(client.post_json(&format!("/tasks/{id}/log"), &body).await?)
        }
        ToolName::ReportArtifact => {
            let a: A::ReportArtifact = args(tool, &raw)?;
            let mut body = json!({ "lease_token": a.lease_token, "name": a.name, "type": a.artifact_type });
            if let Some(media_type) = a.media_type {
                body["media_type"] = json!(media_type);
            }
            match (a.content, a.uri) {
                (Some(content), None) => {
                    body["content_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(content));
                }
                (None, Some(uri)) => body["uri"] = json!(uri),
                _ => return Err(ToolError::Arguments("give exactly one of content and uri".into())),
            }
            Ok(client.post_json(&format!("/tasks/{}/artifacts", task_id(&a.task_id)?), &body).await?)
        }
        ToolName::SpawnSteps => {
            let a: A::SpawnSteps = args(tool, &raw)?;
            // The server checks every step (422 invalid_workflow naming it).
            let body = json!({ "lease_token": a.lease_token, "steps": a.steps });
            Ok(client.post_json(&format!("/tasks/{}/spawn", task_id(&a.task_id)?), &body).await?)
        }
        ToolName::CompleteTask => {
            let a: A::CompleteTask = args(tool, &raw)?;
            let id = task_id(&a.task_id)?;
            let mut body = json!({ "lease_token": a.lease_token });
            if let Some(result) = a.result {
                body["result"] = result.unwrap_or(Value::Null);
            }
            if let Some(spawn) = a.spawn {
                body["spawn"] = json!(spawn);
            }
            let answer = client.post_json(&format!("/tasks/{id}/complete"), &body).await?;
            agent.ended(&id);
            Ok(answer)
        }
        ToolName::FailTask => {
            let a: A::FailTask = args(tool, &raw)?;
            let id = task_id(&a.task_id)?;
            let mut body = json!({ "lease_token": a.lease_token, "error": { "message": a.message } });
            if let Some(retryable) = a.retryable {
                body["retryable"] = json!(retryable);
            }
            let answer = client.post_json(&format!("/tasks/{id}/fail"), &body).await?;
            agent.ended(&id);
            Ok(answer)
        }
        ToolName::GetIssueContext => issue_context(client, &args::<A::IssueRef>(tool, &raw)?.issue_id).await,
        ToolName::ListSchedules | ToolName::ListQueues => {
            args::<A::Nothing>(tool, &raw)?;
            let path = if tool == ToolName::ListSchedules { "/schedules" } else { "/queues" };
            Ok(client.get_json(path).await?)
        }
        ToolName::CreateSchedule => {
            args::<A::CreateSchedule>(tool, &raw)?;
            // The server validates every value (422 invalid_schedule naming it).
            Ok(client.post_json("/schedules", &Value::Object(raw)).await?)
        }
        ToolName::PauseSchedule | ToolName::ResumeSchedule | ToolName::TriggerSchedule => {
            let action = match tool {
                ToolName::PauseSchedule => "pause",
                ToolName::ResumeSchedule => "resume",
                _ => "trigger",
            };
            let name = segment("name", &args::<A::ScheduleRef>(tool, &raw)?.name)?;
            Ok(client.post_json(&format!("/schedules/{name}/{action}"), &json!({})).await?)
        }
        ToolName::PauseQueue | ToolName::ResumeQueue => {
            let action = if tool == ToolName::PauseQueue { "pause" } else { "resume" };
            let name = segment("name", &args::<A::QueueRef>(tool, &raw)?.name)?;
            Ok(client.post_json(&format!("/queues/{name}/{action}"), &json!({})).await?)
        }
        ToolName::SetQueueLimits => {
            let name = segment("name", &args::<A::SetQueueLimits>(tool, &raw)?.name)?;
            // The rest is the PUT body as given: a field left out is kept, null removes it,
            // and the server checks every value (422 invalid_queue naming the field).
            let mut change = raw;
            change.remove("name");
            Ok(client.put_json(&format!("/queues/{name}"), &Value::Object(change)).await?)
        }
        ToolName::StartWorkflow => {
            args::<A::StartWorkflow>(tool, &raw)?;
            // The server validates every step and the graph (422 invalid_workflow naming them).
            Ok(client.post_json("/workflows", &Value::Object(raw)).await?)
        }
        ToolName::GetWorkflow => {
            let raw_id = args::<A::WorkflowRef>(tool, &raw)?.workflow_id;
            let id = uuid::Uuid::parse_str(&raw_id)
                .map_err(|_| ToolError::Arguments(format!("workflow_id: {raw_id:?} is not a UUID")))?;
            Ok(client.get_json(&format!("/workflows/{id}")).await?)
        }
        ToolName::DecideApproval => {
            let a: A::DecideApproval = args(tool, &raw)?;
            let id = task_id(&a.task_id)?;
            // The server checks the texts (422 naming the field).
            let mut body = serde_json::Map::new();
            body.insert("decision".into(), json!(a.decision));
            for (name, v) in [("comment", a.comment), ("by", a.by)] {
                if let Some(v) = v {
                    body.insert(name.into(), json!(v));
                }
            }
            Ok(client.post_json(&format!("/tasks/{id}/decision"), &Value::Object(body)).await?)
        }
    }
}

/// The Issue and every object written for whoever works on it: its context packets, the
/// constraint snapshots and doctrine it names, and those its packets pin.
async fn issue_context(client: &Client, issue_id: &str) -> Result<Value, ToolError> {
    let issue = client.get_json(&format!("/cwom/issues/{}", segment("issue_id", issue_id)?)).await?;
    let ids = |list: &Value| -> Vec<String> {
        list.as_array().into_iter().flatten().filter_map(|r| r["id"].as_str().map(str::to_string)).collect()
    };
    let mut packets = Vec::new();
    for id in ids(&issue["context_packets"]) {
        packets.push(client.get_json(&format!("/cwom/context-packets/{}", encode(&id))).await?);
    }
    let mut snapshot_ids = ids(&issue["constraints"]);
    let mut doctrine_ids = ids(&issue["doctrine_refs"]);
    for packet in &packets {
        if let Some(id) = packet["constraint_snapshot"]["id"].as_str() {
            snapshot_ids.push(id.to_string());
        }
        doctrine_ids.extend(ids(&packet["doctrine_refs"]));
    }
    let fetch_all = |kind: &'static str, mut ids: Vec<String>| async move {
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        let mut out = Vec::new();
        for id in ids {
            out.push(client.get_json(&format!("/cwom/{kind}/{}", encode(&id))).await?);
        }
        Ok::<_, ClientError>(out)
    };
    let constraint_snapshots = fetch_all("constraint-snapshots", snapshot_ids).await?;
    let doctrine = fetch_all("doctrine-refs", doctrine_ids).await?;
    Ok(json!({
        "issue": issue,
        "context_packets": packets,
        "constraint_snapshots": constraint_snapshots,
        "doctrine": doctrine,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_leave_their_place_in_the_path() {
        assert_eq!(segment("id", "01J-abc_x.y~").unwrap(), "01J-abc_x.y~");
        assert_eq!(segment("id", "../workers?x=1").unwrap(), "..%2Fworkers%3Fx%3D1");
        assert_eq!(encode("a b#"), "a%20b%23");
        for bad in ["", ".", ".."] {
            assert!(segment("id", bad).is_err());
        }
    }

    #[test]
    fn arguments_outside_the_schema_are_refused() {
        let raw = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let extra = args::<A::TaskRef>(ToolName::GetTask, &raw(json!({ "task_id": "x", "extra": 1 })));
        assert!(matches!(extra, Err(ToolError::Arguments(m)) if m.contains("extra")));
        assert!(matches!(task_id("not-a-uuid"), Err(ToolError::Arguments(_))));
        let typed = args::<A::ClaimTask>(ToolName::ClaimTask, &raw(json!({ "types": ["a", 1] })));
        assert!(matches!(typed, Err(ToolError::Arguments(_))));
        let missing = args::<A::Lease>(ToolName::Heartbeat, &raw(json!({ "task_id": "x" })));
        assert!(matches!(missing, Err(ToolError::Arguments(m)) if m.contains("lease_token")));
        // A limit given as null is kept apart from one left out.
        let limits: A::SetQueueLimits =
            args(ToolName::SetQueueLimits, &raw(json!({ "name": "q", "rate": null }))).unwrap();
        assert!(limits.concurrency.is_none() && matches!(limits.rate, Some(None)));
        // A step is checked for its types too, and a field no step has is refused.
        let step = args::<A::StartWorkflow>(
            ToolName::StartWorkflow,
            &raw(json!({ "name": "w", "steps": [{ "key": "a", "type": "echo", "after": ["b"] }] })),
        );
        assert!(matches!(step, Err(ToolError::Arguments(m)) if m.contains("after")));
        let typed = args::<A::StartWorkflow>(
            ToolName::StartWorkflow,
            &raw(json!({ "name": "w", "steps": [{ "key": "a", "type": "echo", "on_parent_failure": "skip" }] })),
        );
        assert!(matches!(typed, Err(ToolError::Arguments(_))));
    }
}
