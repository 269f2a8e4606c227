//! DevOps Control Tower (JCT): the intake and execution spine of an automated development
//! shop. Every piece of work enters as a task, a worker runs it, and a trace folder records
//! what went in, what happened and what came out.
//!
//! # Layout
//!
//! Files follow the data path, from a request to a trace folder:
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the only reader of the environment; typed [`config::Config`] |
//! | [`task`] | ids, states, the validated [`task::NewTask`], the stored [`task::Task`] |
//! | [`api`] | warp routes, request handlers, the one error → HTTP mapping, the OpenAPI document (`api/openapi.rs`, checked against the routes by `tests/openapi.rs`) |
//! | [`store`] | the [`store::Store`] trait of domain operations; `sqlite` and `postgres` own their SQL and migrations (`migrations/<dialect>/`); [`store::Backend`] is the open database the layers share |
//! | [`cwom`] | the canonical work object model (Repo … Artifact): `types`, `requests` (validation), a [`cwom::store::CwomStore`] on both databases (`migrations/<dialect>/V2__cwom.sql`), routes under `/cwom`; [`cwom::Cwom`] is the service the API and the worker call |
//! | [`notifier`] | the PostgreSQL LISTEN connection that turns NOTIFY into wake-ups, and reconnects |
//! | [`worker`] | `producer` (when and how much to claim), `executor` (a slot's tasks, one after another: trace, handler, timeout, panic, retry policy), `completer` (batched, fenced writes of attempt ends), `rescuer` (expired leases, heartbeats), `bridge` (a linked task's attempts as CWOM Runs and trace Artifacts) |
//! | [`handlers`] | the [`handlers::Handler`] trait, the registry, the built-ins `echo`, `sleep`, `fail` |
//! | [`trace`] | trace folders and the per-task `log.txt` tracing layer |
//! | [`logging`] | the daemon's stderr log and the task-log layer, installed once |
//! | [`metrics`] | counters, gauges and histograms behind `GET /metrics` |
//! | [`shutdown`] | the soft (stop claiming) and hard (interrupt) signals |
//! | [`daemon`] | builds the parts for a role (`serve`, `api`, `worker`) and wires them; does none of their work |
//!
//! `main.rs` parses the command line, reads the config, installs logging and calls
//! [`daemon::start`].
//!
//! # Data flow
//!
//! ```text
//! POST /tasks/enqueue ─▶ api ─▶ store.enqueue ─▶ tasks ─(PostgreSQL: trigger NOTIFY)─▶ notifier ─┐
//! INSERT INTO tasks … (another service) ──────────▶ tasks ─(trigger NOTIFY)──────────────────────┤
//! api (same process) ── wake ────────────────────────────────────────────────────────────────────┤
//!                                                                            poll timer ─▶ producer
//! producer ─ store.claim(free slots + prefetch, lease) ─▶ buffer ─▶ executor (trace folder + handler) ─▶ completer
//! completer ─ store.finish (batched, fenced by lease and attempt) ─▶ tasks
//! rescuer ─ store.rescue_expired / store.heartbeat ─▶ tasks
//! ```
//!
//! # Where to make a change
//!
//! - A new task type: implement [`handlers::Handler`], register it in
//!   [`handlers::Registry::builtin`].
//! - A new column or store operation: a migration in both `migrations/sqlite/` and
//!   `migrations/postgres/`, the method on [`store::Store`], both implementations, and a
//!   case in `tests/store_conformance.rs` (it runs against both stores).
//! - A new route: a filter in [`api::routes`], its handler in `api/handlers.rs`, any new
//!   error as an [`api::ApiError`] variant (status and code are mapped there), and its
//!   entry in `api/openapi.rs` (`tests/openapi.rs` then calls it and checks the answer).
//! - A new setting: a field on [`config::Config`] and its parsing in
//!   [`config::Config::from_lookup`]; nothing else reads the environment.
//! - Retry policy: `worker/executor.rs` ([`worker::executor::retry_delay`]).

pub mod api;
pub mod config;
pub mod cwom;
pub mod daemon;
pub mod handlers;
pub mod logging;
pub mod metrics;
pub mod notifier;
pub mod shutdown;
pub mod store;
pub mod task;
pub mod trace;
pub mod worker;
