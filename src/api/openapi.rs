//! The OpenAPI 3 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Written by hand next to the routes it describes; `tests/integration/openapi.rs` walks every path
//! and method in it against a running daemon and checks the answers match, so the two
//! cannot drift apart unnoticed.

use serde_json::{json, Value};

/// The CWOM collections under `/cwom`, with the filters each list takes.
const CWOM_KINDS: [(&str, &str, &[&str]); 7] = [
    ("repos", "Repo", &["visibility"]),
    ("issues", "Issue", &["repo_id", "status", "type", "priority"]),
    ("context-packets", "ContextPacket", &[]),
    ("constraint-snapshots", "ConstraintSnapshot", &[]),
    ("doctrine-refs", "DoctrineRef", &["namespace", "type"]),
    ("runs", "Run", &["issue_id", "repo_id", "status", "mode"]),
    ("artifacts", "Artifact", &["run_id", "issue_id", "type"]),
];

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn id_param(description: &str) -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn query_params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({ "name": n, "in": "query", "required": false, "schema": { "type": "string" } }))
        .collect()
}

fn paging() -> Vec<Value> {
    vec![
        json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
        json!({ "name": "offset", "in": "query", "schema": { "type": "integer", "minimum": 0 } }),
    ]
}

fn task_paths() -> Value {
    let bulk_responses = json!({
        "200": ok_json("How many tasks the selection held and how many changed", schema_ref("BulkResult")),
        "400": error("Malformed JSON, or an id that is not a UUID"),
        "401": error("Missing or wrong API key"),
        "403": error("The read-only key (`read_only_key`), a session request without its CSRF token (`csrf_rejected`), or another site's Origin (`cross_origin`)"),
        "413": error("Body larger than JCT_MAX_BODY_BYTES"),
        "415": error("Not application/json"),
        "422": error("Neither or both of ids and filter (`invalid_bulk`), more than 10,000 ids, or a bad filter (`invalid_filter`)"),
    });
    let enqueue_errors = json!({
        "400": error("Malformed JSON (`malformed_json`), or a header that is not text (`invalid_header`)"),
        "401": error("Missing or wrong API key"),
        "409": error("Idempotency key already used; the body names the existing task_id"),
        "413": error("Body larger than JCT_MAX_BODY_BYTES"),
        "415": error("Not application/json"),
        "422": error(
            "`invalid_field`: a field breaks a rule or holds what no store can (a NUL anywhere, a time outside \
             0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z, an integer past int4, a bad X-Trace-Id); the \
             message names the field or a JSON pointer (`/payload/a/0`). `unknown_type`. `command_not_allowed`: a `command` program (or an \
             agent profile's) not on JCT_COMMAND_ALLOW, or `command` disabled. `repo_not_allowed`: an \
             `agent` repository outside JCT_ALLOWED_REPO_PREFIXES, or `agent` disabled. \
             Batch: `index` names the refused task; `duplicate_key_in_batch` names both uses in `indexes`. \
             `rejected_by_store`: the database refused this row (a constraint or trigger), with its message"
        ),
        "503": error("Store unavailable"),
    });
    let mut enqueue_responses = enqueue_errors.clone();
    enqueue_responses["201"] = ok_json("The task, queued", schema_ref("Task"));
    let mut batch_responses = enqueue_errors;
    batch_responses["201"] = ok_json("All tasks queued", schema_ref("BatchResult"));
    json!({
        "/health": { "get": {
            "summary": "Liveness: the process answers",
            "responses": { "200": ok_json("Alive", schema_ref("Health")) }
        }},
        "/ready": { "get": {
            "summary": "Readiness: the store answers",
            "responses": { "200": ok_json("Ready", schema_ref("Ready")), "503": error("Store unavailable") }
        }},
        "/metrics": { "get": {
            "summary": "Prometheus/OpenMetrics text",
            "responses": { "200": { "description": "Metrics", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } }
        }},
        "/openapi.json": { "get": {
            "summary": "This document",
            "responses": { "200": ok_json("The OpenAPI document", json!({ "type": "object", "required": ["openapi", "paths"] })) }
        }},
        "/tasks/enqueue": { "post": {
            "summary": "Enqueue one task",
            "parameters": [{ "name": "X-Trace-Id", "in": "header", "required": false, "schema": { "type": "string", "maxLength": 128 } }],
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": schema_ref("TaskSpec"),
                "example": { "type": "echo", "payload": { "hello": "world" } }
            }}},
            "responses": enqueue_responses
        }},
        "/tasks/enqueue_batch": { "post": {
            "summary": "Enqueue many tasks in one all-or-nothing insert",
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": { "type": "array", "minItems": 1, "items": schema_ref("TaskSpec") },
                "example": [{ "type": "echo", "payload": 1 }, { "type": "echo", "payload": 2 }]
            }}},
            "responses": batch_responses
        }},
        "/tasks/bulk/cancel": { "post": {
            "summary": "Cancel the queued or running tasks named by id, or every task matching a filter (in bounded chunks)",
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": schema_ref("BulkRequest"),
                "example": { "filter": { "status": "queued", "queue": "nightly" } }
            }}},
            "responses": bulk_responses.clone()
        }},
        "/tasks/bulk/retry": { "post": {
            "summary": "Queue again the failed or cancelled tasks named by id, or every task matching a filter (in bounded chunks)",
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": schema_ref("BulkRequest"),
                "example": { "filter": { "status": "failed" } }
            }}},
            "responses": bulk_responses
        }},
        "/tasks": { "get": {
            "summary": "List tasks, newest first",
            "parameters": ([query_params(&["status", "type", "queue", "cwom_issue_id", "before"]), paging()].concat()),
            "responses": {
                "200": ok_json("Tasks", json!({ "type": "array", "items": schema_ref("Task") })),
                "400": error("Undecodable query string"),
                "401": error("Missing or wrong API key"),
                "422": error("Unknown filter or bad value"),
            }
        }},
        "/tasks/{id}": { "get": {
            "summary": "One task",
            "parameters": [id_param("Task id (UUID)")],
            "responses": {
                "200": ok_json("The task", schema_ref("Task")),
                "400": error("Not a UUID"),
                "401": error("Missing or wrong API key"),
                "404": error("No such task"),
            }
        }},
        "/tasks/{id}/cancel": { "post": {
            "summary": "Cancel a queued or running task",
            "parameters": [id_param("Task id (UUID)")],
            "responses": {
                "200": ok_json("The task, now cancelled", schema_ref("Task")),
                "400": error("Not a UUID"),
                "401": error("Missing or wrong API key"),
                "404": error("No such task"),
                "409": error("Already completed, failed or cancelled"),
            }
        }},
    })
}

fn task_id_param() -> Value {
    id_param("Task id (UUID)")
}

/// The operator routes on one task (retry, log, trace files) and the worker protocol.
fn worker_paths() -> Value {
    let token_op = |summary: &str, example: Value, ok: Value| {
        json!({ "post": {
            "summary": summary,
            "parameters": [task_id_param()],
            "requestBody": { "content": { "application/json": { "example": example } } },
            "responses": {
                "200": ok,
                "400": error("Not a UUID, or malformed JSON"),
                "401": error("Missing or wrong API key"),
                "409": error("lease_lost: the token no longer holds the task"),
                "413": error("Body too large"),
                "415": error("Not application/json"),
                "422": error("Invalid field (a bad lease_token, say)"),
            }
        }})
    };
    let token = "1.w-00000000";
    let mut artifacts = token_op(
        "Store an artifact of the attempt under artifacts/ in the trace folder (and as a CWOM Artifact of its Run)",
        json!({ "lease_token": token, "name": "changes.patch", "type": "code_patch", "content_base64": "eA==" }),
        json!({ "description": "unused" }),
    );
    let responses = artifacts["post"]["responses"].as_object_mut().unwrap();
    responses.remove("200");
    responses.insert("201".into(), ok_json("The stored artifact", schema_ref("StoredArtifact")));
    json!({
        "/workers": {
            "post": {
                "summary": "Register a worker",
                "requestBody": { "content": { "application/json": { "example": { "name": "py-worker", "types": ["build"], "max_slots": 2 } } } },
                "responses": {
                    "201": ok_json("Registered", schema_ref("Registration")),
                    "401": error("Missing or wrong API key"),
                    "422": error("Invalid registration"),
                }
            },
            "get": {
                "summary": "Registered workers, with their running tasks and state (alive, dead)",
                "responses": {
                    "200": ok_json("Workers", json!({ "type": "array", "items": schema_ref("Worker") })),
                    "401": error("Missing or wrong API key"),
                }
            }
        },
        "/workers/{id}/heartbeat": { "post": {
            "summary": "A worker's heartbeat; renews the leases of the tasks it names and says which to stop",
            "parameters": [id_param("Worker id")],
            "requestBody": { "content": { "application/json": { "example": { "running": [] } } } },
            "responses": {
                "200": ok_json("Signal and cancels", schema_ref("WorkerBeat")),
                "401": error("Missing or wrong API key"),
                "404": error("worker_not_found: register again"),
                "422": error("Invalid field"),
            }
        }},
        "/workers/{id}": { "delete": {
            "summary": "Deregister a worker; its running tasks go back to the queue at once",
            "parameters": [id_param("Worker id")],
            "responses": {
                "200": ok_json("Deregistered", json!({ "type": "object", "required": ["worker_id", "released"] })),
                "401": error("Missing or wrong API key"),
                "404": error("worker_not_found"),
            }
        }},
        "/tasks/claim": { "post": {
            "summary": "Long-poll for tasks the worker serves (at most max, never more than its free slots)",
            "requestBody": { "content": { "application/json": { "example": { "worker_id": "w-unknown", "max": 10, "wait_ms": 0 } } } },
            "responses": {
                "200": ok_json("Claimed tasks, each with lease_token; empty when the wait ran out", schema_ref("Claim")),
                "401": error("Missing or wrong API key"),
                "404": error("worker_not_found"),
                "422": error("max outside 1..100 or wait_ms outside 0..30000"),
            }
        }},
        "/tasks/{id}/heartbeat": token_op(
            "Extend the attempt's lease; answers whether it was cancelled",
            json!({ "lease_token": token, "progress": { "pct": 50 } }),
            ok_json("Lease", schema_ref("TaskBeat")),
        ),
        "/tasks/{id}/log": {
            "post": token_op(
                "Append log lines to log.txt, once per seq",
                json!({ "lease_token": token, "seq": 1, "lines": ["hello"] }),
                ok_json("Appended (false for a repeated seq)", json!({ "type": "object", "required": ["appended"] })),
            )["post"].clone(),
            "get": {
                "summary": "The task's log.txt; ?follow=1 streams it as server-sent events until the attempt ends",
                "parameters": [task_id_param(), { "name": "follow", "in": "query", "schema": { "type": "string", "enum": ["0", "1"] } }],
                "responses": {
                    "200": { "description": "log.txt, or an event stream (events line and end)", "content": { "text/plain": { "schema": { "type": "string" } }, "text/event-stream": { "schema": { "type": "string" } } } },
                    "400": error("Not a UUID"),
                    "401": error("Missing or wrong API key"),
                    "404": error("No such task"),
                    "422": error("Bad query parameter"),
                }
            }
        },
        "/tasks/{id}/artifacts": artifacts,
        "/tasks/{id}/complete": token_op(
            "Complete the attempt with a result",
            json!({ "lease_token": token, "result": { "ok": true } }),
            ok_json("The task", schema_ref("Task")),
        ),
        "/tasks/{id}/fail": token_op(
            "Fail the attempt: retried per max_attempts (after retry_after_s when given), never when retryable is false",
            json!({ "lease_token": token, "error": { "message": "boom", "kind": "runtime" }, "retryable": true }),
            ok_json("The task, queued again or failed", schema_ref("Task")),
        ),
        "/tasks/{id}/release": token_op(
            "Give the task back to the queue, the attempt not counted",
            json!({ "lease_token": token }),
            ok_json("The task, queued", schema_ref("Task")),
        ),
        "/tasks/{id}/retry": { "post": {
            "summary": "Queue a failed or cancelled task again with a fresh attempt budget",
            "parameters": [task_id_param()],
            "responses": {
                "200": ok_json("The task, queued", schema_ref("Task")),
                "400": error("Not a UUID"),
                "401": error("Missing or wrong API key"),
                "404": error("No such task"),
                "409": error("not_retryable: only failed or cancelled tasks"),
            }
        }},
        "/tasks/{id}/trace/{file}": { "get": {
            "summary": "A trace file: input.json, log.txt, output.json, output.attempt-N.json (attempt N's end, kept when attempt N+1 began) or artifacts/<name>",
            "parameters": [task_id_param(), { "name": "file", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": {
                "200": { "description": "The file", "content": { "application/octet-stream": { "schema": { "type": "string" } } } },
                "400": error("Not a UUID"),
                "401": error("Missing or wrong API key"),
                "404": error("No such task or trace file"),
            }
        }},
    })
}

fn cwom_paths() -> Value {
    let mut paths = serde_json::Map::new();
    for (segment, kind, filters) in CWOM_KINDS {
        let create_errors = json!({
            "400": error("Malformed JSON"),
            "401": error("Missing or wrong API key"),
            "409": error("Duplicate unique key"),
            "413": error("Body too large"),
            "415": error("Not application/json"),
            "422": error(
                "Invalid field (also a NUL anywhere in the body, named by JSON pointer, or a time outside \
                 years 0001-9999), missing required field, a Ref to a missing object, or `rejected_by_store`"
            ),
        });
        let mut create = create_errors;
        create["201"] = ok_json(&format!("The new {kind}"), schema_ref(kind));
        paths.insert(
            format!("/cwom/{segment}"),
            json!({
                "post": {
                    "summary": format!("Create a {kind}"),
                    "requestBody": { "required": true, "content": { "application/json": {
                        "schema": { "type": "object" },
                        "example": { "unknown_field": true }
                    }}},
                    "responses": create
                },
                "get": {
                    "summary": format!("List {kind} objects"),
                    "parameters": ([query_params(filters), paging()].concat()),
                    "responses": {
                        "200": ok_json(&format!("{kind} objects"), json!({ "type": "array", "items": schema_ref(kind) })),
                        "401": error("Missing or wrong API key"),
                        "422": error("Unknown filter or bad value"),
                    }
                }
            }),
        );
        let mut item = json!({
            "get": {
                "summary": format!("One {kind}"),
                "parameters": [id_param(&format!("{kind} id"))],
                "responses": {
                    "200": ok_json(&format!("The {kind}"), schema_ref(kind)),
                    "401": error("Missing or wrong API key"),
                    "404": error("No such object"),
                }
            }
        });
        match segment {
            "issues" | "runs" => {
                item["patch"] = json!({
                    "summary": format!("Update a {kind} (status moves; not out of a final status)"),
                    "parameters": [id_param(&format!("{kind} id"))],
                    "requestBody": { "required": true, "content": { "application/json": {
                        "schema": { "type": "object" }, "example": { "status": "running" }
                    }}},
                    "responses": {
                        "200": ok_json(&format!("The updated {kind}"), schema_ref(kind)),
                        "400": error("Malformed JSON"),
                        "401": error("Missing or wrong API key"),
                        "404": error("No such object"),
                        "409": error("Transition out of a final status"),
                        "422": error("Invalid field"),
                    }
                });
            }
            "context-packets" | "constraint-snapshots" => {
                let immutable = json!({
                    "summary": format!("Refused: a {kind} is immutable"),
                    "parameters": [id_param(&format!("{kind} id"))],
                    "responses": { "405": error("immutable_object") }
                });
                item["put"] = immutable.clone();
                item["patch"] = immutable;
            }
            _ => {}
        }
        paths.insert(format!("/cwom/{segment}/{{id}}"), item);
    }
    Value::Object(paths)
}

fn cwom_schema(required: &[&str]) -> Value {
    let mut all = vec!["kind", "id", "tags", "meta"];
    all.extend_from_slice(required);
    json!({ "type": "object", "required": all })
}

fn schemas() -> Value {
    let task_fields = [
        "id",
        "task_id",
        "type",
        "payload",
        "status",
        "queue",
        "priority",
        "run_at",
        "attempts",
        "max_attempts",
        "timeout_seconds",
        "idempotency_key",
        "trace_id",
        "locked_by",
        "locked_until",
        "result",
        "last_error",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "cwom_issue_id",
        "schedule_name",
        "scheduled_for",
        "concurrency_key",
    ];
    let task_spec = json!({
        "type": "object",
        "required": ["type"],
        "additionalProperties": false,
        "properties": {
            "type": { "type": "string", "minLength": 1, "maxLength": 128 },
            "payload": { "description": "any JSON; default {}" },
            "queue": { "type": "string", "default": "default" },
            "priority": { "type": "integer", "default": 0 },
            "run_at": { "type": "string", "format": "date-time" },
            "max_attempts": { "type": "integer", "minimum": 1, "maximum": 100, "default": 3 },
            "timeout_seconds": { "type": "integer", "minimum": 1, "default": 900 },
            "idempotency_key": { "type": "string", "maxLength": 256 },
            "cwom_issue_id": { "type": "string", "description": "record each attempt as a Run of this CWOM Issue" },
            "concurrency_key": {
                "type": "string", "minLength": 1, "maxLength": 256,
                "description": "run at most the queue's key_concurrency tasks of this key at a time"
            }
        }
    });
    // A schedule's task: the enqueue body less what every fire sets itself.
    let mut schedule_task = task_spec.clone();
    if let Some(p) = schedule_task["properties"].as_object_mut() {
        p.remove("run_at");
        p.remove("idempotency_key");
    }
    schedule_task["description"] =
        json!("An enqueue body without run_at (a fire runs now) and idempotency_key (every fire has its own)");
    let schedule_body = json!({
        "type": "object",
        "required": ["name", "cron"],
        "properties": {
            "name": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$" },
            "cron": { "type": "string", "description": "5 fields, 6 with seconds first, or @hourly, @daily, @weekly, @monthly" },
            "timezone": { "type": "string", "default": "UTC", "description": "IANA time zone" },
            "task": schema_ref("ScheduleTask"),
            "workflow": { "type": "object", "description": "Not available yet on this server: 422" },
            "catch_up": { "enum": ["skip", "latest", "all"], "default": "latest" },
            "catch_up_window_s": { "type": "integer", "default": 3600 },
            "overlap": { "enum": ["allow", "skip", "buffer_one", "cancel_other"], "default": "skip" },
            "paused": { "type": "boolean", "default": false }
        }
    });
    json!({
        "ScheduleBody": schedule_body,
        "Schedule": {
            "type": "object",
            "required": ["name", "cron", "timezone", "task", "catch_up", "catch_up_window_s", "overlap", "paused",
                         "next_fire_at", "upcoming", "cron_description", "last_fired_at", "last_task_id", "source",
                         "created_at", "updated_at"],
            "properties": {
                "next_fire_at": { "type": ["string", "null"], "format": "date-time", "description": "null while paused" },
                "upcoming": { "type": "array", "items": { "type": "string", "format": "date-time" }, "description": "the next 5 fire times" },
                "cron_description": { "type": "string", "description": "the pattern in words" },
                "last_fired_at": { "type": ["string", "null"], "format": "date-time" },
                "last_task_id": { "type": ["string", "null"] },
                "buffered_for": { "type": ["string", "null"], "description": "a tick overlap buffer_one holds back" },
                "source": { "enum": ["api", "file"], "description": "file: managed by JCT_SCHEDULES_FILE" }
            }
        },
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": { "type": "string", "description": "snake_case code" },
                "message": { "type": "string", "description": "one human sentence" },
                "task_id": { "type": "string", "description": "the task concerned, where there is one" },
                "index": { "type": "integer", "description": "the refused task of a batch" },
                "indexes": {
                    "type": "array", "items": { "type": "integer" },
                    "description": "duplicate_key_in_batch: the two tasks of the batch that use one idempotency key"
                }
            }
        },
        "BulkRequest": {
            "type": "object",
            "additionalProperties": false,
            "description": "exactly one of ids and filter",
            "properties": {
                "ids": { "type": "array", "maxItems": 10000, "items": { "type": "string", "format": "uuid" } },
                "filter": {
                    "type": "object",
                    "additionalProperties": false,
                    "description": "every task matching when the request arrives; {} is every task",
                    "properties": {
                        "status": { "type": "string" }, "type": { "type": "string" },
                        "queue": { "type": "string" }, "cwom_issue_id": { "type": "string" }
                    }
                }
            }
        },
        "BulkResult": {
            "type": "object",
            "required": ["action", "matched", "changed"],
            "properties": {
                "action": { "type": "string", "enum": ["cancel", "retry"] },
                "matched": { "type": "integer", "description": "tasks the ids or the filter named" },
                "changed": { "type": "integer", "description": "of those, the ones cancelled (were queued or running) or queued again (were failed or cancelled)" }
            }
        },
        "Health": { "type": "object", "required": ["status"], "properties": { "status": { "type": "string", "enum": ["ok"] } } },
        "Ready": {
            "type": "object",
            "required": ["status", "store", "listener_connected"],
            "properties": {
                "status": { "type": "string" },
                "store": { "type": "string" },
                "listener_connected": { "type": ["boolean", "null"], "description": "null without a LISTEN connection" }
            }
        },
        "TaskSpec": task_spec,
        "ScheduleTask": schedule_task,
        "QueueChange": {
            "type": "object",
            "additionalProperties": false,
            "description": "each field left out is kept, null removes that limit",
            "properties": {
                "concurrency": { "type": ["integer", "null"], "minimum": 1, "maximum": crate::queue::LIMIT_MAX, "description": "most running tasks of the queue, across every daemon and remote worker" },
                "key_concurrency": { "type": ["integer", "null"], "minimum": 1, "maximum": crate::queue::LIMIT_MAX, "description": "most running tasks per concurrency_key in the queue (tasks without a key are held only to concurrency)" },
                "rate": {
                    "oneOf": [schema_ref("Rate"), { "type": "null" }]
                }
            }
        },
        "Rate": {
            "type": "object",
            "required": ["limit", "per_s"],
            "additionalProperties": false,
            "description": "at most limit starts in any window of per_s seconds",
            "properties": {
                "limit": { "type": "integer", "minimum": 1, "maximum": crate::queue::RATE_LIMIT_MAX },
                "per_s": { "type": "number", "exclusiveMinimum": 0, "maximum": crate::queue::RATE_WINDOW_MAX_S }
            }
        },
        "Queue": {
            "type": "object",
            "required": ["name", "paused", "concurrency", "key_concurrency", "rate", "queued", "running", "waiting"],
            "properties": {
                "name": { "type": "string" },
                "paused": { "type": "boolean", "description": "nobody claims from a paused queue; its running tasks go on" },
                "concurrency": { "type": ["integer", "null"] },
                "key_concurrency": { "type": ["integer", "null"] },
                "rate": { "oneOf": [schema_ref("Rate"), { "type": "null" }] },
                "queued": { "type": "integer" },
                "running": { "type": "integer" },
                "waiting": { "type": "integer" }
            }
        },
        "Task": {
            "type": "object",
            "required": task_fields,
            "properties": {
                "status": { "type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled"] },
                "attempts": { "type": "integer" },
                "result": { "description": "the handler's output once completed" },
                "concurrency_key": { "type": ["string", "null"], "description": "held to its queue's key_concurrency with the other tasks of this key" }
            }
        },
        "BatchResult": {
            "type": "object",
            "required": ["status", "count", "task_ids"],
            "properties": {
                "status": { "type": "string" },
                "count": { "type": "integer" },
                "task_ids": { "type": "array", "items": { "type": "string" } }
            }
        },
        "Registration": { "type": "object", "required": ["worker_id", "heartbeat_interval_s", "lease_s"] },
        "Worker": { "type": "object", "required": ["worker_id", "name", "types", "queues", "max_slots", "running", "last_heartbeat_at", "state"] },
        "WorkerBeat": { "type": "object", "required": ["signal", "cancel"] },
        "Claim": { "type": "object", "required": ["tasks"] },
        "TaskBeat": { "type": "object", "required": ["lease_expires_at", "cancel_requested"] },
        "StoredArtifact": { "type": "object", "required": ["task_id", "name", "type", "uri"] },
        "Repo": cwom_schema(&["name", "slug", "source", "created_at", "updated_at"]),
        "Issue": cwom_schema(&["repo", "title", "type", "priority", "status", "created_at", "updated_at"]),
        "ContextPacket": cwom_schema(&["for_issue", "version", "summary", "created_at", "updated_at"]),
        "ConstraintSnapshot": cwom_schema(&["scope", "owner", "captured_at"]),
        "DoctrineRef": cwom_schema(&["namespace", "name", "version", "type", "statement", "created_at", "updated_at"]),
        "Run": cwom_schema(&["for_issue", "repo", "status", "mode", "executor", "created_at", "updated_at"]),
        "Artifact": cwom_schema(&["produced_by", "for_issue", "type", "title", "uri", "created_at", "updated_at"]),
    })
}

/// `/schedules`: cron schedules that enqueue a task on every tick (api/schedules.rs).
fn schedule_paths() -> Value {
    let name = json!({ "name": "name", "in": "path", "required": true, "description": "Schedule name ([A-Za-z0-9_.-]{1,128})", "schema": { "type": "string" } });
    let example = json!({
        "name": "nightly-deps", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
        "task": { "type": "echo", "payload": { "job": "bump dependencies" } },
        "catch_up": "latest", "catch_up_window_s": 3600, "overlap": "skip"
    });
    let writes = |ok: Value| {
        let mut r = json!({
            "401": error("Missing or wrong API key"),
            "403": error("The read-only key (`read_only_key`), a session request without its CSRF token, or another site's Origin"),
            "404": error("No such schedule (`schedule_not_found`)"),
        });
        if let (Value::Object(r), Value::Object(ok)) = (&mut r, ok) {
            r.extend(ok);
        }
        r
    };
    let action = |summary: &str, ok: Value| json!({ "post": { "summary": summary, "parameters": [name.clone()], "responses": writes(ok) } });
    let body_errors = json!({
        "400": error("Malformed JSON"),
        "413": error("Body larger than JCT_MAX_BODY_BYTES"),
        "415": error("Not application/json"),
        "422": error("`invalid_schedule` naming the `field` (bad cron, unknown time zone, task and workflow both or neither, workflows not available yet, an invalid task)"),
    });
    let mut create_responses = json!({
        "201": ok_json("The schedule, with next_fire_at and upcoming (the next 5 fire times)", schema_ref("Schedule")),
        "401": error("Missing or wrong API key"),
        "403": error("The read-only key, a session request without its CSRF token, or another site's Origin"),
        "409": error("A schedule of that name exists (`schedule_exists`)"),
    });
    let mut put_responses = writes(
        json!({ "200": ok_json("The schedule as replaced; its new pattern takes effect from its next tick", schema_ref("Schedule")) }),
    );
    for r in [&mut create_responses, &mut put_responses] {
        if let (Value::Object(r), Value::Object(e)) = (r, body_errors.clone()) {
            r.extend(e);
        }
    }
    json!({
        "/schedules": {
            "post": {
                "summary": "Create a schedule: a cron pattern (5 fields, 6 with seconds, @hourly/@daily/@weekly/@monthly) in an IANA time zone, the task each tick enqueues, catch-up and overlap policies",
                "requestBody": { "content": { "application/json": { "example": example.clone(), "schema": schema_ref("ScheduleBody") } } },
                "responses": create_responses,
            },
            "get": {
                "summary": "Every schedule, by name",
                "responses": {
                    "200": ok_json("The schedules", json!({ "type": "object", "required": ["schedules"], "properties": { "schedules": { "type": "array", "items": schema_ref("Schedule") } } })),
                    "401": error("Missing or wrong API key"),
                }
            },
        },
        "/schedules/{name}": {
            "get": {
                "summary": "One schedule, with last_fired_at and last_task_id",
                "parameters": [name.clone()],
                "responses": {
                    "200": ok_json("The schedule", schema_ref("Schedule")),
                    "401": error("Missing or wrong API key"),
                    "404": error("No such schedule (`schedule_not_found`)"),
                }
            },
            "put": {
                "summary": "Replace a schedule (same body as POST; the name may be left out)",
                "parameters": [name.clone()],
                "requestBody": { "content": { "application/json": { "example": example, "schema": schema_ref("ScheduleBody") } } },
                "responses": put_responses,
            },
            "delete": {
                "summary": "Delete a schedule; the tasks it fired stay",
                "parameters": [name.clone()],
                "responses": writes(json!({ "200": ok_json("Deleted", json!({ "type": "object", "required": ["name", "deleted"] })) })),
            },
        },
        "/schedules/{name}/pause": action("Pause: ticks do not fire until resumed", json!({ "200": ok_json("The schedule", schema_ref("Schedule")) })),
        "/schedules/{name}/resume": action("Resume: fires from the next tick on (ticks of the pause are not caught up)", json!({ "200": ok_json("The schedule", schema_ref("Schedule")) })),
        "/schedules/{name}/trigger": action("Fire once now, with a key of its own (no tick is used up; the overlap policy does not apply)", json!({ "201": ok_json("The task fired", json!({ "type": "object", "required": ["name", "task_id", "fired"] })) })),
    })
}

/// `/queues`: each queue's pause and limits (api/queues.rs). A queue needs no row: any
/// name a task may use answers, with its defaults until a setting is made.
fn queue_paths() -> Value {
    let name = json!({ "name": "name", "in": "path", "required": true, "description": "Queue name (1 to 128 characters, no NUL)", "schema": { "type": "string" } });
    let queue = || ok_json("The queue, as it is now", schema_ref("Queue"));
    let writes = |ok: Value, extra: Value| {
        let mut r = json!({
            "200": ok,
            "401": error("Missing or wrong API key"),
            "403": error("The read-only key (`read_only_key`), a session request without its CSRF token (`csrf_rejected`), or another site's Origin (`cross_origin`)"),
            "422": error("`invalid_queue` naming the `field` (`name` for a bad queue name)"),
            "503": error("Store unavailable"),
        });
        if let (Value::Object(r), Value::Object(e)) = (&mut r, extra) {
            r.extend(e);
        }
        r
    };
    let action = |summary: &str| json!({ "post": { "summary": summary, "parameters": [name.clone()], "responses": writes(queue(), json!({})) } });
    json!({
        "/queues": { "get": {
            "summary": "Every queue with a setting or a live task, by name: pause, limits, and its queued, running and waiting tasks",
            "responses": {
                "200": ok_json("The queues", json!({ "type": "object", "required": ["queues"], "properties": { "queues": { "type": "array", "items": schema_ref("Queue") } } })),
                "401": error("Missing or wrong API key"),
                "503": error("Store unavailable"),
            }
        }},
        "/queues/{name}": {
            "get": {
                "summary": "One queue (the defaults and zero counts for a queue nobody has used)",
                "parameters": [name.clone()],
                "responses": {
                    "200": queue(),
                    "401": error("Missing or wrong API key"),
                    "422": error("`invalid_queue`: a bad queue name (`field` is `name`)"),
                    "503": error("Store unavailable"),
                }
            },
            "put": {
                "summary": "Change the queue's limits, enforced in every claim across the fleet from the next one on; a field left out is kept, null removes it",
                "parameters": [name.clone()],
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": schema_ref("QueueChange"),
                    "example": { "concurrency": 4, "key_concurrency": 1, "rate": { "limit": 10, "per_s": 60 } }
                }}},
                "responses": writes(queue(), json!({
                    "400": error("Malformed JSON"),
                    "413": error("Body larger than JCT_MAX_BODY_BYTES"),
                    "415": error("Not application/json"),
                    "422": error("`invalid_queue` naming the `field`: a limit outside 1..1000000, a rate without limit (1..100000) or per_s (above 0, at most 86400), an unknown field, or a bad queue name"),
                })),
            }
        },
        "/queues/{name}/pause": action("Pause: no daemon or worker claims from the queue until it is resumed; its running tasks go on"),
        "/queues/{name}/resume": action("Resume: the queue's tasks are claimed again at once"),
    })
}

/// `/mcp`: MCP's streamable HTTP transport, stateless (api/mcp.rs). Its bodies are JSON-RPC.
fn mcp_paths() -> Value {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "client", "version": "1" } }
    });
    json!({ "/mcp": { "post": {
        "summary": "One MCP JSON-RPC exchange (initialize, tools/list, tools/call with the jct_* tools); \
                    send Accept: application/json, text/event-stream",
        "requestBody": { "content": { "application/json": { "example": initialize } } },
        "responses": {
            "200": ok_json("The JSON-RPC answer", json!({ "type": "object", "required": ["jsonrpc"] })),
            "401": error("Missing or wrong API key"),
            "406": { "description": "Accept does not name both application/json and text/event-stream" },
        }
    }}})
}

pub fn document() -> Value {
    let mut paths = task_paths();
    for more in [worker_paths(), cwom_paths(), schedule_paths(), queue_paths(), mcp_paths()] {
        if let (Value::Object(p), Value::Object(m)) = (&mut paths, more) {
            p.extend(m);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "DevOps Control Tower",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Task intake and execution. Every error body is {\"error\": code, \"message\": sentence}."
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "only when JCT_API_KEY is set" } }
        },
        "paths": paths,
    })
}
