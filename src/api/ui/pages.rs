//! The dashboard's views, each read through the same services as the API: overview,
//! tasks (filters and keyset paging), one task (fields, trace files, live log, CWOM
//! links, what holds it back in its queue, a step's place in its workflow from
//! `workflows.rs`), workers, schedules, queues (counts, limits,
//! pause), and a CWOM Issue with its context packets, runs and artifacts. Each is
//! [`maud`] markup in the frame of [`html::page`].

use chrono::{Duration as ChronoDuration, Utc};
use maud::{html, Markup};
use serde_json::Value;
use warp::http::StatusCode;

use super::html::{
    self, age, count, failed, field, opt_time, pretty_json, short_id, status_badge, task_link, time, truncate, url_enc,
    Nav, Script,
};
use super::{Ctx, PageResult};
use crate::api::{ApiError, ApiState};
use crate::cwom::requests::{ListFilter, ListQuery};
use crate::cwom::types::{Object, ObjectKind};
use crate::queue::{QueueSettings, QueueView};
use crate::registration::WorkerState;
use crate::schedule::Target;
use crate::store::MinuteCounts;
use crate::task::{Task, TaskFilter, TaskId, TaskStatus};
use crate::tunables::{UI_CHART_MINUTES, UI_COUNT_CAP, UI_PAGE_SIZE, UI_REFRESH};

/// Most bytes of a trace file shown inline (the whole file is a download away).
const INLINE_MAX: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------
// Overview

pub async fn overview(ctx: &Ctx, state: &ApiState) -> PageResult {
    let now = Utc::now();
    let since = now - ChronoDuration::minutes(UI_CHART_MINUTES);
    let ov = state.store.overview(UI_COUNT_CAP, since).await.map_err(failed)?;
    let workers = state.remote.list_workers().await.map_err(failed)?;
    let alive = workers.iter().filter(|w| w.state == WorkerState::Alive).count();
    let root = &ctx.root;

    let body = html! {
        h1 { "Overview" }
        section.cards #status-counts {
            @for (status, c) in &ov.by_status {
                @let s = status.as_str();
                a class={ "card s-" (s) } id={ "count-" (s) } href={ (root) "ui/tasks?status=" (s) } {
                    span.n { (count(c.n, c.capped)) }
                    span.label { (s) }
                }
            }
        }
        @if ov.by_status.iter().any(|(_, c)| c.capped) {
            p.note #capped-note {
                "Counts stop at " (count(UI_COUNT_CAP, false)) ": a “+” means at least that many (counting \
                 every row of a large table on each view would be slow)."
            }
        }
        section.facts {
            div {
                "Oldest queued task: "
                @match ov.oldest_queued_at {
                    Some(t) => { span #oldest-queued { (age(&t, now)) } " " small { "(since " (time(&t)) ")" } }
                    None => { span #oldest-queued { "none queued" } }
                }
            }
            div {
                "Remote workers alive: " a href={ (root) "ui/workers" } id="workers-alive" { (alive) }
                " of " (workers.len())
            }
        }
        section {
            h2 { "Completions and failures per minute, last " (UI_CHART_MINUTES) " minutes" }
            (chart(&ov.per_minute, now))
        }
        section {
            h2 { "Active tasks by queue" }
            table #queues {
                thead { tr { th { "queue" } th { "queued" } th { "running" } } }
                tbody {
                    @for (queue, queued, running) in &ov.active_by_queue {
                        tr {
                            td { a href={ (root) "ui/tasks?queue=" (url_enc(queue)) } { (queue) } }
                            td { (queued) }
                            td { (running) }
                        }
                    }
                    @if ov.active_by_queue.is_empty() {
                        tr { td colspan="3" class="muted" { "No queued or running tasks." } }
                    }
                }
            }
            @if ov.active_by_queue_capped {
                p.note { "Counted from the first " (count(UI_COUNT_CAP, false)) " active tasks only." }
            }
        }
    };
    Ok(html::page(&ctx.frame(), "Overview", Nav::Overview, Script::Refresh(UI_REFRESH), body))
}

/// An inline SVG bar chart: one stacked bar (completed, failed) per minute of the window.
fn chart(minutes: &[MinuteCounts], now: chrono::DateTime<Utc>) -> Markup {
    let (w, h, n) = (720.0_f64, 140.0_f64, UI_CHART_MINUTES);
    let max = minutes.iter().map(|m| m.completed + m.failed).max().unwrap_or(0).max(1) as f64;
    let slot = w / n as f64;
    let bw = format!("{:.1}", (slot - 2.0).max(1.0));
    let start = now - ChronoDuration::minutes(n);
    let one = |v: f64| format!("{v:.1}");
    let mut bars = Vec::new();
    let (mut total_c, mut total_f) = (0, 0);
    for m in minutes {
        let i = (m.minute - start).num_seconds() as f64 / 60.0;
        if !(0.0..n as f64 + 1.0).contains(&i) {
            continue;
        }
        total_c += m.completed;
        total_f += m.failed;
        let x = one((i.floor().min(n as f64 - 1.0)) * slot);
        let hc = m.completed as f64 / max * (h - 20.0);
        let hf = m.failed as f64 / max * (h - 20.0);
        // Closed elements, not `<rect>` alone: inside `<svg>` an unclosed tag contains the next.
        bars.push(html! {
            g {
                title { (m.minute.format("%H:%M")) ": " (m.completed) " completed, " (m.failed) " failed" }
                rect.c x=(x) y=(one(h - hc)) width=(bw) height=(one(hc)) {}
                rect.f x=(x) y=(one(h - hc - hf)) width=(bw) height=(one(hf)) {}
            }
        });
    }
    html! {
        svg.chart #chart viewBox={ "0 0 " (w) " " (h + 16.0) } role="img"
            aria-label="completions and failures per minute" {
            line.axis x1="0" y1=(h) x2=(w) y2=(h) {}
            @for bar in &bars { (bar) }
            text x="0" y=(h + 14.0) { "−" (n) " min" }
            text x=(w) y=(h + 14.0) text-anchor="end" { "now" }
            text x="2" y="12" { "max " (max as u64) "/min" }
        }
        p.legend {
            span.key.c {} " completed " b #chart-completed { (total_c) }
            " " span.key.f {} " failed " b #chart-failed { (total_f) }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tasks

pub async fn tasks(ctx: &Ctx, state: &ApiState, query: &[(String, String)]) -> PageResult {
    // A submitted filter form sends its empty fields too: those mean "any".
    let pairs: Vec<(String, String)> = query.iter().filter(|(_, v)| !v.is_empty()).cloned().collect();
    let mut filter = crate::api::tasks::parse_filter(&pairs).map_err(failed)?;
    if !pairs.iter().any(|(k, _)| k == "limit") {
        filter.limit = UI_PAGE_SIZE;
    }
    let list = state.store.list(&filter).await.map_err(failed)?;
    let root = &ctx.root;
    let known = state.intake.types().known();

    let form_value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let filters = html! {
        form method="get" action={ (root) "ui/tasks" } class="filters" id="filters" {
            label {
                "status "
                select name="status" id="f-status" {
                    option value="" { "any" }
                    @for s in TaskStatus::ALL {
                        option selected[filter.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "type " input name="type" id="f-type" list="known-types" value=(form_value("type")); }
            label { "queue " input name="queue" id="f-queue" value=(form_value("queue")); }
            label { "CWOM issue " input name="cwom_issue_id" id="f-issue" value=(form_value("cwom_issue_id")); }
            button type="submit" id="f-apply" { "Filter" }
            " "
            a href={ (root) "ui/tasks" } { "clear" }
        }
        datalist #known-types {
            @for t in &known { option value=(t) {} }
        }
    };

    // Keyset paging: the next page starts below the last id shown.
    let mut keep: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != "before" && k != "offset")
        .map(|(k, v)| format!("{}={}", url_enc(k), url_enc(v)))
        .collect();
    let first_href = format!("{root}ui/tasks?{}", keep.join("&"));
    let next_href = match list.last() {
        Some(last) if list.len() as u32 == filter.limit => {
            keep.push(format!("before={}", last.id));
            Some(format!("{root}ui/tasks?{}", keep.join("&")))
        }
        _ => None,
    };
    let filter_json = serde_json::json!({
        "status": filter.status.map(TaskStatus::as_str),
        "type": filter.task_type,
        "queue": filter.queue,
        "cwom_issue_id": filter.cwom_issue_id,
    });
    let filter_json: serde_json::Map<String, Value> = filter_json
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let body = html! {
        h1 { "Tasks" }
        @if ctx.writable() { (enqueue_form(&known)) }
        (filters)
        @if ctx.writable() {
            div.bulk #bulk data-filter=(Value::Object(filter_json).to_string()) {
                button type="button" data-bulk="cancel" data-scope="ids" id="bulk-cancel-selected" { "Cancel selected" }
                button type="button" data-bulk="retry" data-scope="ids" id="bulk-retry-selected" { "Retry selected" }
                button type="button" data-bulk="cancel" data-scope="filter" id="bulk-cancel-filter" {
                    "Cancel all matching"
                }
                button type="button" data-bulk="retry" data-scope="filter" id="bulk-retry-filter" {
                    "Retry all matching"
                }
            }
        }
        table #tasks {
            thead {
                tr {
                    @if ctx.writable() {
                        th { input type="checkbox" id="select-all" aria-label="select all"; }
                    }
                    th { "id" } th { "type" } th { "status" } th { "queue" } th { "attempts" } th { "created" }
                    th { "last error" }
                }
            }
            tbody {
                @for t in &list {
                    tr data-id=(t.id) {
                        @if ctx.writable() {
                            td { input type="checkbox" class="sel" value=(t.id) aria-label="select"; }
                        }
                        td { (task_link(root, &t.id)) }
                        td { (t.task_type) }
                        td { (status_badge(t.status)) }
                        td { (t.queue) }
                        td { (t.attempts) "/" (t.max_attempts) }
                        td title=(time(&t.created_at)) { (time(&t.created_at)) }
                        td.err { (truncate(t.last_error.as_deref().unwrap_or(""), 120)) }
                    }
                }
                @if list.is_empty() {
                    tr { td colspan="8" class="muted" id="no-tasks" { "No tasks match." } }
                }
            }
        }
        p.paging {
            @if filter.before.is_some() { a #first-page href=(first_href) { "← Newest" } }
            " " span.muted { (list.len()) " shown, newest first" } " "
            @if let Some(href) = next_href { a #next-page href=(href) { "Older →" } }
        }
    };
    Ok(html::page(&ctx.frame(), "Tasks", Nav::Tasks, Script::Plain, body))
}

fn enqueue_form(known: &[String]) -> Markup {
    html! {
        details.enqueue #enqueue-box {
            summary { "Enqueue a task" }
            form #enqueue autocomplete="off" {
                label { "type " input name="type" id="e-type" list="enqueue-types" required maxlength="128"; }
                label { "queue " input name="queue" id="e-queue" placeholder="default"; }
                label { "priority " input name="priority" id="e-priority" type="number" value="0"; }
                label.wide { "payload (JSON) " textarea name="payload" id="e-payload" rows="4" { "{}" } }
                button type="submit" id="e-submit" { "Enqueue" }
                " "
                span.error #e-error {}
            }
            datalist #enqueue-types {
                @for t in known { option value=(t) {} }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// One task

pub async fn task(ctx: &Ctx, state: &ApiState, raw_id: &str) -> PageResult {
    let id: TaskId = raw_id.parse().map_err(|_| failed(ApiError::InvalidId(raw_id.to_string())))?;
    let task = state.store.get(id).await.map_err(failed)?.ok_or_else(|| failed(ApiError::TaskNotFound(id)))?;
    let root = &ctx.root;
    let dir = state.trace.dir_for(id);
    let read = |name: &str| {
        let path = dir.as_ref().map(|d| d.join(name));
        async move {
            match path {
                Some(p) => tokio::fs::read(p).await.ok(),
                None => None,
            }
        }
    };
    let input = read(crate::trace::INPUT_FILE).await;
    let output = read(crate::trace::OUTPUT_FILE).await;
    // Each earlier attempt's end is kept as `output.attempt-N.json` when the next begins.
    let mut earlier = Vec::new();
    for n in (1..task.attempts).rev() {
        let name = crate::trace::earlier_output(n);
        if let Some(bytes) = read(&name).await {
            earlier.push((name, bytes));
        }
    }
    let follow = task.status == TaskStatus::Running;
    // A running task's log comes from the live follow (from its first line), so the page
    // does not show it twice.
    let log = if follow { None } else { read(crate::trace::LOG_FILE).await };
    let artifacts = match &dir {
        Some(d) => list_dir(&d.join(crate::trace::ARTIFACTS_DIR)).await,
        None => Vec::new(),
    };
    let runs = task_runs(state, &task).await;
    let step = super::workflows::step_section(ctx, state, &task).await;
    // A due task that stays queued: say when its queue's pause or limits are why.
    let held = if task.status == TaskStatus::Queued {
        match state.queues.get(&task.queue).await {
            Ok(view) => held_back(&view),
            Err(e) => {
                tracing::debug!(error = %e, queue = %task.queue, "task page: cannot read the queue's settings");
                None
            }
        }
    } else {
        None
    };

    let cancel = matches!(task.status, TaskStatus::Waiting | TaskStatus::Queued | TaskStatus::Running);
    let retry = matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled);
    let issue_link = html! {
        @match &task.cwom_issue_id {
            Some(issue) => { a #issue-link href={ (root) "ui/issues/" (url_enc(issue)) } { (issue) } }
            None => "–",
        }
    };
    let run_links = html! {
        @for (i, r) in runs.iter().enumerate() {
            @let rid = r["id"].as_str().unwrap_or("");
            @if i > 0 { br; }
            a.run-link href={ (root) "ui/issues/" (url_enc(task.cwom_issue_id.as_deref().unwrap_or(""))) "#run-" (rid) } {
                (rid)
            }
            " (attempt " (r["meta"]["jct.attempt"].as_i64().unwrap_or(0)) ", " (text(&r["status"])) ")"
        }
        @if runs.is_empty() { "–" }
    };
    let trace = format!("{root}tasks/{id}/trace/");
    let approval = approval_panel(ctx, state, &task).await;
    let body = html! {
        h1 { "Task " span.mono { (short_id(&id)) } }
        (approval)
        @if ctx.writable() {
            div.actions {
                @if cancel { button type="button" data-action="cancel" data-id=(id) id="cancel" { "Cancel" } }
                @if retry { button type="button" data-action="retry" data-id=(id) id="retry" { "Retry" } }
            }
        }
        @if let Some(h) = held { p.note.held #held-back { (h) } }
        div.grid #fields {
            (field("id", html! { span.mono #task-id { (id) } }))
            (field("status", html! { span #status { (status_badge(task.status)) } }))
            (field("type", &task.task_type))
            (field("queue", html! { a href={ (root) "ui/queues" } id="task-queue" { (task.queue) } }))
            @if let Some(k) = &task.concurrency_key {
                (field("concurrency key", html! { span.mono #concurrency-key { (k) } }))
            }
            (field("priority", task.priority))
            (field("attempts", format!("{} of {}", task.attempts, task.max_attempts)))
            (field("timeout", format!("{} s", task.timeout_seconds)))
            (field("run at", time(&task.run_at)))
            (field("created", time(&task.created_at)))
            (field("updated", time(&task.updated_at)))
            (field("started", opt_time(&task.started_at)))
            (field("finished", opt_time(&task.finished_at)))
            (field("locked by", task.locked_by.as_deref().unwrap_or("–")))
            (field("lease until", opt_time(&task.locked_until)))
            (field("idempotency key", task.idempotency_key.as_deref().unwrap_or("–")))
            (field("trace id", task.trace_id.as_deref().unwrap_or("–")))
            (field("CWOM issue", issue_link))
            (field("CWOM runs", run_links))
            (field("last error", html! {
                span.err #last-error { (task.last_error.as_deref().unwrap_or("–")) }
            }))
        }
        @if let Some(step) = step { (step) }
        @if follow {
            section {
                h2 {
                    "log.txt " span.badge.live #live { "live" } " "
                    a.download href={ (trace) "log.txt" } download { "download" }
                }
                pre #log {}
            }
        } @else {
            (file_section(&trace, crate::trace::LOG_FILE, log.as_deref(), "log"))
        }
        p.note {
            "Every attempt appends to log.txt after a header line; input.json and output.json are the latest \
             attempt's, output.attempt-N.json the end of attempt N."
        }
        section { h2 { "payload" } pre #payload { (pretty_json(&task.payload)) } }
        @if let Some(v) = &task.result {
            section { h2 { "result" } pre #result { (pretty_json(v)) } }
        }
        (file_section(&trace, crate::trace::INPUT_FILE, input.as_deref(), "input"))
        (file_section(&trace, crate::trace::OUTPUT_FILE, output.as_deref(), "output"))
        @for (name, bytes) in &earlier {
            (file_section(&trace, name, Some(bytes), &name.replace('.', "-")))
        }
        section {
            h2 { "artifacts" }
            @if artifacts.is_empty() {
                p.muted { "None." }
            } @else {
                ul #artifacts {
                    @for name in &artifacts {
                        li { a.artifact href={ (trace) "artifacts/" (url_enc(name)) } download { (name) } }
                    }
                }
            }
        }
    };
    let title = format!("Task {}", &id.to_string()[..8]);
    Ok(html::page(&ctx.frame(), &title, Nav::Tasks, Script::Task { id, status: task.status, follow }, body))
}

/// An approval step's prompt and, while it awaits its decision, the Approve and Reject
/// buttons with an optional comment and name (for the full key only; they post to
/// `POST /tasks/{id}/decision` with the session's CSRF token, as the cancel button posts).
/// Empty for any other task.
async fn approval_panel(ctx: &Ctx, state: &ApiState, task: &crate::task::Task) -> Markup {
    let Some(workflow_id) = task.workflow_id.filter(|_| task.task_type == crate::approval::TYPE) else {
        return html! {};
    };
    let payload = crate::approval::ApprovalPayload::parse(&task.payload).ok();
    // Awaiting its decision: waiting with every parent ended (the store's fence is
    // `pending_parents = 0`, which the parents' ends count down; the API refuses anything else).
    let awaiting = task.status == TaskStatus::Waiting && {
        match state.store.get_workflow(workflow_id).await {
            Ok(Some(view)) => {
                let me = view.steps.iter().find(|s| s.task_id == task.id);
                me.is_some_and(|me| {
                    me.depends_on.iter().all(|key| view.steps.iter().any(|p| &p.key == key && p.status.is_final()))
                })
            }
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, task_id = %task.id, "task page: cannot read the approval's workflow");
                false
            }
        }
    };
    let id = task.id;
    html! {
        section #approval {
            h2 { "approval" }
            p #approval-prompt { (payload.as_ref().map_or("(no prompt)", |p| p.prompt.as_str())) }
            @if let Some(s) = payload.as_ref().and_then(|p| p.expires_after_s) {
                p.note #approval-expiry { "Expires " (s) " s after its parents are done (then it fails: approval_expired)." }
            }
            @if awaiting {
                p.note #approval-awaiting { "Awaiting a decision." }
                @if ctx.writable() {
                    div.actions #decision {
                        label { "comment " input #decision-comment maxlength=(crate::approval::limits::COMMENT_MAX); }
                        " "
                        label { "by " input #decision-by maxlength=(crate::approval::limits::BY_MAX); }
                        " "
                        button type="button" data-decision="approve" data-id=(id) id="approve" { "Approve" }
                        " "
                        button type="button" data-decision="reject" data-id=(id) id="reject" { "Reject" }
                    }
                }
            } @else if task.status == TaskStatus::Waiting {
                p.note #approval-parents { "Waiting for its parents; the decision comes after." }
            }
        }
    }
}

/// A trace file's section: its first [`INLINE_MAX`] bytes and a download link, or a note
/// that it is not there.
fn file_section(trace: &str, name: &str, content: Option<&[u8]>, el: &str) -> Markup {
    html! {
        section {
            @match content {
                Some(bytes) => {
                    h2 { (name) " " a.download href={ (trace) (name) } download { "download" } }
                    pre id=(el) { (String::from_utf8_lossy(&bytes[..bytes.len().min(INLINE_MAX)])) }
                    @if bytes.len() > INLINE_MAX {
                        p.note { "Cut at 256 KiB; download for the rest." }
                    }
                }
                None => {
                    h2 { (name) }
                    p.muted id=(el) { "Not written (yet)." }
                }
            }
        }
    }
}

/// A JSON value's string, or nothing.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The CWOM Runs recorded for this task's attempts (as JSON values), oldest first.
async fn task_runs(state: &ApiState, task: &Task) -> Vec<Value> {
    let Some(issue) = &task.cwom_issue_id else { return Vec::new() };
    let id = task.id.to_string();
    runs_of(state, issue).await.into_iter().filter(|r| r["meta"]["jct.task_id"].as_str() == Some(id.as_str())).collect()
}

async fn runs_of(state: &ApiState, issue: &str) -> Vec<Value> {
    let mut q =
        ListQuery::new(ListFilter::Runs { issue_id: Some(issue.to_string()), repo_id: None, status: None, mode: None });
    q.limit = ListQuery::MAX_LIMIT;
    let mut runs: Vec<Value> = match state.cwom.list(&q).await {
        Ok(list) => list.iter().filter_map(|o| serde_json::to_value(o).ok()).collect(),
        Err(_) => Vec::new(),
    };
    runs.reverse();
    runs
}

async fn list_dir(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            if let Some(name) = e.file_name().to_str() {
                if crate::trace::is_safe_artifact_name(name) {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Workers

pub async fn workers(ctx: &Ctx, state: &ApiState) -> PageResult {
    let now = Utc::now();
    let root = &ctx.root;
    let workers = state.remote.list_workers().await.map_err(failed)?;
    let running = state
        .store
        .list(&TaskFilter { status: Some(TaskStatus::Running), limit: TaskFilter::MAX_LIMIT, ..TaskFilter::default() })
        .await
        .map_err(failed)?;
    let task_links = |holder: &str| {
        html! {
            @for (i, t) in running.iter().filter(|t| t.locked_by.as_deref() == Some(holder)).enumerate() {
                @if i > 0 { br; }
                (task_link(root, &t.id)) " " (t.task_type)
            }
        }
    };
    // Tasks held by daemons' own in-process workers (not in the registry).
    let registered: Vec<&str> = workers.iter().map(|w| w.record.worker_id.0.as_str()).collect();
    let mut holders: Vec<&str> =
        running.iter().filter_map(|t| t.locked_by.as_deref()).filter(|h| !registered.contains(h)).collect();
    holders.sort();
    holders.dedup();
    let body = html! {
        h1 { "Workers" }
        h2 { "Remote workers" }
        table #workers {
            thead {
                tr {
                    th { "name" } th { "types" } th { "queues" } th { "running/slots" } th { "last heartbeat" }
                    th { "state" } th { "running tasks" }
                }
            }
            tbody {
                @for w in &workers {
                    @let r = &w.record;
                    @let state_class = match w.state {
                        WorkerState::Alive => "alive",
                        WorkerState::Dead => "dead",
                    };
                    tr.worker {
                        td { (r.name) br; small.mono { (r.worker_id.0) } }
                        td { (r.types.join(", ")) }
                        td { (r.queues.as_ref().map(|q| q.join(", ")).unwrap_or_else(|| "all".into())) }
                        td { (w.running) "/" (r.max_slots) }
                        td title=(time(&r.last_heartbeat_at)) { (age(&r.last_heartbeat_at, now)) " ago" }
                        td { span class={ "badge " (state_class) } { (state_class) } }
                        td { (task_links(&r.worker_id.0)) }
                    }
                }
                @if workers.is_empty() {
                    tr { td colspan="7" class="muted" { "No remote worker has registered." } }
                }
            }
        }
        h2 { "In-process workers" }
        table #local-workers {
            thead { tr { th { "worker" } th { "running tasks" } } }
            tbody {
                @for h in &holders {
                    tr { td.mono { (h) } td { (task_links(h)) } }
                }
                @if holders.is_empty() {
                    tr { td colspan="2" class="muted" { "None running." } }
                }
            }
        }
    };
    Ok(html::page(&ctx.frame(), "Workers", Nav::Workers, Script::Refresh(UI_REFRESH), body))
}

// ---------------------------------------------------------------------------------------
// A CWOM Issue

pub async fn issue(ctx: &Ctx, state: &ApiState, raw_id: &str) -> PageResult {
    let root = &ctx.root;
    let id = crate::url::decode(raw_id);
    let issue = state.cwom.get(ObjectKind::Issue, &id).await.map_err(failed)?;
    let issue = match issue {
        Object::Issue(i) => serde_json::to_value(i).unwrap_or_default(),
        _ => return Err((StatusCode::NOT_FOUND, format!("no Issue with id {id:?}"))),
    };

    // Each packet the issue names, or `None` when it cannot be read.
    let mut packets = Vec::new();
    for r in issue["context_packets"].as_array().into_iter().flatten() {
        let pid = text(&r["id"]);
        let packet = state.cwom.get(ObjectKind::ContextPacket, pid).await.ok();
        packets.push((pid, packet.map(|p| serde_json::to_value(p).unwrap_or_default())));
    }

    let runs = runs_of(state, &id).await;
    let mut aq =
        ListQuery::new(ListFilter::Artifacts { run_id: None, issue_id: Some(id.clone()), artifact_type: None });
    aq.limit = ListQuery::MAX_LIMIT;
    let artifacts: Vec<Value> = match state.cwom.list(&aq).await {
        Ok(list) => list.iter().filter_map(|o| serde_json::to_value(o).ok()).collect(),
        Err(e) => return Err(failed(e)),
    };
    let tasks = state
        .store
        .list(&TaskFilter { cwom_issue_id: Some(id.clone()), limit: 100, ..TaskFilter::default() })
        .await
        .map_err(failed)?;
    let body = html! {
        h1 { "Issue: " span #issue-title { (text(&issue["title"])) } }
        table.fields {
            tr { th { "id" } td.mono { (id) } }
            tr { th { "status" } td { (text(&issue["status"])) } }
            tr { th { "type" } td { (text(&issue["type"])) } }
            tr { th { "priority" } td { (text(&issue["priority"])) } }
            tr { th { "repo" } td.mono { (text(&issue["repo"]["id"])) } }
        }
        section { h2 { "description" } p.pre { (text(&issue["description"])) } }
        section {
            h2 { "Context packets" }
            ul #packets {
                @for (pid, packet) in &packets {
                    @match packet {
                        Some(cp) => {
                            li.packet {
                                b { (text(&cp["summary"])) } " v" (text(&cp["version"])) " " small.mono { (pid) }
                                p { (text(&cp["instructions"])) }
                                (details("the whole packet", cp))
                            }
                        }
                        None => { li.muted { (pid) " (missing)" } }
                    }
                }
                @if packets.is_empty() { li.muted { "None." } }
            }
        }
        section {
            h2 { "Runs and their artifacts" }
            ul #runs {
                @for r in &runs {
                    @let rid = text(&r["id"]);
                    @let task = r["meta"]["jct.task_id"].as_str();
                    li.run id={ "run-" (rid) } {
                        b.mono { (rid) } " " span.status { (text(&r["status"])) } " " (text(&r["mode"])) " · "
                        @if let Some(t) = task { "task " a.mono href={ (root) "ui/tasks/" (t) } { (t) } }
                        " · " (text(&r["created_at"]))
                        @if let Some(m) = r["failure"]["message"].as_str() { p.err { (m) } }
                        ul {
                            @for a in artifacts.iter().filter(|a| a["produced_by"]["id"].as_str() == Some(rid)) {
                                li.artifact {
                                    (text(&a["title"])) " " small { (text(&a["type"])) } " "
                                    (artifact_link(root, text(&a["uri"]), task))
                                }
                            }
                        }
                    }
                }
                @if runs.is_empty() { li.muted { "No runs yet." } }
            }
        }
        section {
            h2 { "Tasks" }
            ul #issue-tasks {
                @for t in &tasks {
                    li { a.mono href={ (root) "ui/tasks/" (t.id) } { (t.id) } " " (t.task_type) " " (status_badge(t.status)) }
                }
            }
            p { a href={ (root) "ui/tasks?cwom_issue_id=" (url_enc(&id)) } { "all tasks of this issue" } }
        }
    };
    Ok(html::page(&ctx.frame(), "Issue", Nav::None, Script::Plain, body))
}

/// A link for an artifact's URI: a task's trace file through the API, an http(s) URI as
/// is, anything else shown as text.
fn artifact_link(root: &str, uri: &str, task: Option<&str>) -> Markup {
    if uri.starts_with("https://") || uri.starts_with("http://") {
        return html! { a href=(uri) rel="noreferrer" { (uri) } };
    }
    if let (Some(task), Some(pos)) = (task, uri.find("/artifacts/")) {
        let name = &uri[pos + "/artifacts/".len()..];
        if crate::trace::is_safe_artifact_name(name) {
            return html! { a href={ (root) "tasks/" (task) "/trace/artifacts/" (url_enc(name)) } download { (name) } };
        }
    }
    html! { code { (uri) } }
}

fn details(summary: &str, v: &Value) -> Markup {
    html! { details { summary { (summary) } pre { (pretty_json(v)) } } }
}

// ---------------------------------------------------------------------------------------
// Schedules

/// `/ui/schedules`: every schedule with its pattern in words, time zone, next fires and
/// last fire (linking its task), and pause/resume/trigger buttons for the full key.
pub async fn schedules(ctx: &Ctx, state: &ApiState) -> PageResult {
    let now = Utc::now();
    let root = &ctx.root;
    let all = state.schedules.list().await.map_err(failed)?;
    let body = html! {
        h1 { "Schedules" }
        table #schedules {
            thead {
                tr {
                    th { "Name" } th { "Cron" } th { "Time zone" } th { "Starts" } th { "Policies" } th { "Next fires" }
                    th { "Last fire" } th {}
                }
            }
            tbody {
                @for s in &all {
                    @let spec = &s.spec;
                    tr.schedule data-name=(spec.name) {
                        td {
                            (spec.name)
                            @if spec.paused { " " span.badge.paused { "paused" } }
                        }
                        td {
                            span.mono { (spec.timing.cron.as_str()) } br;
                            small { (spec.timing.cron.describe()) }
                        }
                        td { (spec.timing.zone.name()) }
                        td {
                            @match &spec.target {
                                Target::Task(t) => { (t.task_type) }
                                Target::Workflow(w) => {
                                    "workflow " (w.name) " (" (w.steps.len()) " steps)"
                                }
                            }
                        }
                        td {
                            "catch-up " (spec.catch_up) " (" (spec.catch_up_window_s) " s), overlap " (spec.overlap)
                        }
                        td {
                            @if spec.paused {
                                span.muted { "paused" }
                            } @else {
                                @for (i, t) in spec.timing.upcoming(now.max(s.fired_through), 3).iter().enumerate() {
                                    @if i > 0 { br; }
                                    span.mono { (time(t)) }
                                }
                            }
                        }
                        td {
                            @match (&s.last_fired_at, &s.last_task_id, &s.last_workflow_id) {
                                (Some(at), Some(id), _) => {
                                    span title=(time(at)) { (age(at, now)) " ago" } br;
                                    (task_link(root, id))
                                }
                                (Some(at), None, Some(w)) => {
                                    span title=(time(at)) { (age(at, now)) " ago" } br;
                                    a.mono href={ (root) "ui/workflows/" (w) } { (w) }
                                }
                                _ => { span.muted { "never" } }
                            }
                        }
                        td {
                            @if ctx.writable() {
                                @let (toggle, label) = if spec.paused { ("resume", "Resume") } else { ("pause", "Pause") };
                                button type="button" data-schedule-action=(toggle) data-name=(spec.name) { (label) }
                                " "
                                button type="button" data-schedule-action="trigger" data-name=(spec.name) {
                                    "Trigger now"
                                }
                            }
                        }
                    }
                }
                @if all.is_empty() {
                    tr {
                        td colspan="8" class="muted" {
                            "No schedule yet (POST /schedules, or JCT_SCHEDULES_FILE)."
                        }
                    }
                }
            }
        }
    };
    Ok(html::page(&ctx.frame(), "Schedules", Nav::Schedules, Script::Plain, body))
}

// ---------------------------------------------------------------------------------------
// Queues

/// A queue's limits in words (`concurrency 2, key_concurrency 1, rate 5 per 60 s`), or
/// `None` when it has none.
fn limits_words(s: &QueueSettings) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(n) = s.concurrency {
        parts.push(format!("concurrency {n}"));
    }
    if let Some(n) = s.key_concurrency {
        parts.push(format!("key_concurrency {n}"));
    }
    if let Some(r) = s.rate {
        parts.push(format!("rate {} per {} s", r.limit, r.per_s));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Why a queued task of `view`'s queue may wait although it is due, or `None`.
fn held_back(view: &QueueView) -> Option<String> {
    if view.settings.paused {
        return Some(format!("held back: queue {} is paused", view.name));
    }
    limits_words(&view.settings).map(|limits| {
        format!("queue {} is limited ({limits}); {} of its tasks running", view.name, view.counts.running)
    })
}

/// The limits form of one queue (`name` given) or of any queue (`name` typed in). Empty
/// fields mean "no limit": the script sends `null` for them.
fn limits_form(name: Option<&str>, s: &QueueSettings) -> Markup {
    use crate::queue::{LIMIT_MAX, RATE_LIMIT_MAX, RATE_WINDOW_MAX_S};
    html! {
        form.queue-limits data-name=[name] autocomplete="off" {
            @if name.is_none() {
                label { "queue " input name="name" required maxlength=(crate::task::limits::QUEUE_MAX); }
            }
            label {
                "concurrency "
                input name="concurrency" type="number" min="1" max=(LIMIT_MAX) placeholder="none" value=[s.concurrency];
            }
            label {
                "key_concurrency "
                input name="key_concurrency" type="number" min="1" max=(LIMIT_MAX) placeholder="none"
                    value=[s.key_concurrency];
            }
            label {
                "rate: starts "
                input name="rate_limit" type="number" min="1" max=(RATE_LIMIT_MAX) placeholder="none"
                    value=[s.rate.map(|r| r.limit)];
            }
            label {
                "per seconds "
                input name="rate_per_s" type="number" min="0.001" step="any" max=(RATE_WINDOW_MAX_S) placeholder="none"
                    value=[s.rate.map(|r| r.per_s)];
            }
            button type="submit" { "Save limits" }
            " "
            span.error {}
        }
    }
}

/// `/ui/queues`: every queue with a setting or a live task, its counts and limits, and for
/// the full key a pause/resume button and a limits form per queue (plus one for a queue
/// nobody has used yet: settings create it).
pub async fn queues(ctx: &Ctx, state: &ApiState) -> PageResult {
    let root = &ctx.root;
    let all = state.queues.list().await.map_err(failed)?;
    let limit = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "–".into());
    let body = html! {
        h1 { "Queues" }
        @if ctx.writable() {
            details.enqueue #queue-new {
                summary { "Limits for another queue" }
                (limits_form(None, &QueueSettings::default()))
            }
        }
        table #queue-list {
            thead {
                tr {
                    th { "queue" } th { "queued" } th { "running" } th { "waiting" } th { "concurrency" }
                    th { "key_concurrency" } th { "rate" } th {}
                }
            }
            tbody {
                @for q in &all {
                    @let s = &q.settings;
                    tr.queue data-name=(q.name) data-paused=(s.paused) {
                        td {
                            a href={ (root) "ui/tasks?queue=" (url_enc(&q.name)) } { (q.name) }
                            @if s.paused { " " span.badge.paused { "paused" } }
                        }
                        td.queued { (q.counts.queued) }
                        td.running { (q.counts.running) }
                        td.waiting { (q.counts.waiting) }
                        td.concurrency { (limit(s.concurrency)) }
                        td.key-concurrency { (limit(s.key_concurrency)) }
                        td.rate {
                            @match s.rate {
                                Some(r) => { (r.limit) " per " (r.per_s) " s" }
                                None => "–",
                            }
                        }
                        td {
                            @if ctx.writable() {
                                @let (action, label) = if s.paused { ("resume", "Resume") } else { ("pause", "Pause") };
                                button type="button" data-queue-action=(action) data-name=(q.name) { (label) }
                                details.limits {
                                    summary { "Edit limits" }
                                    (limits_form(Some(&q.name), s))
                                }
                            }
                        }
                    }
                }
                @if all.is_empty() {
                    tr { td colspan="8" class="muted" id="no-queues" { "No queue has a setting or a live task." } }
                }
            }
        }
        p.note {
            "Limits hold across every daemon and remote worker; a paused queue is not claimed from, and its \
             running tasks go on. An empty field is no limit."
        }
    };
    Ok(html::page(&ctx.frame(), "Queues", Nav::Queues, Script::Plain, body))
}
