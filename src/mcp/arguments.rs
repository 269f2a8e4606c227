//! Each MCP tool's arguments as a type. The input schema `tools/list` shows is derived from the
//! type (schemars) and a call's arguments are parsed into it (serde), so what a tool says it
//! takes and what it accepts cannot drift apart. Descriptions are the fields' doc comments.
//!
//! The tools that forward a body to the server (`jct_enqueue_task`, `jct_create_schedule`,
//! `jct_set_queue_limits`, `jct_start_workflow`) parse it here for the types, and send it on as given: the server
//! checks every value and names the field it refuses.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::cwom::types::ArtifactType;
use crate::schedule::{CatchUp, Overlap};
use crate::task::TaskStatus;
use crate::workflow::OnParentFailure;

/// The JSON Schema of `T`'s arguments, without the `$schema`
/// and `title` keys a client has no use for, and with `properties` and `required` always
/// there (empty for a tool without arguments), which some clients insist on.
pub fn schema_of<T: JsonSchema + 'static>() -> Map<String, Value> {
    // rmcp's generator: draft 2020-12 as MCP asks, cached per type.
    let mut map = (*rmcp::handler::server::common::schema_for_type::<T>()).clone();
    map.remove("$schema");
    map.remove("title");
    map.entry("properties").or_insert_with(|| Value::Object(Map::new()));
    map.entry("required").or_insert_with(|| Value::Array(Vec::new()));
    map
}

/// A call's arguments parsed into `T`: an unknown name, a missing one or a value of the wrong
/// type is refused with serde's words, which name the field.
pub fn parse<T: DeserializeOwned>(raw: &Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(raw.clone())).map_err(|e| e.to_string())
}

/// Absent stays `None`; a given value, `null` included, is `Some` (a limit set or removed).
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// Parsed to check the types; the call sends the body on as given.
#[allow(dead_code)]
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueTask {
    /// the task type (which handler or worker runs it)
    #[serde(rename = "type")]
    pub task_type: String,
    /// the handler's input (default {})
    pub payload: Option<Map<String, Value>>,
    /// default "default"
    pub queue: Option<String>,
    /// higher runs first (default 0)
    pub priority: Option<i64>,
    /// not before (RFC 3339)
    #[schemars(extend("format" = "date-time"))]
    pub run_at: Option<String>,
    #[schemars(range(min = 1))]
    pub max_attempts: Option<u32>,
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    /// a second enqueue with the same key is refused
    pub idempotency_key: Option<String>,
    /// tasks of one key run at most the queue's key_concurrency at a time (at most 256 characters)
    pub concurrency_key: Option<String>,
}

/// A decision on an approval step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    /// the approval step's task id (a UUID)
    pub task_id: String,
    /// approve (the step completes, its dependants run) or reject (it fails)
    pub decision: crate::approval::Decision,
    /// why, in your words (kept in the step's result)
    pub comment: Option<String>,
    /// who decided (kept in the step's result)
    pub by: Option<String>,
}

/// One task, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    /// the task's id (a UUID)
    pub task_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasks {
    pub status: Option<TaskStatus>,
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    pub queue: Option<String>,
    /// default 50
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetTrace {
    /// the task's id (a UUID)
    pub task_id: String,
    /// input.json, log.txt, output.json or artifacts/<name>
    pub file: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimTask {
    /// the task types you can do
    #[schemars(length(min = 1))]
    pub types: Vec<String>,
    /// only these queues (default: all)
    #[schemars(length(min = 1))]
    pub queues: Option<Vec<String>>,
    /// how long to wait for a task, in milliseconds (default 10000)
    #[schemars(range(max = 30_000))]
    pub wait_ms: Option<u64>,
}

/// A held task: its id and the lease token its claim returned.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// the task's id (a UUID)
    pub task_id: String,
    /// the lease_token jct_claim_task returned with the task
    pub lease_token: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendLog {
    /// the task's id (a UUID)
    pub task_id: String,
    /// the lease_token jct_claim_task returned with the task
    pub lease_token: String,
    /// one entry per line
    pub lines: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportArtifact {
    /// the task's id (a UUID)
    pub task_id: String,
    /// the lease_token jct_claim_task returned with the task
    pub lease_token: String,
    /// file name under artifacts/ (letters, digits, . _ -)
    pub name: String,
    #[serde(rename = "type")]
    pub artifact_type: ArtifactType,
    /// the file's text (give content or uri)
    pub content: Option<String>,
    /// where it lives instead (give content or uri)
    pub uri: Option<String>,
    /// e.g. text/x-diff
    pub media_type: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    /// the task's id (a UUID)
    pub task_id: String,
    /// the lease_token jct_claim_task returned with the task
    pub lease_token: String,
    /// any JSON value: what the task produced
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<Value>")]
    pub result: Option<Option<Value>>,
    /// steps to add to the task's workflow as it completes (as jct_spawn_steps takes them)
    pub spawn: Option<Vec<Map<String, Value>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnSteps {
    /// the task's id (a UUID); it must be a running step of a workflow
    pub task_id: String,
    /// the lease_token jct_claim_task returned with the task
    pub lease_token: String,
    /// each an enqueue body (type, payload, …) plus key ([A-Za-z0-9_.-]{1,64}, new in the
    /// workflow), depends_on (keys) and on_parent_failure (cancel or run); 1 to 10000
    pub steps: Vec<Map<String, Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    /// the task's id (a UUID)
    pub task_id: String,
    /// the lease_token jct_claim_task returned with the task
    pub lease_token: String,
    /// what went wrong
    pub message: String,
    /// default true
    pub retryable: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRef {
    /// the CWOM Issue's id
    pub issue_id: String,
}

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nothing {}

// Parsed to check the types; the call sends the body on as given.
#[allow(dead_code)]
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// unique, [A-Za-z0-9_.-]{1,128}
    pub name: String,
    /// 5 fields, 6 with seconds first, or @hourly, @daily, @weekly, @monthly
    pub cron: String,
    /// IANA time zone (default UTC)
    pub timezone: Option<String>,
    /// the enqueue body each tick uses (type, payload, queue, ...; no run_at or idempotency_key);
    /// give this or workflow
    pub task: Option<Map<String, Value>>,
    /// the workflow each tick starts (a POST /workflows body: name, steps; no idempotency_key);
    /// give this or task
    pub workflow: Option<Map<String, Value>>,
    /// missed ticks after downtime (default latest)
    pub catch_up: Option<CatchUp>,
    /// default 3600
    pub catch_up_window_s: Option<u64>,
    /// while the previous fire is queued or running (default skip)
    pub overlap: Option<Overlap>,
    pub paused: Option<bool>,
}

/// One schedule, by name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRef {
    /// the schedule's name
    pub name: String,
}

/// One queue, by name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueRef {
    /// the queue's name (any queue a task may name)
    pub name: String,
}

// Parsed to check the types; the call sends the body on as given.
#[allow(dead_code)]
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQueueLimits {
    /// the queue's name (any queue a task may name)
    pub name: String,
    /// most running tasks of the queue; null: no limit
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<u32>", range(min = 1, max = crate::queue::LIMIT_MAX))]
    pub concurrency: Option<Option<u32>>,
    /// most running tasks per concurrency_key; null: no limit
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<u32>", range(min = 1, max = crate::queue::LIMIT_MAX))]
    pub key_concurrency: Option<Option<u32>>,
    /// at most limit starts in any window of per_s seconds; null: no limit
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<Rate>")]
    pub rate: Option<Option<Rate>>,
}

// Parsed to check the types; the call sends the body on as given.
#[allow(dead_code)]
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    #[schemars(range(min = 1, max = crate::queue::RATE_LIMIT_MAX))]
    pub limit: u32,
    #[schemars(range(max = crate::queue::RATE_WINDOW_MAX_S), extend("exclusiveMinimum" = 0))]
    pub per_s: f64,
}

// Parsed to check the types; the call sends the body on as given.
#[allow(dead_code)]
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkflow {
    /// what the workflow is (1 to 256 characters)
    pub name: String,
    /// at most 10000; every key unique, no cycle
    #[schemars(length(min = 1))]
    pub steps: Vec<WorkflowStep>,
    /// a second start with the same key is refused
    pub idempotency_key: Option<String>,
    /// the CWOM Issue every step is recorded under
    pub cwom_issue_id: Option<String>,
}

/// One step: an enqueue body (no idempotency_key: the workflow has one) and its place in
/// the graph.
// Parsed to check the types; the call sends the body on as given.
#[allow(dead_code)]
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStep {
    /// unique in the workflow, [A-Za-z0-9_.-]{1,64}
    pub key: String,
    /// the keys of the steps this one waits for (default none: it is queued at once)
    pub depends_on: Option<Vec<String>>,
    /// when a parent ends failed or cancelled: cancel this step (default) or run it anyway
    pub on_parent_failure: Option<OnParentFailure>,
    /// the task type (which handler or worker runs it)
    #[serde(rename = "type")]
    pub task_type: String,
    /// the handler's input (default {}); a value {"$from": "<parent key>", "pointer": "/x"} is
    /// replaced by that part of the parent's result
    pub payload: Option<Map<String, Value>>,
    /// default "default"
    pub queue: Option<String>,
    /// higher runs first (default 0)
    pub priority: Option<i64>,
    /// not before (RFC 3339)
    #[schemars(extend("format" = "date-time"))]
    pub run_at: Option<String>,
    #[schemars(range(min = 1))]
    pub max_attempts: Option<u32>,
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    /// steps of one key run at most the queue's key_concurrency at a time
    pub concurrency_key: Option<String>,
    /// the CWOM Issue this step is recorded under (default: the workflow's)
    pub cwom_issue_id: Option<String>,
}

/// One workflow, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRef {
    /// the workflow's id (a UUID)
    pub workflow_id: String,
}
