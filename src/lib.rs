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
//! | [`api`] | warp routes, request handlers, the one error → HTTP mapping |
//! | [`store`] | the [`store::Store`] trait of domain operations; `sqlite` and `postgres` own their SQL and migrations (`migrations/<dialect>/`); [`store::Backend`] is the open database the layers share |
//! | [`cwom`] | the canonical work object model (Repo … Artifact): types, storage on both databases, routes under `/cwom` |
//! | [`notifier`] | the PostgreSQL LISTEN connection that turns NOTIFY into wake-ups, and reconnects |
//! | [`worker`] | `producer` (when and how much to claim), `executor` (one task: trace, handler, timeout, panic, retry policy), `completer` (batched, fenced writes of attempt ends), `rescuer` (expired leases, heartbeats) |
//! | [`handlers`] | the [`handlers::Handler`] trait, the registry, the built-ins `echo`, `sleep`, `fail` |
//! | [`trace`] | trace folders and the per-task `log.txt` tracing layer |
//! | [`logging`] | the daemon's stderr log and the task-log layer, installed once |
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
//! producer ─ store.claim(free slots, lease) ─▶ executor (trace folder + handler) ─▶ completer
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
//!   error as an [`api::ApiError`] variant (status and code are mapped there).
//! - A new setting: a field on [`config::Config`] and its parsing in
//!   [`config::Config::from_lookup`]; nothing else reads the environment.
//! - Retry policy: `worker/executor.rs` ([`worker::executor::retry_delay`]).

pub mod api;
pub mod config;
pub mod cwom;
pub mod daemon;
pub mod handlers;
pub mod logging;
pub mod notifier;
pub mod shutdown;
pub mod store;
pub mod task;
pub mod trace;
pub mod worker;
