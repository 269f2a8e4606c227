//! The integration tests, one binary: each module is one concern's suite, run against real
//! parts (a PostgreSQL cluster `make test` starts, SQLite files, daemon processes, sockets,
//! signals, git, a browser). One binary links the crate once where one per file linked it
//! thirty times. Run one suite with `cargo test --test integration queues::`.
//!
//! Binaries of their own, beside this one: `tests/postgres_restart.rs` and
//! `tests/shutdown_unreachable.rs` stop the PostgreSQL server every other test shares;
//! `tests/wakeups.rs` and `tests/long_poll_latency.rs` measure latencies in milliseconds, with
//! no fleet running beside them; `tests/fuzz_bodies.rs` is what `make fuzz` runs alone.

#[path = "../support/browser.rs"]
mod browser;
#[path = "../support/strategies.rs"]
mod strategies;
#[path = "../support/mod.rs"]
mod support;

mod approvals;
mod change_pipeline;
mod cwom;
mod cwom_bridge;
mod daemon_process;
mod delivery;
mod executors;
mod http_api;
mod intake_refusals;
mod leadership;
mod mcp;
mod module_graph;
mod openapi;
mod packaging;
mod poison_tasks;
mod postgres_cancel;
mod postgres_dispatch;
mod properties;
mod python_worker;
mod queues;
mod readme;
mod remote_traces;
mod sandbox;
mod schedules;
mod schema_parity;
mod spawn;
mod sqlite_migrations;
mod storable;
mod store_conformance;
mod ui_browser;
mod ui_http;
mod worker_protocol;
mod workflow_stress;
mod workflows;
