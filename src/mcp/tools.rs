//! The MCP tools: their names, what each changes, their descriptions and input schemas (derived
//! from the argument types of `mcp::arguments`). What a call does is `mcp::calls`; this file
//! is the catalog an agent reads.

use std::sync::Arc;

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value};

/// Every tool the MCP server knows (DESIGN.md, "MCP").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolName {
    EnqueueTask,
    GetTask,
    ListTasks,
    CancelTask,
    RetryTask,
    GetTrace,
    ClaimTask,
    Heartbeat,
    AppendLog,
    ReportArtifact,
    SpawnSteps,
    CompleteTask,
    FailTask,
    GetIssueContext,
    ListSchedules,
    CreateSchedule,
    PauseSchedule,
    ResumeSchedule,
    TriggerSchedule,
    ListQueues,
    PauseQueue,
    ResumeQueue,
    SetQueueLimits,
    StartWorkflow,
    GetWorkflow,
    DecideApproval,
}

/// What a second identical call does, for the descriptions and the annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Changes nothing (allowed in `--read-only`).
    Reads,
    /// Changes state; a repeat changes nothing more (or is refused without harm).
    ChangesOnce,
    /// Changes state again on every call.
    ChangesEachCall,
}

impl ToolName {
    pub const ALL: [ToolName; 26] = [
        ToolName::EnqueueTask,
        ToolName::GetTask,
        ToolName::ListTasks,
        ToolName::CancelTask,
        ToolName::RetryTask,
        ToolName::GetTrace,
        ToolName::ClaimTask,
        ToolName::Heartbeat,
        ToolName::AppendLog,
        ToolName::ReportArtifact,
        ToolName::SpawnSteps,
        ToolName::CompleteTask,
        ToolName::FailTask,
        ToolName::GetIssueContext,
        ToolName::ListSchedules,
        ToolName::CreateSchedule,
        ToolName::PauseSchedule,
        ToolName::ResumeSchedule,
        ToolName::TriggerSchedule,
        ToolName::ListQueues,
        ToolName::PauseQueue,
        ToolName::ResumeQueue,
        ToolName::SetQueueLimits,
        ToolName::StartWorkflow,
        ToolName::GetWorkflow,
        ToolName::DecideApproval,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ToolName::EnqueueTask => "jct_enqueue_task",
            ToolName::GetTask => "jct_get_task",
            ToolName::ListTasks => "jct_list_tasks",
            ToolName::CancelTask => "jct_cancel_task",
            ToolName::RetryTask => "jct_retry_task",
            ToolName::GetTrace => "jct_get_trace",
            ToolName::ClaimTask => "jct_claim_task",
            ToolName::Heartbeat => "jct_heartbeat",
            ToolName::AppendLog => "jct_append_log",
            ToolName::ReportArtifact => "jct_report_artifact",
            ToolName::SpawnSteps => "jct_spawn_steps",
            ToolName::CompleteTask => "jct_complete_task",
            ToolName::FailTask => "jct_fail_task",
            ToolName::GetIssueContext => "jct_get_issue_context",
            ToolName::ListSchedules => "jct_list_schedules",
            ToolName::CreateSchedule => "jct_create_schedule",
            ToolName::PauseSchedule => "jct_pause_schedule",
            ToolName::ResumeSchedule => "jct_resume_schedule",
            ToolName::TriggerSchedule => "jct_trigger_schedule",
            ToolName::ListQueues => "jct_list_queues",
            ToolName::PauseQueue => "jct_pause_queue",
            ToolName::ResumeQueue => "jct_resume_queue",
            ToolName::SetQueueLimits => "jct_set_queue_limits",
            ToolName::StartWorkflow => "jct_start_workflow",
            ToolName::GetWorkflow => "jct_get_workflow",
            ToolName::DecideApproval => "jct_decide_approval",
        }
    }

    pub fn parse(name: &str) -> Option<ToolName> {
        ToolName::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the tool changes nothing on the server (the `--read-only` set).
    pub fn is_read_only(self) -> bool {
        self.effect() == Effect::Reads
    }

    fn effect(self) -> Effect {
        match self {
            ToolName::GetTask
            | ToolName::ListTasks
            | ToolName::GetTrace
            | ToolName::GetIssueContext
            | ToolName::ListSchedules
            | ToolName::ListQueues
            | ToolName::GetWorkflow => Effect::Reads,
            ToolName::CancelTask
            | ToolName::RetryTask
            | ToolName::Heartbeat
            | ToolName::ReportArtifact
            | ToolName::SpawnSteps
            | ToolName::CompleteTask
            | ToolName::FailTask
            | ToolName::CreateSchedule
            | ToolName::PauseSchedule
            | ToolName::ResumeSchedule
            | ToolName::PauseQueue
            | ToolName::ResumeQueue
            | ToolName::SetQueueLimits
            | ToolName::DecideApproval => Effect::ChangesOnce,
            ToolName::EnqueueTask
            | ToolName::ClaimTask
            | ToolName::AppendLog
            | ToolName::TriggerSchedule
            | ToolName::StartWorkflow => Effect::ChangesEachCall,
        }
    }

    fn description(self) -> &'static str {
        match self {
            ToolName::EnqueueTask => {
                "Adds a task to the JCT queue (POST /tasks/enqueue) and returns it (task_id, status \
                 queued). Changes: creates a task. Twice: creates a second task, unless both calls \
                 carry the same idempotency_key (then the second is refused with 409 \
                 duplicate_idempotency_key naming the existing task_id)."
            }
            ToolName::GetTask => "Returns one task (status, attempts, result or error, times). Changes nothing.",
            ToolName::ListTasks => {
                "Lists tasks, newest first, filtered by status, type and queue, with limit and \
                 offset. Changes nothing."
            }
            ToolName::CancelTask => {
                "Cancels a queued task (it will not run). Changes: the task becomes cancelled. \
                 Twice: safe; the second call is refused with 409 not_cancellable (the task is no longer queued)."
            }
            ToolName::RetryTask => {
                "Queues a failed or cancelled task again with a fresh attempt budget. Changes: the \
                 task becomes queued. Twice: safe; the second call is refused with 409 \
                 not_retryable while the task is queued or running."
            }
            ToolName::GetTrace => {
                "Returns a file of the task's trace folder as text: input.json (the task as \
                 claimed), log.txt (its log), output.json (how the attempt ended) or \
                 artifacts/<name>. Changes nothing."
            }
            ToolName::ClaimTask => {
                "Takes one queued task of the given types (and queues) to work on, waiting up to \
                 wait_ms (default 10000, at most 30000) for one. Returns {\"task\": {...}} with the \
                 task's payload and the lease_token every later call on it needs, or \
                 {\"task\": null} when none came. This MCP server registers itself as a JCT worker \
                 for those types on first use and keeps the task's lease alive while it runs; \
                 finish with jct_complete_task or jct_fail_task. Changes: the task becomes running, \
                 held by you. Twice: claims a second task."
            }
            ToolName::Heartbeat => {
                "Renews the lease on a task you hold and says whether someone asked to cancel it \
                 (cancel_requested: stop working on it). Changes: the lease's end. Twice: safe."
            }
            ToolName::AppendLog => {
                "Appends lines to the task's log.txt in its trace folder (this server numbers the \
                 appends). Changes: the log grows. Twice: appends the lines twice."
            }
            ToolName::ReportArtifact => {
                "Stores a file you produced (text content) under the task's trace folder as \
                 artifacts/<name>, or records a URI (a pull request, a build). Changes: adds the \
                 artifact. Twice: safe; the same name again is refused with 409 artifact_exists."
            }
            ToolName::SpawnSteps => {
                "Adds steps to the workflow of a task you hold while it runs (fan-out decided as \
                 you work): each step is an enqueue body plus key, depends_on (new steps or any \
                 step of the workflow) and on_parent_failure; whatever depends on your task waits \
                 for all of them too. Returns the workflow_id and each step's task_id and status. \
                 Changes: adds the steps. Twice: safe; the same keys again are refused with 422 \
                 invalid_workflow."
            }
            ToolName::CompleteTask => {
                "Ends your attempt at the task successfully with an optional JSON result; \
                 output.json is written. With spawn (steps as jct_spawn_steps takes them), those \
                 steps join the task's workflow in the same transaction. Changes: the task becomes \
                 completed and the lease ends. Twice: safe; the second call is refused with 409 \
                 lease_lost."
            }
            ToolName::FailTask => {
                "Ends your attempt at the task as failed with a message. retryable (default true) \
                 lets JCT run it again after a backoff while attempts remain; false fails it for \
                 good. Changes: the task becomes queued again or failed, and the lease ends. Twice: \
                 safe; the second call is refused with 409 lease_lost."
            }
            ToolName::GetIssueContext => {
                "Returns a CWOM Issue with everything written for whoever works on it: the issue, \
                 its context packets (newest knowledge last), constraint snapshots and doctrine \
                 (principles, policies, procedures), each object whole. Changes nothing."
            }
            ToolName::ListSchedules => {
                "Lists every schedule (GET /schedules): its cron pattern, time zone, task, policies, \
                 paused or not, next_fire_at, the next 5 fire times and its last fire (time and \
                 task_id). Changes nothing."
            }
            ToolName::CreateSchedule => {
                "Creates a schedule (POST /schedules) that enqueues its task (or starts its workflow) \
                 on every tick of a cron pattern (5 fields, 6 with seconds first, or @hourly/@daily/@weekly/@monthly) in an \
                 IANA time zone. Changes: adds the schedule. Twice: safe; the second call is refused \
                 with 409 schedule_exists."
            }
            ToolName::PauseSchedule => {
                "Pauses a schedule: its ticks stop firing. Changes: the schedule is paused. Twice: safe."
            }
            ToolName::ResumeSchedule => {
                "Resumes a paused schedule from its next tick (ticks of the pause do not fire). \
                 Changes: the schedule runs again. Twice: safe."
            }
            ToolName::TriggerSchedule => {
                "Fires a schedule once now, outside its pattern (its task is enqueued or its workflow \
                 started; no tick is used up) and returns the task_id (or workflow_id). Changes: \
                 creates a task or workflow. Twice: creates a second one."
            }
            ToolName::ListQueues => {
                "Lists every queue that has a setting or a live task (GET /queues): paused or not, \
                 its limits (concurrency, key_concurrency, rate {limit, per_s}; null is none) and \
                 its queued, running and waiting counts. Changes nothing."
            }
            ToolName::PauseQueue => {
                "Pauses a queue: no daemon or worker claims from it until it is resumed; its running \
                 tasks go on. Any queue name works (settings create the queue). Changes: the queue is \
                 paused. Twice: safe."
            }
            ToolName::ResumeQueue => {
                "Resumes a paused queue: its tasks are claimed again at once. Changes: the queue runs \
                 again. Twice: safe."
            }
            ToolName::SetQueueLimits => {
                "Changes a queue's limits (PUT /queues/{name}), held across every daemon and remote \
                 worker: concurrency (running tasks of the queue), key_concurrency (running tasks per \
                 concurrency_key), rate ({limit, per_s}: starts per window of seconds). A field left \
                 out is kept, null removes that limit. Returns the queue. Changes: the limits. Twice: \
                 safe (the same limits again)."
            }
            ToolName::StartWorkflow => {
                "Starts a workflow (POST /workflows): named steps stored at once, each an enqueue \
                 body (type, payload, queue, ...) plus a key, the keys it depends_on and \
                 on_parent_failure (cancel, the default, or run). Steps without parents are queued \
                 at once, the others wait until their parents end; a payload value {\"$from\": \
                 \"<key>\", \"pointer\": \"/x\"} is replaced by that part of a parent's result. \
                 Returns workflow_id, status and each step's task_id; a bad graph is refused whole \
                 with 422 invalid_workflow naming the step(s). Changes: creates the workflow and \
                 its tasks. Twice: creates a second workflow, unless both calls carry the same \
                 idempotency_key (then 409 duplicate_idempotency_key naming the workflow_id)."
            }
            ToolName::GetWorkflow => {
                "Returns a workflow (GET /workflows/{id}): its status (running, completed, failed, \
                 cancelled) and every step with key, task_id, type, status, depends_on, attempts, \
                 last_error and times. Changes nothing."
            }
            ToolName::DecideApproval => {
                "Approves or rejects a workflow's approval step awaiting its decision (POST \
                 /tasks/{id}/decision), with an optional comment and who decided. Approve completes \
                 it (result {decision, comment, by, at}) and its dependants run; reject fails it. \
                 Changes: the step ends. Twice: safe; the second call is refused with 409 \
                 not_awaiting_decision (as is a step whose parents are not done)."
            }
        }
    }

    /// The input's JSON Schema, derived from the type its arguments are parsed into.
    pub fn input_schema(self) -> Map<String, Value> {
        use super::arguments::*;
        match self {
            ToolName::EnqueueTask => schema_of::<EnqueueTask>(),
            ToolName::GetTask | ToolName::CancelTask | ToolName::RetryTask => schema_of::<TaskRef>(),
            ToolName::ListTasks => schema_of::<ListTasks>(),
            ToolName::GetTrace => schema_of::<GetTrace>(),
            ToolName::ClaimTask => schema_of::<ClaimTask>(),
            ToolName::Heartbeat => schema_of::<Lease>(),
            ToolName::AppendLog => schema_of::<AppendLog>(),
            ToolName::ReportArtifact => schema_of::<ReportArtifact>(),
            ToolName::SpawnSteps => schema_of::<SpawnSteps>(),
            ToolName::CompleteTask => schema_of::<CompleteTask>(),
            ToolName::FailTask => schema_of::<FailTask>(),
            ToolName::GetIssueContext => schema_of::<IssueRef>(),
            ToolName::ListSchedules | ToolName::ListQueues => schema_of::<Nothing>(),
            ToolName::CreateSchedule => schema_of::<CreateSchedule>(),
            ToolName::PauseSchedule | ToolName::ResumeSchedule | ToolName::TriggerSchedule => {
                schema_of::<ScheduleRef>()
            }
            ToolName::PauseQueue | ToolName::ResumeQueue => schema_of::<QueueRef>(),
            ToolName::SetQueueLimits => schema_of::<SetQueueLimits>(),
            ToolName::StartWorkflow => schema_of::<StartWorkflow>(),
            ToolName::GetWorkflow => schema_of::<WorkflowRef>(),
            ToolName::DecideApproval => schema_of::<DecideApproval>(),
        }
    }

    /// The tool as `tools/list` shows it.
    pub fn tool(self) -> Tool {
        let schema = self.input_schema();
        let effect = self.effect();
        let annotations = ToolAnnotations::new()
            .read_only(effect == Effect::Reads)
            .destructive(false)
            .idempotent(effect != Effect::ChangesEachCall)
            .open_world(false);
        Tool::new(self.name(), self.description(), Arc::new(schema)).annotate(annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_read_only_is_the_seven_readers() {
        for tool in ToolName::ALL {
            assert_eq!(ToolName::parse(tool.name()), Some(tool));
        }
        let read_only: Vec<&str> = ToolName::ALL.iter().filter(|t| t.is_read_only()).map(|t| t.name()).collect();
        assert_eq!(
            read_only,
            [
                "jct_get_task",
                "jct_list_tasks",
                "jct_get_trace",
                "jct_get_issue_context",
                "jct_list_schedules",
                "jct_list_queues",
                "jct_get_workflow"
            ]
        );
        assert_eq!(ToolName::parse("jct_nothing"), None);
    }

    #[test]
    fn descriptions_read_as_one_line_each() {
        for tool in ToolName::ALL {
            assert!(!tool.description().contains("  "), "{}: a lost line continuation", tool.name());
        }
    }

    #[test]
    fn required_names_declared_properties() {
        for tool in ToolName::ALL {
            let schema = tool.input_schema();
            let properties = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
            assert_eq!(schema["type"], "object", "{}", tool.name());
            assert_eq!(schema["additionalProperties"], false, "{}", tool.name());
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                assert!(properties.contains_key(name.as_str().unwrap()), "{}: {name}", tool.name());
            }
        }
    }
}
