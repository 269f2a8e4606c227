//! Tunables: every constant that shapes how the daemon behaves, in one place, each with why
//! it has its value.
//!
//! Those an operator may need to change are [`crate::config::Config`] settings (their
//! defaults are here, named `DEFAULT_…`); the rest are fixed properties of the design.
//! Measurements behind the values are in the README's benchmark section.

use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Retries (defaults of `JCT_RETRY_BASE_MS` and `JCT_RETRY_MAX_SECONDS`).

/// First retry delay; each further attempt doubles it up to the cap. One second lets a
/// flaky dependency recover without making a transient failure cost much.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay: ten minutes keeps a task that fails for hours from waiting hours
/// after the cause is fixed.
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(600);
/// Retry delays are scaled by a random factor in [`RETRY_JITTER_MIN`, 1], so tasks that
/// failed together do not retry in lockstep.
pub const RETRY_JITTER_MIN: f64 = 0.75;

// ---------------------------------------------------------------------------------------
// Database connections.

/// Connections of the durable PostgreSQL pool beyond the worker slots (default of
/// `JCT_DB_POOL_SIZE` is `max(JCT_WORKERS, 8) + DB_POOL_SPARE`): room for the API's
/// requests and the intake lanes next to the worker.
pub const DB_POOL_SPARE: usize = 4;
/// The smallest durable pool: the intake needs one connection, the API another.
pub const DB_POOL_MIN: usize = 2;
/// PostgreSQL connections for the worker's bookkeeping (heartbeat, finish, release,
/// rescue): the completer writes one batch at a time, so a few cover it with room for the
/// heartbeat and rescuer beside it.
pub const WORKER_POOL_SIZE: usize = 4;
/// PostgreSQL connections for claims: the producer has one claim in flight at a time; the
/// second covers a claim that outlives its connection's recycling.
pub const CLAIM_POOL_SIZE: usize = 2;
/// From this many rows a batch statement against `tasks` (finish, release, the claim's read
/// of parents) is planned for its batch instead of run as a prepared statement
/// (`store::postgres::tasks::query_batch`): planning costs a few tenths of a millisecond,
/// which a small batch would feel; a stale generic plan costs a large batch time quadratic
/// in its size.
pub const PLANNED_BATCH: usize = 64;
/// How long a caller waits for a pooled connection before the store counts as unavailable.
pub const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long opening a connection may take: a database that does not answer within five
/// seconds is treated as down (and retried) rather than waited on.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits for another process's write lock before giving up: long enough
/// for any single statement of ours or of a service inserting rows by hand.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Start-up waits for a database that is still starting (a container that starts before
/// its database must not crash-loop): first retry after this, doubling up to the cap.
pub const STARTUP_RETRY_FIRST: Duration = Duration::from_millis(250);
pub const STARTUP_RETRY_CAP: Duration = Duration::from_secs(5);
/// Two processes starting on a fresh SQLite file race to create the migration history
/// table; the loser sees "already exists" and tries again this many times, this far apart.
pub const SQLITE_MIGRATE_TRIES: usize = 5;
pub const SQLITE_MIGRATE_RETRY: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// PostgreSQL intake: concurrent enqueues folded into one INSERT.

/// Most enqueues folded into one INSERT: a statement large enough that the per-commit cost
/// (the WAL flush, and the notify lock held until it) is shared widely, small enough that
/// one statement stays a few milliseconds.
pub const INTAKE_MAX_ROWS: usize = 512;
/// Inserts in flight at once: while one waits for its commit flush, the next gathers the
/// requests that arrive meanwhile.
pub const INTAKE_LANES: usize = 4;
/// Requests that may wait for a lane; past this, enqueue callers wait for room
/// (backpressure instead of unbounded memory).
pub const INTAKE_QUEUE: usize = 8192;

/// Remote workers' attempt ends folded into one fenced UPDATE, at most; and the writers in
/// flight at once. A worker with many slots reports many ends at once; one statement (and
/// one commit) for each would make the database's per-statement cost the drain's limit.
pub const ENDS_MAX_ROWS: usize = 256;
pub const ENDS_LANES: usize = 2;
/// Ends that may wait for a writer; past this, reporting workers wait (backpressure).
pub const ENDS_QUEUE: usize = 4096;

// ---------------------------------------------------------------------------------------
// The LISTEN connection.

/// How often the idle LISTEN connection is checked with `SELECT 1`: a half-open connection
/// (the server gone without a reset) would otherwise silently stop dispatch.
pub const LISTENER_HEALTH_EVERY: Duration = Duration::from_secs(5);
/// How long that check may take before the connection is declared dead.
pub const LISTENER_HEALTH_DEADLINE: Duration = Duration::from_secs(3);
/// Reconnect backoff: first wait, doubling (with jitter) up to the cap.
pub const LISTENER_BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const LISTENER_BACKOFF_MAX: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The worker.

/// Most tasks one daemon holds between claim and the store write of their end (buffered,
/// running, or waiting for the completer). It is the producer's backpressure: when ends are
/// written slower than handlers produce them, claiming slows down too, instead of piling up
/// claimed tasks whose leases run out.
pub const MAX_UNFINISHED: usize = 4096;
/// Tasks shorter than this on average are worth claiming ahead of free slots: for them a
/// claim's round trip costs more than running the task.
pub const SHORT_TASK: Duration = Duration::from_millis(10);
/// Buffered tasks per slot for short tasks, and the bounds of the whole buffer. The buffer
/// is refilled when half empty, so this also sets the claim size: larger claims share a
/// claim's fixed cost over more tasks, and the bounds keep a daemon from sitting on more
/// work than it finishes in a fraction of a second.
pub const PREFETCH_PER_SLOT: usize = 128;
pub const PREFETCH_MIN: usize = 512;
pub const PREFETCH_MAX: usize = 2048;
/// Shortest sleep until the next scheduled task: a clock skew between daemon and database
/// must not turn the wait into a spin.
pub const SCHEDULE_WAIT_FLOOR: Duration = Duration::from_millis(2);
/// How long a handler asked to stop (cancel, lease lost) may take to return before it is
/// dropped.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Most attempt ends written in one store call. The completer does not wait for a batch to
/// fill: the ends that arrive while one write is in flight make the next. A wait would
/// delay every end's commit, and that commit is when a limited queue's slot frees and a
/// workflow step's dependants are released, so it would hold back the next task's start.
pub const COMPLETER_MAX_BATCH: usize = 512;
/// A completer write that failed (database away) is retried after this, doubling up to
/// the cap: an attempt's end is never dropped while the daemon runs.
pub const COMPLETER_RETRY_FIRST: Duration = Duration::from_millis(50);
pub const COMPLETER_RETRY_CAP: Duration = Duration::from_secs(5);
/// Once shutdown is under way, the completer retries for the grace period plus this long,
/// then gives up on what it could not write (those tasks come back through their leases)
/// so that a daemon whose database is gone still exits. Three seconds is a few retries
/// at the cap's pace for a database that is merely restarting, and well within the ten
/// seconds a container runtime usually allows past its own stop timeout.
pub const COMPLETER_SHUTDOWN_EXTRA: Duration = Duration::from_secs(3);
/// An attempt end that reaches the completer after that deadline (its handler ignored the
/// stop and was dropped later) gets one write of at most this long: enough for a database
/// that is there, short enough that a gone one cannot hold the exit.
pub const COMPLETER_LAST_TRY: Duration = Duration::from_secs(1);
/// Weight of one run time in the moving average that decides prefetching (1/16): a few
/// slow tasks move it fast enough to stop prefetching, a single one does not.
pub const RUN_TIME_EWMA_SHIFT: u64 = 16;

/// How often expired leases are looked for: half a lease, within these bounds.
pub const RESCUE_EVERY_MIN: Duration = Duration::from_millis(100);
pub const RESCUE_EVERY_MAX: Duration = Duration::from_secs(5);
/// How often approval steps past their `expires_after_s` are failed (`approval_expired`):
/// an expiry lands within this (plus a leadership change) of its due time. A poll, not a
/// timer per step: one indexed scan of the waiting approvals (partial index of V13) a second
/// costs nothing when there are none, and expiries are minutes or hours, not milliseconds.
pub const APPROVAL_EXPIRY_EVERY: Duration = Duration::from_secs(1);
/// At most this many approvals expired per statement (a pass repeats until fewer).
pub const APPROVAL_EXPIRY_BATCH: u32 = 100;
/// The maintenance leadership's lease: a leader killed with SIGKILL is replaced within
/// this plus one renewal period. Short, because the services it leads (the lease rescuer)
/// wait for it; long enough that a daemon stalled by a busy host for a second keeps it.
pub const LEADER_TTL: Duration = Duration::from_secs(5);
/// How often the leader renews its lease, and a follower asks for it.
pub const LEADER_RENEW_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// Schedules (the ticker, `maintenance/ticker.rs`).

/// A tick at most this late is on time: it fires under every catch-up policy (a daemon that
/// starts a moment after a tick, a busy host). Older ones are missed and follow the
/// schedule's `catch_up`. One second: an every-second schedule's previous tick is missed,
/// not on time, once a second has gone by.
pub const SCHEDULE_LATE_GRACE: Duration = Duration::from_secs(1);
/// How often the ticker reads the schedules' fingerprint (one aggregate; every schedule only
/// when it moved): what other daemons created, changed, paused or deleted is seen within
/// this (this daemon's own changes wake it at once), and a tick `buffer_one` held back
/// fires within this of the previous fire's end.
pub const SCHEDULE_LOOK_EVERY: Duration = Duration::from_secs(1);
/// After a failed fire (database away) the ticker tries again after this.
pub const SCHEDULE_RETRY_AFTER: Duration = Duration::from_millis(500);
/// Leases are renewed every third of a lease, so two beats can be missed; never more often
/// than this.
pub const HEARTBEAT_EVERY_MIN: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------
// Remote workers (the HTTP worker protocol).

/// The longest a claim may wait for work: long enough that an idle worker costs a request
/// per half minute, short enough for proxies that cut idle connections at a minute.
pub const CLAIM_WAIT_MAX: Duration = Duration::from_secs(30);
/// Most tasks one claim returns.
pub const CLAIM_MAX: usize = 100;
/// A worker silent for this many heartbeat intervals is shown dead; its tasks come back
/// when their leases end.
pub const WORKER_DEAD_AFTER_BEATS: u32 = 3;
/// How stale the cached set of task types registered workers serve may be before an
/// enqueue of an unknown type reads the registry again.
pub const TASK_TYPES_REFRESH: Duration = Duration::from_secs(1);
/// Most log lines one `POST /tasks/{id}/log` may carry.
pub const LOG_LINES_MAX: usize = 10_000;
/// How often `GET /tasks/{id}/log?follow=1` looks for new lines in `log.txt`.
pub const LOG_FOLLOW_EVERY: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------
// The API.

/// How long `/metrics` reuses its count of tasks by status: a scraper polling every second
/// must not put a `GROUP BY status` over the whole table on every scrape.
pub const STATUS_COUNTS_TTL: Duration = Duration::from_secs(2);
/// `devops-control-tower healthcheck`: how long connecting and reading the answer may take.
/// Shorter than a container runtime's usual probe timeout (5 s), so the probe reports the
/// failure itself instead of being killed.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `client`: how long connecting to the JCT server may take. A server on the same network
/// accepts in milliseconds; past this it is down, and the caller (remote worker, MCP tool)
/// should say so rather than hang.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `client`: how long an answer may take beyond the time the server was asked to hold the
/// call open (a long-poll claim). Every other route answers in milliseconds.
pub const CLIENT_REQUEST_SLACK: Duration = Duration::from_secs(30);

/// `command`: log bytes kept per attempt. A build's output past a megabyte is rarely read
/// in a trace folder, and an endless loop of output must not fill the disk.
pub const COMMAND_OUTPUT_CAP: usize = 1 << 20;
/// `agent`: log bytes kept per attempt by default; agents' JSON event streams are larger.
pub const AGENT_OUTPUT_CAP: usize = 4 << 20;
/// Programs' output: a line longer than this is stored in pieces, so one endless line
/// cannot hold the whole output in memory.
pub const OUTPUT_LINE_MAX: usize = 64 << 10;
/// Programs' output: lines written to the trace (or sent to the server) per batch, so a
/// chatty program costs a write per batch rather than per line.
pub const OUTPUT_BATCH_LINES: usize = 256;
/// Programs' output: the tail of stdout and of stderr kept for the result and the error
/// (`stdout_tail`, `last_error`); enough for a compiler's last error.
pub const OUTPUT_TAIL_BYTES: usize = 4096;
/// How often a stopped program's process group is checked for being gone.
pub const PROCESS_REAP_POLL: Duration = Duration::from_millis(20);
/// How often the processes a running program started are looked up in `/proc` (see
/// `handlers::tree`): a process that leaves the program's group and is orphaned is found by
/// the last look before it was orphaned. One look reads every `/proc/<pid>/stat` (about a
/// millisecond for a few hundred processes), so twice a second costs little per program.
pub const PROCESS_TRACK_EVERY: Duration = Duration::from_millis(500);
/// Defaults (and maxima) of `JCT_TASK_MEMORY_MB`, `JCT_TASK_PIDS`, `JCT_TASK_FILE_MB`: room
/// for a compiler or a test suite with its workers, not for a runaway that takes the machine.
pub const DEFAULT_TASK_MEMORY_MB: u64 = 4096;
pub const DEFAULT_TASK_PIDS: u64 = 1024;
pub const DEFAULT_TASK_FILE_MB: u64 = 1024;
/// How long the start-up check that bubblewrap works here (`JCT_SANDBOX=auto|bwrap`) may take.
pub const SANDBOX_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much longer than the kill grace the worker waits for a stopped program's handler
/// before dropping it (the group is killed then): the handler's own clean-up (removing
/// a worktree) needs a moment after the group is gone.
pub const HANDLER_STOP_SLACK: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// The MCP server (`devops-control-tower mcp`).

/// `JCT_SERVER_URL` unset: the daemon's default bind address, on this machine.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8000";
/// How many tasks one agent (one registration per set of types and queues) may hold at once.
/// An agent works a task for minutes and may fan it out to helpers that claim their own, so
/// more than one; a handful, so one agent cannot sit on a queue's whole backlog.
pub const MCP_WORKER_SLOTS: i32 = 4;
/// `jct_claim_task` without `wait_ms`: how long it waits for work. Shorter than the longest
/// claim wait, since an agent's tool call blocks its whole turn; long enough that an idle
/// agent polling in a loop costs little.
pub const MCP_CLAIM_WAIT_DEFAULT: Duration = Duration::from_secs(10);
/// How long the MCP server waits to deregister its workers when it stops: the agent's client
/// may kill it soon after closing stdin, and a worker left behind only costs its leases.
pub const MCP_DEREGISTER_WITHIN: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------
// The dashboard (`/ui`) and the bulk actions.

/// Counts the dashboard shows stop at this many rows: counting a status or a queue on a
/// table of millions costs a scan of every matching row, while "10,000+" tells an operator
/// as much. Each capped count reads at most this many index entries.
pub const UI_COUNT_CAP: u64 = 10_000;
/// Tasks per page of `/ui/tasks` when the query string does not say.
pub const UI_PAGE_SIZE: u32 = 50;
/// Minutes of completions and failures the overview's chart covers.
pub const UI_CHART_MINUTES: i64 = 60;
/// How often the overview and a task page without a live log refresh themselves.
pub const UI_REFRESH: Duration = Duration::from_secs(5);
/// Most steps a workflow page draws in its graph (the first layers first): past a few
/// hundred nodes a drawing is unreadable and slow to lay out and render; the table lists
/// every step.
pub const UI_GRAPH_MAX: usize = 250;
/// Steps per page of a workflow page's table.
pub const UI_STEPS_PAGE: usize = 250;
/// Most parents (and most dependants) a step's task page links; the workflow's page lists all.
pub const UI_STEP_LINKS_MAX: usize = 100;
/// How often a running workflow's page reads the workflow again to recolour its steps, and
/// how often when it has more than [`UI_GRAPH_MAX`] steps (each read is the whole workflow).
pub const UI_WORKFLOW_POLL: Duration = Duration::from_secs(2);
pub const UI_WORKFLOW_POLL_LARGE: Duration = Duration::from_secs(10);
/// Tasks one store statement of a bulk cancel or retry touches: every chunk is its own short
/// transaction, so cancelling a million tasks never holds a million row locks at once nor
/// one statement long enough to stall the workers' claims.
pub const BULK_CHUNK: usize = 500;
/// How many queued tasks a claim from a limited queue looks at, per task it wants (within
/// the bounds below): with `key_concurrency`, the first tasks in priority order may belong
/// to keys at their limit, and the claim skips them. Tasks beyond the look wait for the
/// next claim; a backlog whose first few thousand tasks all share saturated keys is
/// claimed slowly (the keys' tasks start as their slots free).
pub const LIMITED_CLAIM_SCAN_PER_TASK: i64 = 4;
pub const LIMITED_CLAIM_SCAN_MIN: i64 = 256;
pub const LIMITED_CLAIM_SCAN_MAX: i64 = 4096;
/// Most ids one bulk request may name (a selection on a page); larger sets go by filter.
pub const BULK_IDS_MAX: usize = 10_000;
/// How long a dashboard session cookie stays valid after the key was typed.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
