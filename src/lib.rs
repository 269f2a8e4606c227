//! DevOps Control Tower (JCT): the intake and execution spine of an automated development
//! shop. Every piece of work enters as a task, a worker runs it, and a trace folder records
//! what went in, what happened and what came out.
//!
//! # Layout
//!
//! Dependencies point one way: `daemon` → `api` → services (`intake`, `control`, `remote`,
//! `maintenance`, `scheduling`, `queues`, `wakeups`, `attempt`, `worker`, `handlers`, `http_worker`,
//! `cwom_service`) → `store` (the traits) → its drivers, with the models (`task`, `lease`,
//! `registration`, `cwom`, `schedule`, `queue`, `workflow`, `approval`, `storable`, `failure`), `fields`, `url`, `config`, `tunables`, `trace`,
//! `metrics`, `logging` and `shutdown` below all of them. `client` and `mcp`, the programs
//! that talk to a JCT server over HTTP only, sit in that lowest layer too, so they cannot
//! reach a store. A module's layer is its top-level module's; `tests/integration/module_graph.rs` fails
//! on an import cycle or an upward import.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the only reader of the environment; typed [`config::Config`] |
//! | [`tunables`] | every behaviour-shaping constant, with why it has its value |
//! | [`task`] | ids, states, the validated [`task::NewTask`], the stored [`task::Task`], the [`task::RetryPolicy`] |
//! | [`workflow`] | workflows as data: [`workflow::WorkflowId`], [`workflow::StepKey`], [`workflow::OnParentFailure`], the validated [`workflow::NewWorkflow`] (graph checks: repeated keys, unknown dependencies, cycles, the step limit; [`workflow::InvalidWorkflow`] names the steps), a running step's spawn checked by the same checker against the stored workflow ([`workflow::StoredGraph::plan`]: what each driver writes), [`workflow::WorkflowStatus`] and its rule, the views of the API, the `parents` a claimed step carries, and `$from` references ([`workflow::references`], [`workflow::resolve_references`]; resolved at the claim by [`store::tasks::resolve_claimed`]) |
//! | [`approval`] | approvals as data: the step type [`approval::TYPE`], its payload ([`approval::ApprovalPayload`]: `prompt`, `expires_after_s`; checked with the workflow's graph), [`approval::Decision`], the body of `POST /tasks/{id}/decision` ([`approval::DecisionRequest`]) and the [`approval::DecisionRecord`] a decided step's result holds; `approval_expired` and `approval_rejected` |
//! | [`schedule`] | schedules as data: the cron pattern (croner) in an IANA zone (chrono-tz), next fires and `upcoming` with the DST rules, the catch-up decision ([`schedule::Timing::due`]), [`schedule::CatchUp`], [`schedule::Overlap`], the validated [`schedule::ScheduleSpec`] (errors name the field), what a fire starts ([`schedule::Target`]: a task or a workflow template, made into [`schedule::Work`] per fire) and the schedules file format |
//! | [`queue`] | queue controls as data: [`queue::QueueSettings`] (pause, `concurrency`, `key_concurrency`, [`queue::Rate`]), the validated [`queue::SettingsChange`] of a `PUT` (absent keeps, `null` removes; errors name the field), [`queue::QueueView`] |
//! | [`lease`] | the one fence of an attempt: [`lease::LeaseToken`] (holder and attempt) and [`lease::Held`] (a task's attempt) |
//! | [`registration`] | remote workers as data: the registration and its stored record |
//! | [`failure`] | [`failure::StoreError`], a database failure as data (below the store, so models can carry it) |
//! | [`storable`] | what both stores can hold (no NUL in any string or key, times in years 0001–9999 to the microsecond, printable header values): asked by every intake before anything is written; errors name the field or a JSON pointer |
//! | [`fields`] | the one parser of request bodies: JSON into a request type, naming the failing field by its path (`serde_path_to_error`) |
//! | [`url`] | percent-encoding of URL parts (the dashboard's links, the MCP server's request paths) and the decoder of path segments |
//! | [`store`] | five traits of domain operations on tasks ([`store::IntakeStore`], [`store::AttemptStore`], [`store::OperatorStore`], [`store::TaskReads`], [`store::MaintenanceStore`]; [`store::TaskStore`] is all five), [`store::CwomStore`], [`store::WorkerStore`], [`store::ScheduleStore`] (schedules and the one transaction that fires a tick exactly once: `schedule_fires` key, overlap policy, the task or the whole workflow), [`store::QueueStore`] (queue settings and counts; the limits themselves are enforced inside [`store::AttemptStore::claim`] by each driver's `queues.rs`: the fast claim leaves controlled queues out, a limited queue is claimed from under its row's lock), [`store::Listener`], and their errors (`store/error.rs`); a driver per database (`store/sqlite/`, `store/postgres/`, each with `tasks.rs`, `workers.rs`, `cwom.rs`, and on PostgreSQL `intake.rs` and `ends.rs` coalescing concurrent enqueues and ends, `listener.rs` the LISTEN connection) owning all of its SQL and its migrations (`migrations/<dialect>/`); [`store::Backend`] is the open database |
//! | [`cwom`] | the canonical work object model (Repo … Artifact) as data: `types`, `requests` (validation), `error` |
//! | [`cwom_service`] | [`cwom_service::Cwom`], the CWOM service the API and the attempt lifecycle call |
//! | [`intake`] | the one way work enters: [`intake::Intake`] checks types ([`intake::TaskTypes`]), admission, CWOM links and batch keys, writes, wakes and counts; [`intake::IntakeError`] its refusals |
//! | [`scheduling`] | [`scheduling::Schedules`], the schedules service: create, replace, pause, resume, delete, trigger, the schedules file; every fire through [`intake::Intake::fire`] |
//! | [`queues`] | [`queues::Queues`], the queue controls service: list, get, change limits, pause, resume; wakes this process (PostgreSQL also notifies the fleet in the change's transaction) |
//! | [`control`] | operator actions on tasks that exist: cancel and retry, one or in bulk chunks, a workflow's cancel and retry, and the decision on an approval step (the store's fenced UPDATE, then its trace folder and Run through [`attempt::Lifecycle::approval_ended`]) |
//! | [`wakeups`] | [`wakeups::Fanout`], the one wake-up fan-out: fed by the listener, the intake and every freeing state change; read by the producer and waiting long-polls; cancels to the in-process worker |
//! | [`maintenance`] | the periodic services (`rescuer`: expired leases of every holder; `expiry`: approval steps past their `expires_after_s`) with one lifecycle, under a lease-based leadership (`leader`: the `leaders` table); and `ticker`, the schedule ticker, on every daemon (sleeps until the next tick of any schedule) |
//! | [`attempt`] | the one attempt lifecycle: begin (trace folder, CWOM Run), resume (an attempt that began in another process), decide the outcome (retry policy), end (`output.json`, Run end) and the fenced store write it asks for; [`attempt::AttemptSink`] stores what an attempt produces (log lines, artifacts) for local and remote attempts alike |
//! | [`remote`] | the HTTP worker protocol's service: registration, long-poll claims, remote attempts through the same lifecycle, on whichever daemon their calls reach, and their spawns (steps added to the attempt's workflow, fenced by its lease; with `complete`, in the end's transaction) |
//! | [`worker`] | the in-process worker: `producer` (when and how much to claim), `buffer` (claimed tasks waiting for a slot), `executor` (a slot's tasks through the lifecycle), `completer` (batched, fenced writes of attempt ends), `heartbeat` (renews the leases of ours) |
//! | [`handlers`] | the task [`handlers::Handler`] trait, the registry (with each handler's intake check, [`handlers::Handler::admit`]), where output goes ([`handlers::AttemptOutput`]), and [`handlers::run_bounded`], the one place a handler is held to its timeout and stop grace (the executor and the HTTP worker both call it); the built-ins `echo`, `sleep`, `fail`; `process` (a program in its own group, clean environment, streamed output, a stop that leaves nothing), `sandbox` (`JCT_SANDBOX`: the bubblewrap command line, the start-up check), `limits` (`JCT_TASK_*`: rlimits, a cgroup per program where delegated, the limit a failed run hit), `tree` (every process a program started, setsid orphans included), `command` and `agent` (a coding agent in a git worktree, its patch the result) |
//! | [`http_worker`] | `worker --server URL`: the handlers run for a JCT server over the HTTP worker protocol, through [`client`], with no database |
//! | [`agent_profiles`] | how to run a coding agent CLI headless: the built-in profiles and the TOML file format |
//! | [`trace`] | trace folders and the per-task `log.txt` tracing layer |
//! | [`api`] | all warp code: one file per resource (`health`, `tasks`, `workflows`, `approvals`: `POST /tasks/{id}/decision`, `schedules`, `queues`, `workers`, `cwom`, `mcp`: the MCP tools over streamable HTTP), `access` (API keys, read-only key, dashboard sessions, CSRF and `Origin` checks), the body reader, the one error → HTTP mapping, the OpenAPI document, and `ui/`, the dashboard (server-rendered pages calling the JSON API from one built-in script) |
//! | [`client`] | a client of the HTTP API (key, paths, the error shape) for the programs that never touch a database: the remote worker and the MCP server |
//! | [`mcp`] | `devops-control-tower mcp`: an MCP server over stdio (rmcp) for coding agents; `tools` (the catalog; input schemas derived from `arguments`, one serde + schemars type per tool), `calls` (each tool's HTTP calls, every failure a tool error), `agent` (its worker registrations, heartbeats, log numbering) |
//! | [`logging`] | the daemon's stderr log and the task-log layer, installed once |
//! | [`metrics`] | counters, gauges and histograms behind `GET /metrics` |
//! | [`shutdown`] | the soft (stop claiming) and hard (interrupt) signals |
//! | [`daemon`] | builds the parts for a role (`serve`, `api`, `worker`) and wires them; does none of their work |
//!
//! `main.rs` parses the command line, reads the config, installs logging and calls
//! [`daemon::start`] (or, for `mcp`, [`mcp::serve_stdio`]).
//!
//! # Data flow
//!
//! ```text
//! POST /tasks/enqueue ─▶ api/tasks ─▶ intake::Intake ─▶ IntakeStore::enqueue ─▶ tasks ─(trigger NOTIFY)─▶ Listener ─┐
//! INSERT INTO tasks … (another service) ─────────────────────────────────────▶ tasks ─(trigger NOTIFY)──────────────┤
//! UPDATE … status = 'queued' (retry, release, rescue, deregister, anyone's SQL) ─▶ tasks ─(trigger NOTIFY)──────────┤
//! intake, control, completer, rescuer, remote (same process) ────────────────────────────────────────────────────┤
//!                                                                        wakeups::Fanout ─▶ producer, long-polls
//! producer ─ AttemptStore::claim(free slots + prefetch, lease) ─▶ buffer ─▶ executor
//! executor ─ attempt::Lifecycle::begin (trace folder, CWOM Run) ─▶ handler ─▶ Lifecycle::end ─▶ completer
//!            handler output (program lines, artifacts) ─ AttemptOutput ─▶ AttemptSink ─▶ log.txt, artifacts/, CWOM
//! completer ─ AttemptStore::finish / release (batched, fenced by lease::Held) ─▶ tasks
//! worker heartbeat ─ AttemptStore::renew ─▶ tasks
//! maintenance (leader only) ─ rescuer ─ MaintenanceStore::rescue_expired ─▶ tasks; Lifecycle::lease_expired (Run)
//! maintenance (leader only) ─ expiry ─ WorkflowStore::expire_approvals ─▶ tasks (release trigger); Lifecycle::approval_ended
//! POST /tasks/{id}/decision ─▶ api/approvals ─▶ control::Control::decide ─ WorkflowStore::decide (fenced UPDATE,
//!            release trigger) ─▶ tasks; Lifecycle::approval_ended (trace folder, CWOM Run)
//! maintenance ticker (every daemon) ─ Schedules::fire ─▶ intake::Intake::fire ─▶ ScheduleStore::fire
//!            (schedule_fires key + overlap + INSERT the task or workflow, one transaction) ─(trigger NOTIFY)─▶ Listener
//! POST /schedules… ─▶ api/schedules ─▶ scheduling::Schedules ─▶ ScheduleStore (wakes this daemon's ticker)
//! PUT /queues/{name}, pause, resume ─▶ api/queues ─▶ queues::Queues ─▶ QueueStore ─(NOTIFY)─▶ every claimer
//! end of a task claimed under a limit ─(tasks_notify_slot_freed trigger; SQLite: in process)─▶ wakeups::Fanout
//!
//! HTTP worker ─ POST /tasks/claim ─▶ api/workers ─▶ remote::Remote::claim ─ AttemptStore::claim (types, queues)
//!             ↳ waits on wakeups::Fanout ─▶ Lifecycle::begin ─▶ lease_token
//! HTTP worker ─ log, artifacts, complete/fail/release (lease_token) ─▶ Remote ─▶ fenced store write
//!             ─▶ Lifecycle::close (trace folder, CWOM Run; Lifecycle::resume first when claimed elsewhere)
//! HTTP worker ─ spawn, complete with spawn (lease_token) ─▶ Intake::admit_steps ─▶ Remote
//!             ─▶ WorkflowStore::spawn_steps (one transaction: StoredGraph::plan, steps, edges, the end)
//! worker --server ─ http_worker ─ client ─▶ the same routes, running handlers as the executor does
//!
//! agent ─ MCP (stdio) ─▶ mcp ─ client (HTTP, the API key) ─▶ the routes above, as an operator or an HTTP worker
//! agent ─ POST /mcp ─▶ api/mcp (rmcp streamable HTTP) ─▶ mcp ─ client ─▶ this same API
//! ```
//!
//! # Where to make a change
//!
//! - A new task type: implement [`handlers::Handler`] (and `admit` if some payloads must be
//!   refused at intake), register it in [`handlers::Registry::from_config`]. A handler that
//!   runs a program goes through `handlers::process`, never `std::process` directly.
//! - A new column of `tasks`: a migration in both `migrations/sqlite/` and
//!   `migrations/postgres/` (`tests/integration/schema_parity.rs` compares them), the field on
//!   [`task::Task`], and the column in each driver's codec (`task_columns!` in
//!   `store/<dialect>/tasks.rs`: one list per dialect for inserting, copying and reading).
//! - A new store operation: the method on the trait of its concern (`store/tasks.rs`, or
//!   [`store::CwomStore`]), a params struct when it takes more than two values, its own
//!   error type in `store/error.rs` if it can fail for a reason of its own, both drivers,
//!   and a case in `tests/integration/store_conformance.rs` (it runs against both).
//! - A new way work enters (a workflow step): through [`intake::Intake`] (schedule ticks
//!   do: [`intake::Intake::fire`]). Schedule rules (patterns, DST, catch-up): [`schedule`];
//!   the fire transaction: `store/<dialect>/schedules.rs`; the ticker: `maintenance/ticker.rs`.
//!   A new periodic job: a [`maintenance::Service`] registered in `daemon::start_with`.
//!   A new path that makes a task claimable: an UPDATE to `queued` wakes the fleet by the
//!   trigger (`migrations/postgres/V8`); call [`wakeups::Fanout::work_available`] too.
//! - A dashboard view: a function in `api/ui/pages.rs` (the workflow views in
//!   `api/ui/workflows.rs`) and its path in `api/ui/mod.rs`;
//!   its markup in maud's `html!`, which escapes every value it interpolates (no
//!   `PreEscaped` for anything a user sent); actions are the page script
//!   (`api/ui/app.js`) calling the JSON API, never a route of the dashboard's own.
//! - A new route: a file per resource in `api/` (or a filter in an existing one), joined in
//!   [`api::routes`]; any new error as an [`api::ApiError`] variant or a `From` impl in
//!   `api/error.rs`; its operation in that file's `describe`, naming the types it reads and
//!   answers (they derive `schemars::JsonSchema`; `api/openapi.rs` turns them into the
//!   document, and `tests/integration/openapi.rs` calls every operation and checks the answer).
//! - A new setting: a field on [`config::Config`] parsed in
//!   [`config::Config::from_lookup`] (nothing else reads the environment), its default in
//!   [`tunables`], and a row in the README's configuration table.
//! - What a value may hold to be stored (NUL, the time range, header values): [`storable`];
//!   every intake asks it before anything is written (a new route reads its body with
//!   `api::body::read_json` into its type, or `read_json_value`; both do). A row the database still refuses is a
//!   `StoreErrorKind::Refused` error, 422 `rejected_by_store`.
//! - Retry policy (also spacing the re-runs of tasks whose lease expired), outcome rules,
//!   trace ends: [`attempt`] and [`task::RetryPolicy`]. Claiming and prefetch:
//!   `worker/producer.rs`. The worker protocol: `api/workers.rs` (HTTP) and [`remote`]
//!   (service). Constants: [`tunables`].
//! - Attempts held in memory: three maps, one per side of an attempt, each keyed by task id
//!   but holding different things. `worker::InFlight` is the daemon's own executor: the
//!   fence (attempt number), the token that stops the handler and why, the slot permit.
//!   `remote::Remote`'s open attempts are the server's side of a remote worker's claim: the
//!   lease token and the trace/CWOM sink it writes for the worker, and the last log `seq`;
//!   nothing runs there. `http_worker`'s map is `worker --server`'s: the token that stops a
//!   handler running for a distant server. A change to one of them is not a change to the others.
//! - A new MCP tool: a [`mcp::ToolName`] variant with its name, effect and description in
//!   `mcp/tools.rs`, its arguments as a type in `mcp/arguments.rs` (the schema is derived
//!   from it), what it calls in `mcp/calls.rs`, and its case in `tests/integration/mcp.rs`;
//!   it calls routes of the HTTP API, never a store.

pub mod agent_profiles;
pub mod api;
pub mod approval;
pub mod attempt;
pub mod client;
pub mod config;
pub mod control;
pub mod cwom;
pub mod cwom_service;
pub mod daemon;
pub mod failure;
pub mod fields;
pub mod handlers;
pub mod http_worker;
pub mod intake;
pub mod lease;
pub mod logging;
pub mod maintenance;
pub mod mcp;
pub mod metrics;
pub mod queue;
pub mod queues;
pub mod registration;
pub mod remote;
pub mod schedule;
pub mod scheduling;
pub mod shutdown;
pub mod storable;
pub mod store;
pub mod task;
pub mod trace;
pub mod tunables;
pub mod url;
pub mod wakeups;
pub mod worker;
pub mod workflow;
