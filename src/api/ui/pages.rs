//! The dashboard's views, each read through the same services as the API: overview,
//! tasks (filters and keyset paging), one task (fields, trace files, live log, CWOM
//! links, what holds it back in its queue), workers, schedules, queues (counts, limits,
//! pause), and a CWOM Issue with its context packets, runs and artifacts.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::Value;
use warp::http::StatusCode;

use super::html::{self, age, count, esc, json_pre, opt_time, time, url_enc, Nav};
use super::{Ctx, PageResult};
use crate::api::{ApiError, ApiState};
use crate::cwom::requests::{ListFilter, ListQuery};
use crate::cwom::types::{Object, ObjectKind};
use crate::queue::{QueueSettings, QueueView};
use crate::registration::WorkerState;
use crate::store::MinuteCounts;
use crate::task::{Task, TaskFilter, TaskId, TaskStatus};
use crate::tunables::{UI_CHART_MINUTES, UI_COUNT_CAP, UI_PAGE_SIZE, UI_REFRESH};

/// Most bytes of a trace file shown inline (the whole file is a download away).
const INLINE_MAX: usize = 256 * 1024;

fn failed(e: impl Into<ApiError>) -> (StatusCode, String) {
    let e = e.into();
    (e.status(), e.to_string())
}

fn status_badge(status: TaskStatus) -> String {
    format!("<span class=\"status s-{0}\">{0}</span>", status.as_str())
}

// ---------------------------------------------------------------------------------------
// Overview

pub async fn overview(ctx: &Ctx, state: &ApiState) -> PageResult {
    let now = Utc::now();
    let since = now - ChronoDuration::minutes(UI_CHART_MINUTES);
    let ov = state.store.overview(UI_COUNT_CAP, since).await.map_err(failed)?;
    let workers = state.remote.list_workers().await.map_err(failed)?;
    let alive = workers.iter().filter(|w| w.state == WorkerState::Alive).count();
    let root = &ctx.root;

    let mut cards = String::new();
    for (status, c) in &ov.by_status {
        cards.push_str(&format!(
            "<a class=\"card s-{s}\" id=\"count-{s}\" href=\"{root}ui/tasks?status={s}\"><span class=\"n\">{n}</span><span class=\"label\">{s}</span></a>",
            s = status.as_str(),
            n = count(c.n, c.capped),
        ));
    }
    let oldest = match ov.oldest_queued_at {
        Some(t) => format!("<span id=\"oldest-queued\">{}</span> <small>(since {})</small>", age(&t, now), time(&t)),
        None => "<span id=\"oldest-queued\">none queued</span>".into(),
    };
    let mut queues = String::new();
    for (queue, queued, running) in &ov.active_by_queue {
        queues.push_str(&format!(
            "<tr><td><a href=\"{root}ui/tasks?queue={q}\">{qe}</a></td><td>{queued}</td><td>{running}</td></tr>",
            q = url_enc(queue),
            qe = esc(queue),
        ));
    }
    if queues.is_empty() {
        queues.push_str("<tr><td colspan=\"3\" class=\"muted\">No queued or running tasks.</td></tr>");
    }
    let queue_note = if ov.active_by_queue_capped {
        format!("<p class=\"note\">Counted from the first {} active tasks only.</p>", count(UI_COUNT_CAP, false))
    } else {
        String::new()
    };
    let capped_note = if ov.by_status.iter().any(|(_, c)| c.capped) {
        format!(
            "<p class=\"note\" id=\"capped-note\">Counts stop at {}: a “+” means at least that many (counting every row of a large table on each view would be slow).</p>",
            count(UI_COUNT_CAP, false)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Overview</h1>\
<section class=\"cards\" id=\"status-counts\">{cards}</section>{capped_note}\
<section class=\"facts\"><div>Oldest queued task: {oldest}</div>\
<div>Remote workers alive: <a href=\"{root}ui/workers\" id=\"workers-alive\">{alive}</a> of {total}</div></section>\
<section><h2>Completions and failures per minute, last {mins} minutes</h2>{chart}</section>\
<section><h2>Active tasks by queue</h2><table id=\"queues\"><thead><tr><th>queue</th><th>queued</th><th>running</th></tr></thead><tbody>{queues}</tbody></table>{queue_note}</section>",
        total = workers.len(),
        mins = UI_CHART_MINUTES,
        chart = chart(&ov.per_minute, now),
    );
    let data = format!(" data-refresh=\"{}\"", UI_REFRESH.as_millis());
    Ok(html::page(&ctx.frame(), "Overview", Nav::Overview, &data, &body))
}

/// An inline SVG bar chart: one stacked bar (completed, failed) per minute of the window.
fn chart(minutes: &[MinuteCounts], now: chrono::DateTime<Utc>) -> String {
    let (w, h, n) = (720.0_f64, 140.0_f64, UI_CHART_MINUTES);
    let max = minutes.iter().map(|m| m.completed + m.failed).max().unwrap_or(0).max(1) as f64;
    let slot = w / n as f64;
    let start = now - ChronoDuration::minutes(n);
    let mut bars = String::new();
    let (mut total_c, mut total_f) = (0, 0);
    for m in minutes {
        let i = (m.minute - start).num_seconds() as f64 / 60.0;
        if !(0.0..n as f64 + 1.0).contains(&i) {
            continue;
        }
        total_c += m.completed;
        total_f += m.failed;
        let x = (i.floor().min(n as f64 - 1.0)) * slot;
        let hc = m.completed as f64 / max * (h - 20.0);
        let hf = m.failed as f64 / max * (h - 20.0);
        let label = format!("{}: {} completed, {} failed", m.minute.format("%H:%M"), m.completed, m.failed);
        bars.push_str(&format!(
            "<g><title>{label}</title><rect class=\"c\" x=\"{x:.1}\" y=\"{yc:.1}\" width=\"{bw:.1}\" height=\"{hc:.1}\"/>\
<rect class=\"f\" x=\"{x:.1}\" y=\"{yf:.1}\" width=\"{bw:.1}\" height=\"{hf:.1}\"/></g>",
            yc = h - hc,
            yf = h - hc - hf,
            bw = (slot - 2.0).max(1.0),
        ));
    }
    format!(
        "<svg id=\"chart\" class=\"chart\" viewBox=\"0 0 {w} {vh}\" role=\"img\" aria-label=\"completions and failures per minute\">\
<line class=\"axis\" x1=\"0\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\"/>{bars}\
<text x=\"0\" y=\"{ty}\">−{n} min</text><text x=\"{w}\" y=\"{ty}\" text-anchor=\"end\">now</text>\
<text x=\"2\" y=\"12\">max {max}/min</text></svg>\
<p class=\"legend\"><span class=\"key c\"></span> completed <b id=\"chart-completed\">{total_c}</b> <span class=\"key f\"></span> failed <b id=\"chart-failed\">{total_f}</b></p>",
        vh = h + 16.0,
        ty = h + 14.0,
        max = max as u64,
    )
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

    let form_value = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| esc(v)).unwrap_or_default();
    let mut status_options = String::from("<option value=\"\">any</option>");
    for s in TaskStatus::ALL {
        let selected = if filter.status == Some(s) { " selected" } else { "" };
        status_options.push_str(&format!("<option{selected}>{}</option>", s.as_str()));
    }
    let type_list: String = known.iter().map(|t| format!("<option value=\"{}\">", esc(t))).collect();
    let filters = format!(
        "<form method=\"get\" action=\"{root}ui/tasks\" class=\"filters\" id=\"filters\">\
<label>status <select name=\"status\" id=\"f-status\">{status_options}</select></label>\
<label>type <input name=\"type\" id=\"f-type\" list=\"known-types\" value=\"{t}\"></label>\
<label>queue <input name=\"queue\" id=\"f-queue\" value=\"{q}\"></label>\
<label>CWOM issue <input name=\"cwom_issue_id\" id=\"f-issue\" value=\"{i}\"></label>\
<button type=\"submit\" id=\"f-apply\">Filter</button> <a href=\"{root}ui/tasks\">clear</a></form>\
<datalist id=\"known-types\">{type_list}</datalist>",
        t = form_value("type"),
        q = form_value("queue"),
        i = form_value("cwom_issue_id"),
    );

    let mut rows = String::new();
    for t in &list {
        let check = if ctx.writable() {
            format!("<td><input type=\"checkbox\" class=\"sel\" value=\"{}\" aria-label=\"select\"></td>", t.id)
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr data-id=\"{id}\">{check}<td><a class=\"mono\" href=\"{root}ui/tasks/{id}\">{short}</a></td><td>{ty}</td><td>{st}</td>\
<td>{queue}</td><td>{att}/{max}</td><td title=\"{created}\">{created}</td><td class=\"err\">{err}</td></tr>",
            id = t.id,
            short = &t.id.to_string()[..13],
            ty = esc(&t.task_type),
            st = status_badge(t.status),
            queue = esc(&t.queue),
            att = t.attempts,
            max = t.max_attempts,
            created = time(&t.created_at),
            err = esc(&truncate(t.last_error.as_deref().unwrap_or(""), 120)),
        ));
    }
    let select_head = if ctx.writable() {
        "<th><input type=\"checkbox\" id=\"select-all\" aria-label=\"select all\"></th>"
    } else {
        ""
    };
    if rows.is_empty() {
        rows = "<tr><td colspan=\"8\" class=\"muted\" id=\"no-tasks\">No tasks match.</td></tr>".into();
    }
    // Keyset paging: the next page starts below the last id shown.
    let mut keep: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != "before" && k != "offset")
        .map(|(k, v)| format!("{}={}", url_enc(k), url_enc(v)))
        .collect();
    let first_href = format!("{root}ui/tasks?{}", keep.join("&"));
    let next = match list.last() {
        Some(last) if list.len() as u32 == filter.limit => {
            keep.push(format!("before={}", last.id));
            format!("<a id=\"next-page\" href=\"{root}ui/tasks?{}\">Older →</a>", keep.join("&"))
        }
        _ => String::new(),
    };
    let first = if filter.before.is_some() {
        format!("<a id=\"first-page\" href=\"{first_href}\">← Newest</a>")
    } else {
        String::new()
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
    let actions = if ctx.writable() {
        format!(
            "<div class=\"bulk\" id=\"bulk\" data-filter=\"{f}\">\
<button type=\"button\" data-bulk=\"cancel\" data-scope=\"ids\" id=\"bulk-cancel-selected\">Cancel selected</button>\
<button type=\"button\" data-bulk=\"retry\" data-scope=\"ids\" id=\"bulk-retry-selected\">Retry selected</button>\
<button type=\"button\" data-bulk=\"cancel\" data-scope=\"filter\" id=\"bulk-cancel-filter\">Cancel all matching</button>\
<button type=\"button\" data-bulk=\"retry\" data-scope=\"filter\" id=\"bulk-retry-filter\">Retry all matching</button></div>",
            f = esc(&Value::Object(filter_json).to_string()),
        )
    } else {
        String::new()
    };
    let enqueue = if ctx.writable() { enqueue_form(&known) } else { String::new() };
    let body = format!(
        "<h1>Tasks</h1>{enqueue}{filters}{actions}\
<table id=\"tasks\"><thead><tr>{select_head}<th>id</th><th>type</th><th>status</th><th>queue</th><th>attempts</th><th>created</th><th>last error</th></tr></thead>\
<tbody>{rows}</tbody></table><p class=\"paging\">{first} <span class=\"muted\">{n} shown, newest first</span> {next}</p>",
        n = list.len(),
    );
    Ok(html::page(&ctx.frame(), "Tasks", Nav::Tasks, "", &body))
}

fn enqueue_form(known: &[String]) -> String {
    let type_list: String = known.iter().map(|t| format!("<option value=\"{}\">", esc(t))).collect();
    format!(
        "<details class=\"enqueue\" id=\"enqueue-box\"><summary>Enqueue a task</summary>\
<form id=\"enqueue\" autocomplete=\"off\">\
<label>type <input name=\"type\" id=\"e-type\" list=\"enqueue-types\" required maxlength=\"128\"></label>\
<label>queue <input name=\"queue\" id=\"e-queue\" placeholder=\"default\"></label>\
<label>priority <input name=\"priority\" id=\"e-priority\" type=\"number\" value=\"0\"></label>\
<label class=\"wide\">payload (JSON) <textarea name=\"payload\" id=\"e-payload\" rows=\"4\">{{}}</textarea></label>\
<button type=\"submit\" id=\"e-submit\">Enqueue</button> <span class=\"error\" id=\"e-error\"></span></form>\
<datalist id=\"enqueue-types\">{type_list}</datalist></details>"
    )
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
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

    let actions = if ctx.writable() {
        let cancel = matches!(task.status, TaskStatus::Queued | TaskStatus::Running);
        let retry = matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled);
        format!(
            "<div class=\"actions\">{}{}</div>",
            if cancel {
                format!("<button type=\"button\" data-action=\"cancel\" data-id=\"{id}\" id=\"cancel\">Cancel</button>")
            } else {
                String::new()
            },
            if retry {
                format!("<button type=\"button\" data-action=\"retry\" data-id=\"{id}\" id=\"retry\">Retry</button>")
            } else {
                String::new()
            },
        )
    } else {
        String::new()
    };

    let issue_link = match &task.cwom_issue_id {
        Some(issue) => format!("<a id=\"issue-link\" href=\"{root}ui/issues/{}\">{}</a>", url_enc(issue), esc(issue)),
        None => "–".into(),
    };
    let runs = task_runs(state, &task).await;
    let run_links = if runs.is_empty() {
        "–".to_string()
    } else {
        runs.iter()
            .map(|r| {
                let rid = r["id"].as_str().unwrap_or("");
                format!(
                    "<a class=\"run-link\" href=\"{root}ui/issues/{}#run-{}\">{}</a> (attempt {}, {})",
                    url_enc(task.cwom_issue_id.as_deref().unwrap_or("")),
                    esc(rid),
                    esc(rid),
                    r["meta"]["jct.attempt"].as_i64().unwrap_or(0),
                    esc(r["status"].as_str().unwrap_or("")),
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
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
    let held = held.map(|h| format!("<p class=\"note held\" id=\"held-back\">{}</p>", esc(&h))).unwrap_or_default();
    let field = |name: &str, value: String| {
        format!("<div><span class=\"k\">{name}</span><span class=\"v\">{value}</span></div>")
    };
    let fields = [
        field("id", format!("<span class=\"mono\" id=\"task-id\">{id}</span>")),
        field("status", format!("<span id=\"status\">{}</span>", status_badge(task.status))),
        field("type", esc(&task.task_type)),
        field("queue", format!("<a href=\"{root}ui/queues\" id=\"task-queue\">{}</a>", esc(&task.queue))),
        task.concurrency_key
            .as_deref()
            .map(|k| field("concurrency key", format!("<span class=\"mono\" id=\"concurrency-key\">{}</span>", esc(k))))
            .unwrap_or_default(),
        field("priority", task.priority.to_string()),
        field("attempts", format!("{} of {}", task.attempts, task.max_attempts)),
        field("timeout", format!("{} s", task.timeout_seconds)),
        field("run at", time(&task.run_at)),
        field("created", time(&task.created_at)),
        field("updated", time(&task.updated_at)),
        field("started", opt_time(&task.started_at)),
        field("finished", opt_time(&task.finished_at)),
        field("locked by", esc(task.locked_by.as_deref().unwrap_or("–"))),
        field("lease until", opt_time(&task.locked_until)),
        field("idempotency key", esc(task.idempotency_key.as_deref().unwrap_or("–"))),
        field("trace id", esc(task.trace_id.as_deref().unwrap_or("–"))),
        field("CWOM issue", issue_link),
        field("CWOM runs", run_links),
        field(
            "last error",
            format!("<span class=\"err\" id=\"last-error\">{}</span>", esc(task.last_error.as_deref().unwrap_or("–"))),
        ),
    ]
    .concat();

    let trace = format!("{root}tasks/{id}/trace/");
    let file_section = |name: &str, content: Option<Vec<u8>>, el: &str| -> String {
        match content {
            Some(bytes) => {
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(INLINE_MAX)]).into_owned();
                let more = if bytes.len() > INLINE_MAX {
                    "<p class=\"note\">Cut at 256 KiB; download for the rest.</p>"
                } else {
                    ""
                };
                format!(
                    "<section><h2>{name} <a class=\"download\" href=\"{trace}{name}\" download>download</a></h2><pre id=\"{el}\">{}</pre>{more}</section>",
                    esc(&shown)
                )
            }
            None => format!("<section><h2>{name}</h2><p class=\"muted\" id=\"{el}\">Not written (yet).</p></section>"),
        }
    };
    let log_section = if follow {
        format!(
            "<section><h2>log.txt <span class=\"badge live\" id=\"live\">live</span> <a class=\"download\" href=\"{trace}log.txt\" download>download</a></h2><pre id=\"log\"></pre></section>"
        )
    } else {
        file_section("log.txt", log, "log")
    };
    let mut artifact_rows = String::new();
    for name in &artifacts {
        artifact_rows.push_str(&format!(
            "<li><a class=\"artifact\" href=\"{trace}artifacts/{}\" download>{}</a></li>",
            url_enc(name),
            esc(name)
        ));
    }
    let artifacts_html = if artifact_rows.is_empty() {
        "<p class=\"muted\">None.</p>".to_string()
    } else {
        format!("<ul id=\"artifacts\">{artifact_rows}</ul>")
    };
    let result = match &task.result {
        Some(v) => format!("<section><h2>result</h2><pre id=\"result\">{}</pre></section>", json_pre(v)),
        None => String::new(),
    };
    let body = format!(
        "<h1>Task <span class=\"mono\">{short}</span></h1>{actions}{held}\
<div class=\"grid\" id=\"fields\">{fields}</div>\
{log_section}<p class=\"note\">Every attempt appends to log.txt after a header line; input.json and output.json are the latest attempt's, output.attempt-N.json the end of attempt N.</p>\
<section><h2>payload</h2><pre id=\"payload\">{payload}</pre></section>{result}{input}{output}{earlier}<section><h2>artifacts</h2>{artifacts_html}</section>",
        short = &id.to_string()[..13],
        payload = json_pre(&task.payload),
        input = file_section("input.json", input, "input"),
        output = file_section("output.json", output, "output"),
        earlier = earlier
            .into_iter()
            .map(|(name, bytes)| file_section(&name, Some(bytes), &name.replace('.', "-")))
            .collect::<String>(),
    );
    let data = format!(
        " data-task=\"{id}\" data-status=\"{}\" data-follow=\"{}\"",
        task.status.as_str(),
        if follow { "1" } else { "0" }
    );
    Ok(html::page(&ctx.frame(), &format!("Task {}", &id.to_string()[..8]), Nav::Tasks, &data, &body))
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
    let task_links = |holder: &str| -> String {
        running
            .iter()
            .filter(|t| t.locked_by.as_deref() == Some(holder))
            .map(|t| {
                format!(
                    "<a class=\"mono\" href=\"{root}ui/tasks/{0}\">{1}</a> {2}",
                    t.id,
                    &t.id.to_string()[..13],
                    esc(&t.task_type)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let mut rows = String::new();
    for w in &workers {
        let r = &w.record;
        let state_class = match w.state {
            WorkerState::Alive => "alive",
            WorkerState::Dead => "dead",
        };
        rows.push_str(&format!(
            "<tr class=\"worker\"><td>{name}<br><small class=\"mono\">{id}</small></td><td>{types}</td><td>{queues}</td>\
<td>{running}/{slots}</td><td title=\"{hb}\">{ago} ago</td><td><span class=\"badge {state_class}\">{state_class}</span></td><td>{tasks}</td></tr>",
            name = esc(&r.name),
            id = esc(&r.worker_id.0),
            types = esc(&r.types.join(", ")),
            queues = esc(&r.queues.as_ref().map(|q| q.join(", ")).unwrap_or_else(|| "all".into())),
            running = w.running,
            slots = r.max_slots,
            hb = time(&r.last_heartbeat_at),
            ago = age(&r.last_heartbeat_at, now),
            tasks = task_links(&r.worker_id.0),
        ));
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=\"7\" class=\"muted\">No remote worker has registered.</td></tr>".into();
    }
    // Tasks held by daemons' own in-process workers (not in the registry).
    let registered: Vec<&str> = workers.iter().map(|w| w.record.worker_id.0.as_str()).collect();
    let mut holders: Vec<&str> =
        running.iter().filter_map(|t| t.locked_by.as_deref()).filter(|h| !registered.contains(h)).collect();
    holders.sort();
    holders.dedup();
    let mut local = String::new();
    for h in holders {
        local.push_str(&format!("<tr><td class=\"mono\">{}</td><td>{}</td></tr>", esc(h), task_links(h)));
    }
    if local.is_empty() {
        local = "<tr><td colspan=\"2\" class=\"muted\">None running.</td></tr>".into();
    }
    let body = format!(
        "<h1>Workers</h1><h2>Remote workers</h2>\
<table id=\"workers\"><thead><tr><th>name</th><th>types</th><th>queues</th><th>running/slots</th><th>last heartbeat</th><th>state</th><th>running tasks</th></tr></thead><tbody>{rows}</tbody></table>\
<h2>In-process workers</h2><table id=\"local-workers\"><thead><tr><th>worker</th><th>running tasks</th></tr></thead><tbody>{local}</tbody></table>"
    );
    let data = format!(" data-refresh=\"{}\"", UI_REFRESH.as_millis());
    Ok(html::page(&ctx.frame(), "Workers", Nav::Workers, &data, &body))
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
    let s = |v: &Value| esc(v.as_str().unwrap_or(""));

    let mut packets = String::new();
    for r in issue["context_packets"].as_array().into_iter().flatten() {
        let pid = r["id"].as_str().unwrap_or("");
        match state.cwom.get(ObjectKind::ContextPacket, pid).await {
            Ok(p) => {
                let p = serde_json::to_value(p).unwrap_or_default();
                packets.push_str(&format!(
                    "<li class=\"packet\"><b>{}</b> v{} <small class=\"mono\">{}</small><p>{}</p>{}</li>",
                    s(&p["summary"]),
                    s(&p["version"]),
                    esc(pid),
                    s(&p["instructions"]),
                    details("the whole packet", &p),
                ));
            }
            Err(_) => packets.push_str(&format!("<li class=\"muted\">{} (missing)</li>", esc(pid))),
        }
    }
    if packets.is_empty() {
        packets = "<li class=\"muted\">None.</li>".into();
    }

    let runs = runs_of(state, &id).await;
    let mut aq =
        ListQuery::new(ListFilter::Artifacts { run_id: None, issue_id: Some(id.clone()), artifact_type: None });
    aq.limit = ListQuery::MAX_LIMIT;
    let artifacts: Vec<Value> = match state.cwom.list(&aq).await {
        Ok(list) => list.iter().filter_map(|o| serde_json::to_value(o).ok()).collect(),
        Err(e) => return Err(failed(e)),
    };
    let mut run_html = String::new();
    for r in &runs {
        let rid = r["id"].as_str().unwrap_or("");
        let task_link = match r["meta"]["jct.task_id"].as_str() {
            Some(t) => format!("task <a class=\"mono\" href=\"{root}ui/tasks/{0}\">{0}</a>", esc(t)),
            None => String::new(),
        };
        let arts: String = artifacts
            .iter()
            .filter(|a| a["produced_by"]["id"].as_str() == Some(rid))
            .map(|a| {
                let uri = a["uri"].as_str().unwrap_or("");
                let link = artifact_href(root, uri, r["meta"]["jct.task_id"].as_str());
                format!("<li class=\"artifact\">{} <small>{}</small> {}</li>", s(&a["title"]), s(&a["type"]), link)
            })
            .collect();
        let failure = match r["failure"]["message"].as_str() {
            Some(m) => format!("<p class=\"err\">{}</p>", esc(m)),
            None => String::new(),
        };
        run_html.push_str(&format!(
            "<li class=\"run\" id=\"run-{rid_e}\"><b class=\"mono\">{rid_e}</b> <span class=\"status\">{st}</span> {mode} · {task_link} · {created}{failure}<ul>{arts}</ul></li>",
            rid_e = esc(rid),
            st = s(&r["status"]),
            mode = s(&r["mode"]),
            created = s(&r["created_at"]),
        ));
    }
    if run_html.is_empty() {
        run_html = "<li class=\"muted\">No runs yet.</li>".into();
    }
    let tasks = state
        .store
        .list(&TaskFilter { cwom_issue_id: Some(id.clone()), limit: 100, ..TaskFilter::default() })
        .await
        .map_err(failed)?;
    let task_rows: String = tasks
        .iter()
        .map(|t| {
            format!(
                "<li><a class=\"mono\" href=\"{root}ui/tasks/{0}\">{0}</a> {1} {2}</li>",
                t.id,
                esc(&t.task_type),
                status_badge(t.status)
            )
        })
        .collect();
    let body = format!(
        "<h1>Issue: <span id=\"issue-title\">{title}</span></h1>\
<table class=\"fields\"><tr><th>id</th><td class=\"mono\">{id_e}</td></tr><tr><th>status</th><td>{status}</td></tr>\
<tr><th>type</th><td>{ty}</td></tr><tr><th>priority</th><td>{prio}</td></tr><tr><th>repo</th><td class=\"mono\">{repo}</td></tr></table>\
<section><h2>description</h2><p class=\"pre\">{desc}</p></section>\
<section><h2>Context packets</h2><ul id=\"packets\">{packets}</ul></section>\
<section><h2>Runs and their artifacts</h2><ul id=\"runs\">{run_html}</ul></section>\
<section><h2>Tasks</h2><ul id=\"issue-tasks\">{task_rows}</ul><p><a href=\"{root}ui/tasks?cwom_issue_id={id_u}\">all tasks of this issue</a></p></section>",
        title = s(&issue["title"]),
        id_e = esc(&id),
        id_u = url_enc(&id),
        status = s(&issue["status"]),
        ty = s(&issue["type"]),
        prio = s(&issue["priority"]),
        repo = s(&issue["repo"]["id"]),
        desc = s(&issue["description"]),
    );
    Ok(html::page(&ctx.frame(), "Issue", Nav::None, "", &body))
}

/// A link for an artifact's URI: a task's trace file through the API, an http(s) URI as
/// is, anything else shown as text.
fn artifact_href(root: &str, uri: &str, task: Option<&str>) -> String {
    if uri.starts_with("https://") || uri.starts_with("http://") {
        return format!("<a href=\"{0}\" rel=\"noreferrer\">{0}</a>", esc(uri));
    }
    if let (Some(task), Some(pos)) = (task, uri.find("/artifacts/")) {
        let name = &uri[pos + "/artifacts/".len()..];
        if crate::trace::is_safe_artifact_name(name) {
            return format!(
                "<a href=\"{root}tasks/{}/trace/artifacts/{}\" download>{}</a>",
                esc(task),
                url_enc(name),
                esc(name)
            );
        }
    }
    format!("<code>{}</code>", esc(uri))
}

fn details(summary: &str, v: &Value) -> String {
    format!("<details><summary>{}</summary><pre>{}</pre></details>", esc(summary), json_pre(v))
}

/// `/ui/schedules`: every schedule with its pattern in words, time zone, next fires and
/// last fire (linking its task), and pause/resume/trigger buttons for the full key.
pub async fn schedules(ctx: &Ctx, state: &ApiState) -> PageResult {
    let now = Utc::now();
    let root = &ctx.root;
    let all = state.schedules.list().await.map_err(failed)?;
    let mut rows = String::new();
    for s in &all {
        let spec = &s.spec;
        let name = esc(&spec.name);
        let upcoming = if spec.paused {
            "<span class=\"muted\">paused</span>".to_string()
        } else {
            spec.timing
                .upcoming(now.max(s.fired_through), 3)
                .iter()
                .map(|t| format!("<span class=\"mono\">{}</span>", esc(&time(t))))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let last = match (&s.last_fired_at, &s.last_task_id) {
            (Some(at), Some(id)) => format!(
                "<span title=\"{t}\">{ago} ago</span><br><a class=\"mono\" href=\"{root}ui/tasks/{id}\">{short}</a>",
                t = esc(&time(at)),
                ago = esc(&age(at, now)),
                id = esc(&id.to_string()),
                short = esc(&id.to_string()[..13]),
            ),
            _ => "<span class=\"muted\">never</span>".to_string(),
        };
        let buttons = if ctx.writable() {
            let toggle = if spec.paused { "resume" } else { "pause" };
            let label = if spec.paused { "Resume" } else { "Pause" };
            format!(
                "<button type=\"button\" data-schedule-action=\"{toggle}\" data-name=\"{name}\">{label}</button> \
                 <button type=\"button\" data-schedule-action=\"trigger\" data-name=\"{name}\">Trigger now</button>"
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr class=\"schedule\" data-name=\"{name}\"><td>{name}{badge}</td><td><span class=\"mono\">{cron}</span><br>\
<small>{words}</small></td><td>{zone}</td><td>{task}</td><td>{policies}</td><td>{upcoming}</td><td>{last}</td><td>{buttons}</td></tr>",
            badge = if spec.paused { " <span class=\"badge paused\">paused</span>" } else { "" },
            cron = esc(spec.timing.cron.as_str()),
            words = esc(&spec.timing.cron.describe()),
            zone = esc(spec.timing.zone.name()),
            task = esc(&spec.task.task_type),
            policies = esc(&format!(
                "catch-up {} ({} s), overlap {}",
                spec.catch_up, spec.catch_up_window_s, spec.overlap
            )),
        ));
    }
    if rows.is_empty() {
        rows =
            "<tr><td colspan=\"8\" class=\"muted\">No schedule yet (POST /schedules, or JCT_SCHEDULES_FILE).</td></tr>"
                .into();
    }
    let body = format!(
        "<h1>Schedules</h1><table id=\"schedules\"><thead><tr><th>Name</th><th>Cron</th><th>Time zone</th><th>Task</th>\
<th>Policies</th><th>Next fires</th><th>Last fire</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
    );
    Ok(html::page(&ctx.frame(), "Schedules", Nav::Schedules, "", &body))
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
fn limits_form(name: Option<&str>, s: &QueueSettings) -> String {
    let value = |v: Option<String>| v.map(|v| format!(" value=\"{}\"", esc(&v))).unwrap_or_default();
    let (data, name_field) = match name {
        Some(n) => (format!(" data-name=\"{}\"", esc(n)), String::new()),
        None => (
            String::new(),
            format!(
                "<label>queue <input name=\"name\" required maxlength=\"{}\"></label>",
                crate::task::limits::QUEUE_MAX
            ),
        ),
    };
    format!(
        "<form class=\"queue-limits\"{data} autocomplete=\"off\">{name_field}\
<label>concurrency <input name=\"concurrency\" type=\"number\" min=\"1\" max=\"{max}\" placeholder=\"none\"{c}></label>\
<label>key_concurrency <input name=\"key_concurrency\" type=\"number\" min=\"1\" max=\"{max}\" placeholder=\"none\"{k}></label>\
<label>rate: starts <input name=\"rate_limit\" type=\"number\" min=\"1\" max=\"{rmax}\" placeholder=\"none\"{rl}></label>\
<label>per seconds <input name=\"rate_per_s\" type=\"number\" min=\"0.001\" step=\"any\" max=\"{wmax}\" placeholder=\"none\"{rp}></label>\
<button type=\"submit\">Save limits</button> <span class=\"error\"></span></form>",
        max = crate::queue::LIMIT_MAX,
        rmax = crate::queue::RATE_LIMIT_MAX,
        wmax = crate::queue::RATE_WINDOW_MAX_S,
        c = value(s.concurrency.map(|n| n.to_string())),
        k = value(s.key_concurrency.map(|n| n.to_string())),
        rl = value(s.rate.map(|r| r.limit.to_string())),
        rp = value(s.rate.map(|r| r.per_s.to_string())),
    )
}

/// `/ui/queues`: every queue with a setting or a live task, its counts and limits, and for
/// the full key a pause/resume button and a limits form per queue (plus one for a queue
/// nobody has used yet: settings create it).
pub async fn queues(ctx: &Ctx, state: &ApiState) -> PageResult {
    let root = &ctx.root;
    let all = state.queues.list().await.map_err(failed)?;
    let mut rows = String::new();
    for q in &all {
        let s = &q.settings;
        let name = esc(&q.name);
        let controls = if ctx.writable() {
            let (action, label) = if s.paused { ("resume", "Resume") } else { ("pause", "Pause") };
            format!(
                "<button type=\"button\" data-queue-action=\"{action}\" data-name=\"{name}\">{label}</button>\
<details class=\"limits\"><summary>Edit limits</summary>{}</details>",
                limits_form(Some(&q.name), s)
            )
        } else {
            String::new()
        };
        let limit = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "–".into());
        rows.push_str(&format!(
            "<tr class=\"queue\" data-name=\"{name}\" data-paused=\"{paused}\"><td><a href=\"{root}ui/tasks?queue={enc}\">{name}</a>{badge}</td>\
<td class=\"queued\">{queued}</td><td class=\"running\">{running}</td><td class=\"waiting\">{waiting}</td>\
<td class=\"concurrency\">{conc}</td><td class=\"key-concurrency\">{key}</td><td class=\"rate\">{rate}</td><td>{controls}</td></tr>",
            enc = url_enc(&q.name),
            paused = s.paused,
            badge = if s.paused { " <span class=\"badge paused\">paused</span>" } else { "" },
            queued = q.counts.queued,
            running = q.counts.running,
            waiting = q.counts.waiting,
            conc = limit(s.concurrency),
            key = limit(s.key_concurrency),
            rate = s.rate.map(|r| format!("{} per {} s", r.limit, r.per_s)).unwrap_or_else(|| "–".into()),
        ));
    }
    if rows.is_empty() {
        rows =
            "<tr><td colspan=\"8\" class=\"muted\" id=\"no-queues\">No queue has a setting or a live task.</td></tr>"
                .into();
    }
    let another = if ctx.writable() {
        format!(
            "<details class=\"enqueue\" id=\"queue-new\"><summary>Limits for another queue</summary>{}</details>",
            limits_form(None, &QueueSettings::default())
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Queues</h1>{another}<table id=\"queue-list\"><thead><tr><th>queue</th><th>queued</th><th>running</th>\
<th>waiting</th><th>concurrency</th><th>key_concurrency</th><th>rate</th><th></th></tr></thead><tbody>{rows}</tbody></table>\
<p class=\"note\">Limits hold across every daemon and remote worker; a paused queue is not claimed from, and its running tasks go on. \
An empty field is no limit.</p>"
    );
    Ok(html::page(&ctx.frame(), "Queues", Nav::Queues, "", &body))
}
