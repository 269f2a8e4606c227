//! What each MCP tool does: its arguments read and checked, then the HTTP calls it makes. A
//! failure is a [`ToolError`], which the server hands back as a tool error; nothing here can
//! stop the MCP process.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::agent::{Agent, Serves};
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

/// A call's arguments, checked against the tool's schema as they are read.
struct Args(Map<String, Value>);

impl Args {
    /// Refuses names the schema does not declare (`additionalProperties: false`).
    fn new(tool: ToolName, raw: Option<Map<String, Value>>) -> Result<Self, ToolError> {
        let raw = raw.unwrap_or_default();
        let schema = tool.input_schema();
        if let Some(unknown) = raw.keys().find(|k| schema["properties"].get(k.as_str()).is_none()) {
            return Err(ToolError::Arguments(format!("{} takes no argument {unknown:?}", tool.name())));
        }
        Ok(Args(raw))
    }

    fn optional_str(&self, name: &str) -> Result<Option<&str>, ToolError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ToolError::Arguments(format!("{name}: expected a string"))),
        }
    }

    fn str(&self, name: &str) -> Result<&str, ToolError> {
        self.optional_str(name)?.ok_or_else(|| ToolError::Arguments(format!("{name}: required")))
    }

    /// A task id, checked to be a UUID before it becomes part of a path.
    fn task_id(&self) -> Result<String, ToolError> {
        let raw = self.str("task_id")?;
        uuid::Uuid::parse_str(raw)
            .map(|u| u.to_string())
            .map_err(|_| ToolError::Arguments(format!("task_id: {raw:?} is not a UUID")))
    }

    fn optional_strings(&self, name: &str) -> Result<Option<Vec<String>>, ToolError> {
        let bad = || ToolError::Arguments(format!("{name}: expected a list of strings"));
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                items.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(bad)).collect::<Result<_, _>>().map(Some)
            }
            Some(_) => Err(bad()),
        }
    }

    fn optional_u64(&self, name: &str) -> Result<Option<u64>, ToolError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                v.as_u64().map(Some).ok_or_else(|| ToolError::Arguments(format!("{name}: expected a whole number")))
            }
        }
    }

    fn optional_bool(&self, name: &str) -> Result<Option<bool>, ToolError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ToolError::Arguments(format!("{name}: expected true or false"))),
        }
    }
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
    let args = Args::new(tool, raw)?;
    match tool {
        ToolName::EnqueueTask => {
            args.str("type")?;
            // The server validates every field (422 naming it); send them as given.
            Ok(client.post_json("/tasks/enqueue", &Value::Object(args.0)).await?)
        }
        ToolName::GetTask => Ok(client.get_json(&format!("/tasks/{}", args.task_id()?)).await?),
        ToolName::ListTasks => {
            let mut query = Vec::new();
            for name in ["status", "type", "queue"] {
                if let Some(v) = args.optional_str(name)? {
                    query.push(format!("{name}={}", encode(v)));
                }
            }
            for name in ["limit", "offset"] {
                if let Some(v) = args.optional_u64(name)? {
                    query.push(format!("{name}={v}"));
                }
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            Ok(client.get_json(&format!("/tasks{query}")).await?)
        }
        ToolName::CancelTask => Ok(client.post_json(&format!("/tasks/{}/cancel", args.task_id()?), &json!({})).await?),
        ToolName::RetryTask => Ok(client.post_json(&format!("/tasks/{}/retry", args.task_id()?), &json!({})).await?),
        ToolName::GetTrace => {
            let file = args.str("file")?;
            // `artifacts/<name>` is the one file below the folder; every part is encoded.
            let path = file.split('/').map(|part| segment("file", part)).collect::<Result<Vec<_>, _>>()?;
            let text = client.get_text(&format!("/tasks/{}/trace/{}", args.task_id()?, path.join("/"))).await?;
            Ok(Value::String(text))
        }
        ToolName::ClaimTask => {
            let types =
                args.optional_strings("types")?.ok_or_else(|| ToolError::Arguments("types: required".into()))?;
            if types.is_empty() {
                return Err(ToolError::Arguments("types: name at least one task type".into()));
            }
            let queues = args.optional_strings("queues")?;
            let wait = match args.optional_u64("wait_ms")? {
                None => MCP_CLAIM_WAIT_DEFAULT,
                Some(ms) if ms <= CLAIM_WAIT_MAX.as_millis() as u64 => Duration::from_millis(ms),
                Some(_) => {
                    let max = CLAIM_WAIT_MAX.as_millis();
                    return Err(ToolError::Arguments(format!("wait_ms: must be from 0 to {max}")));
                }
            };
            Ok(agent.claim(&Serves::new(types, queues), wait).await?)
        }
        ToolName::Heartbeat => {
            let body = json!({ "lease_token": args.str("lease_token")? });
            Ok(client.post_json(&format!("/tasks/{}/heartbeat", args.task_id()?), &body).await?)
        }
        ToolName::AppendLog => {
            let task_id = args.task_id()?;
            let lines =
                args.optional_strings("lines")?.ok_or_else(|| ToolError::Arguments("lines: required".into()))?;
            let body =
                json!({ "lease_token": args.str("lease_token")?, "seq": agent.next_seq(&task_id), "lines": lines });
            Ok(client.post_json(&format!("/tasks/{task_id}/log"), &body).await?)
        }
        ToolName::ReportArtifact => {
            let mut body = json!({
                "lease_token": args.str("lease_token")?,
                "name": args.str("name")?,
                "type": args.str("type")?,
            });
            if let Some(media_type) = args.optional_str("media_type")? {
                body["media_type"] = json!(media_type);
            }
            match (args.optional_str("content")?, args.optional_str("uri")?) {
                (Some(content), None) => {
                    body["content_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(content));
                }
                (None, Some(uri)) => body["uri"] = json!(uri),
                _ => return Err(ToolError::Arguments("give exactly one of content and uri".into())),
            }
            Ok(client.post_json(&format!("/tasks/{}/artifacts", args.task_id()?), &body).await?)
        }
        ToolName::CompleteTask => {
            let task_id = args.task_id()?;
            let mut body = json!({ "lease_token": args.str("lease_token")? });
            if let Some(result) = args.0.get("result") {
                body["result"] = result.clone();
            }
            let answer = client.post_json(&format!("/tasks/{task_id}/complete"), &body).await?;
            agent.ended(&task_id);
            Ok(answer)
        }
        ToolName::FailTask => {
            let task_id = args.task_id()?;
            let mut body =
                json!({ "lease_token": args.str("lease_token")?, "error": { "message": args.str("message")? } });
            if let Some(retryable) = args.optional_bool("retryable")? {
                body["retryable"] = json!(retryable);
            }
            let answer = client.post_json(&format!("/tasks/{task_id}/fail"), &body).await?;
            agent.ended(&task_id);
            Ok(answer)
        }
        ToolName::GetIssueContext => issue_context(client, args.str("issue_id")?).await,
        ToolName::ListSchedules => Ok(client.get_json("/schedules").await?),
        ToolName::CreateSchedule => {
            args.str("name")?;
            // The server validates every field (422 invalid_schedule naming it).
            Ok(client.post_json("/schedules", &Value::Object(args.0)).await?)
        }
        ToolName::PauseSchedule | ToolName::ResumeSchedule | ToolName::TriggerSchedule => {
            let action = match tool {
                ToolName::PauseSchedule => "pause",
                ToolName::ResumeSchedule => "resume",
                _ => "trigger",
            };
            let name = segment("name", args.str("name")?)?;
            Ok(client.post_json(&format!("/schedules/{name}/{action}"), &json!({})).await?)
        }
        ToolName::ListQueues => Ok(client.get_json("/queues").await?),
        ToolName::PauseQueue | ToolName::ResumeQueue => {
            let action = if tool == ToolName::PauseQueue { "pause" } else { "resume" };
            let name = segment("name", args.str("name")?)?;
            Ok(client.post_json(&format!("/queues/{name}/{action}"), &json!({})).await?)
        }
        ToolName::SetQueueLimits => {
            let name = segment("name", args.str("name")?)?;
            // The rest is the PUT body as given: a field left out is kept, null removes it,
            // and the server checks every value (422 invalid_queue naming the field).
            let mut change = args.0;
            change.remove("name");
            Ok(client.put_json(&format!("/queues/{name}"), &Value::Object(change)).await?)
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
            Value::Object(m) => Some(m),
            _ => None,
        };
        assert!(Args::new(ToolName::GetTask, raw(json!({ "task_id": "x", "extra": 1 }))).is_err());
        let args = Args::new(ToolName::GetTask, raw(json!({ "task_id": "not-a-uuid" }))).unwrap();
        assert!(matches!(args.task_id(), Err(ToolError::Arguments(_))));
        let args = Args::new(ToolName::ClaimTask, raw(json!({ "types": ["a", 1] }))).unwrap();
        assert!(args.optional_strings("types").is_err());
    }
}
