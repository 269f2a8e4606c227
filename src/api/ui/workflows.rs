//! The dashboard's workflow views: the list (filters, keyset paging, steps by status), one
//! workflow (its graph drawn as inline SVG, kept live by the page's script, and a paged
//! table of its steps), and the workflow part of a step's task page (its parents and
//! dependants).
//!
//! The graph is laid out here, in Rust, with no script library: each step on the layer of
//! its longest path from a root (so every edge points right), steps in a layer ordered by
//! where their parents are (one barycenter pass), edges as curves from a parent's right side
//! to a child's left. At most [`UI_GRAPH_MAX`] steps are drawn, the first layers first, and
//! the page says so; the table pages through every step.

use std::collections::HashMap;

use chrono::Utc;
use maud::{html, Markup};
use warp::http::StatusCode;

use super::html::{self, age, count, failed, field, opt_time, status_badge, time, truncate, url_enc, Nav, Script};
use super::{Ctx, PageResult};
use crate::api::{ApiError, ApiState};
use crate::task::{Task, TaskStatus};
use crate::tunables::{
    UI_GRAPH_MAX, UI_PAGE_SIZE, UI_STEPS_PAGE, UI_STEP_LINKS_MAX, UI_WORKFLOW_POLL, UI_WORKFLOW_POLL_LARGE,
};
use crate::workflow::{StepView, WorkflowId, WorkflowStatus, WorkflowView};

/// A step's task id whole, linking its page: the steps of one workflow are stored at once,
/// so the short ids of the lists (their time part) are all the same.
fn full_task_link(root: &str, id: &crate::task::TaskId) -> Markup {
    html! { a.mono href={ (root) "ui/tasks/" (id) } { (id) } }
}

fn workflow_badge(status: WorkflowStatus) -> Markup {
    html! { span class={ "status s-" (status.as_str()) } { (status.as_str()) } }
}

/// Steps by status, as small badges (`2 completed · 1 running`).
fn counts_line(counts: &[(TaskStatus, u64)]) -> Markup {
    html! {
        @for (i, (status, n)) in counts.iter().enumerate() {
            @if i > 0 { " · " }
            span class={ "count s-" (status.as_str()) } data-status=(status.as_str()) {
                b { (n) } " " (status.as_str())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The list

/// `/ui/workflows`: newest first, filtered by status and name as `GET /workflows` is, paged
/// by `before` (the last id shown), each with its steps by status.
pub async fn workflows(ctx: &Ctx, state: &ApiState, query: &[(String, String)]) -> PageResult {
    let now = Utc::now();
    // A submitted filter form sends its empty fields too: those mean "any".
    let pairs: Vec<(String, String)> = query.iter().filter(|(_, v)| !v.is_empty()).cloned().collect();
    let mut filter = crate::api::workflows::parse_filter(&pairs).map_err(failed)?;
    if !pairs.iter().any(|(k, _)| k == "limit") {
        filter.limit = UI_PAGE_SIZE;
    }
    let list = state.store.list_workflows(&filter).await.map_err(failed)?;
    let ids: Vec<WorkflowId> = list.iter().map(|w| w.workflow_id).collect();
    let counts = state.store.step_counts(&ids).await.map_err(failed)?;
    let root = &ctx.root;

    let mut keep: Vec<String> =
        pairs.iter().filter(|(k, _)| k != "before").map(|(k, v)| format!("{}={}", url_enc(k), url_enc(v))).collect();
    let first_href = format!("{root}ui/workflows?{}", keep.join("&"));
    let next_href = match list.last() {
        Some(last) if list.len() as u32 == filter.limit => {
            keep.push(format!("before={}", last.workflow_id));
            Some(format!("{root}ui/workflows?{}", keep.join("&")))
        }
        _ => None,
    };
    let name = pairs.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str()).unwrap_or("");
    let body = html! {
        h1 { "Workflows" }
        form method="get" action={ (root) "ui/workflows" } class="filters" id="filters" {
            label {
                "status "
                select name="status" id="f-status" {
                    option value="" { "any" }
                    @for s in WorkflowStatus::ALL {
                        option selected[filter.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "name " input name="name" id="f-name" value=(name); }
            button type="submit" id="f-apply" { "Filter" }
            " "
            a href={ (root) "ui/workflows" } { "clear" }
        }
        table #workflows {
            thead {
                tr { th { "name" } th { "status" } th { "steps" } th { "created" } th { "finished" } th { "id" } }
            }
            tbody {
                @for w in &list {
                    @let href = format!("{root}ui/workflows/{}", w.workflow_id);
                    tr.workflow data-id=(w.workflow_id) {
                        td { a href=(href) { (w.name) } }
                        td.wf-status { (workflow_badge(w.status)) }
                        td.steps {
                            b { (count(w.step_count, false)) } ": "
                            (counts_line(counts.get(&w.workflow_id).map(Vec::as_slice).unwrap_or(&[])))
                        }
                        td title=(time(&w.created_at)) { (age(&w.created_at, now)) " ago" }
                        td { (opt_time(&w.finished_at)) }
                        td.mono { a href=(href) { (w.workflow_id.to_string()[..13]) } }
                    }
                }
                @if list.is_empty() {
                    tr { td colspan="6" class="muted" id="no-workflows" { "No workflows match (POST /workflows starts one)." } }
                }
            }
        }
        p.paging {
            @if filter.before.is_some() { a #first-page href=(first_href) { "← Newest" } }
            " " span.muted { (list.len()) " shown, newest first" } " "
            @if let Some(href) = next_href { a #next-page href=(href) { "Older →" } }
        }
    };
    Ok(html::page(&ctx.frame(), "Workflows", Nav::Workflows, Script::Plain, body))
}

// ---------------------------------------------------------------------------------------
// One workflow

/// `/ui/workflows/{id}` (`offset` pages the steps' table): the status, steps by status,
/// cancel and retry for the full key, the graph, the table.
pub async fn workflow(ctx: &Ctx, state: &ApiState, raw_id: &str, query: &[(String, String)]) -> PageResult {
    let id: WorkflowId = raw_id.parse().map_err(|_| failed(ApiError::InvalidWorkflowId(raw_id.to_string())))?;
    let offset = match query.iter().find(|(k, _)| k == "offset") {
        None => 0,
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| (StatusCode::BAD_REQUEST, format!("offset must be a number of steps to skip (got {v:?})")))?,
    };
    let view =
        state.store.get_workflow(id).await.map_err(failed)?.ok_or_else(|| failed(ApiError::WorkflowNotFound(id)))?;
    let root = &ctx.root;
    let summary = &view.summary;
    let counts = step_counts(&view.steps);
    let layout = Layout::of(&view.steps, UI_GRAPH_MAX);
    let page: Vec<&StepView> = view.steps.iter().skip(offset).take(UI_STEPS_PAGE).collect();
    let here = format!("{root}ui/workflows/{id}");
    let prev = (offset > 0).then(|| format!("{here}?offset={}", offset.saturating_sub(UI_STEPS_PAGE)));
    let next = (offset + UI_STEPS_PAGE < view.steps.len()).then(|| format!("{here}?offset={}", offset + UI_STEPS_PAGE));
    let cancel = summary.status == WorkflowStatus::Running;
    let retry = matches!(summary.status, WorkflowStatus::Failed | WorkflowStatus::Cancelled);
    let body = html! {
        h1 { "Workflow " span #wf-name { (summary.name) } }
        @if ctx.writable() && (cancel || retry) {
            div.actions {
                @if cancel {
                    button type="button" data-workflow-action="cancel" data-name=(id) id="wf-cancel" { "Cancel workflow" }
                }
                @if retry {
                    button type="button" data-workflow-action="retry" data-name=(id) id="wf-retry" { "Retry workflow" }
                }
            }
        }
        div.grid #fields {
            (field("id", html! { span.mono #workflow-id { (id) } }))
            (field("status", html! { span #wf-status { (workflow_badge(summary.status)) } }))
            (field("steps", html! { span #wf-counts { b { (view.steps.len()) } ": " (counts_line(&counts)) } }))
            (field("created", time(&summary.created_at)))
            (field("finished", opt_time(&summary.finished_at)))
            (field("idempotency key", summary.idempotency_key.as_deref().unwrap_or("–")))
            (field("CWOM issue", html! {
                @match &summary.cwom_issue_id {
                    Some(issue) => { a href={ (root) "ui/issues/" (url_enc(issue)) } { (issue) } }
                    None => "–",
                }
            }))
        }
        section {
            h2 { "Graph " span.badge.live #wf-live { @if cancel { "live" } @else { "ended" } } }
            @if layout.drawn < view.steps.len() {
                p.note #graph-capped {
                    "Drawing the first " (layout.drawn) " of " (count(view.steps.len() as u64, false))
                    " steps (the first layers first); the table below lists every step."
                }
            }
            (layout.svg(root, &view))
        }
        section {
            h2 { "Steps" }
            table #steps {
                thead {
                    tr {
                        th { "key" } th { "task" } th { "type" } th { "status" } th { "attempts" } th { "depends on" }
                        th { "created" } th { "started" } th { "finished" } th { "last error" }
                    }
                }
                tbody {
                    @for s in &page {
                        tr.step data-step=(s.task_id) data-key=(s.key) {
                            td.mono { (s.key) }
                            td { (full_task_link(root, &s.task_id)) }
                            td { (s.task_type) }
                            td.st { (status_badge(s.status)) }
                            td.attempts { (s.attempts) "/" (s.max_attempts) }
                            td.mono { (if s.depends_on.is_empty() { "–".to_string() } else { s.depends_on.join(", ") }) }
                            td { (time(&s.created_at)) }
                            td.started { (opt_time(&s.started_at)) }
                            td.finished { (opt_time(&s.finished_at)) }
                            td.err { (truncate(s.last_error.as_deref().unwrap_or(""), 120)) }
                        }
                    }
                    @if page.is_empty() {
                        tr { td colspan="10" class="muted" { "No steps here." } }
                    }
                }
            }
            p.paging {
                @if let Some(href) = prev { a #steps-prev href=(href) { "← Earlier steps" } }
                " " span.muted #steps-shown {
                    "steps " (offset.min(view.steps.len()) + usize::from(!page.is_empty())) "–" (offset + page.len())
                    " of " (view.steps.len())
                } " "
                @if let Some(href) = next { a #steps-next href=(href) { "Later steps →" } }
            }
        }
    };
    let poll = if view.steps.len() > UI_GRAPH_MAX { UI_WORKFLOW_POLL_LARGE } else { UI_WORKFLOW_POLL };
    let title = format!("Workflow {}", summary.name);
    Ok(html::page(&ctx.frame(), &title, Nav::Workflows, Script::Workflow { id, status: summary.status, poll }, body))
}

/// Steps by status, in the order of [`TaskStatus::ALL`], leaving out those with none.
fn step_counts(steps: &[StepView]) -> Vec<(TaskStatus, u64)> {
    TaskStatus::ALL
        .into_iter()
        .map(|s| (s, steps.iter().filter(|st| st.status == s).count() as u64))
        .filter(|(_, n)| *n > 0)
        .collect()
}

// ---------------------------------------------------------------------------------------
// The graph's layout

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 40.0;
const GAP_X: f64 = 56.0;
const GAP_Y: f64 = 14.0;
const PAD: f64 = 8.0;

/// Where each drawn step goes: its index in the workflow's steps and its top-left corner,
/// the edges between drawn steps (parent index, child index), and the drawing's size.
#[derive(Debug)]
pub struct Layout {
    pub nodes: Vec<(usize, f64, f64)>,
    pub edges: Vec<(usize, usize)>,
    pub drawn: usize,
    pub width: f64,
    pub height: f64,
}

/// Each step's layer: the length of its longest path from a root. A parent the workflow
/// does not have is ignored; a step on a cycle (the store refuses those) stays on layer 0.
pub fn layers(steps: &[StepView]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.key.as_str(), i)).collect();
    let parents: Vec<Vec<usize>> =
        steps.iter().map(|s| s.depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect()).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut pending: Vec<usize> = parents.iter().map(Vec::len).collect();
    for (child, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(child);
        }
    }
    let mut layer = vec![0usize; steps.len()];
    // Kahn's order: a step is placed once all its parents are.
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| pending[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &c in &children[i] {
            layer[c] = layer[c].max(layer[i] + 1);
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(c);
            }
        }
    }
    layer
}

impl Layout {
    /// Lays out at most `max` of `steps`: those of the lowest layers, then the first given.
    pub fn of(steps: &[StepView], max: usize) -> Layout {
        let layer = layers(steps);
        let mut order: Vec<usize> = (0..steps.len()).collect();
        order.sort_by_key(|&i| (layer[i], i));
        order.truncate(max);
        let drawn = order.len();
        let mut shown = vec![false; steps.len()];
        for &i in &order {
            shown[i] = true;
        }
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.key.as_str(), i)).collect();
        let parents_of = |i: usize| -> Vec<usize> {
            steps[i].depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).filter(|&p| shown[p]).collect()
        };
        // Rows within each layer: a step sits near the mean row of its parents (one pass
        // down the layers), which keeps most edges short and uncrossed.
        let layer_count = order.last().map(|&i| layer[i] + 1).unwrap_or(0);
        let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
        for &i in &order {
            by_layer[layer[i]].push(i);
        }
        let mut row = vec![0.0f64; steps.len()];
        for members in by_layer.iter_mut() {
            let mut keyed: Vec<(f64, usize)> = members
                .iter()
                .map(|&i| {
                    let ps = parents_of(i);
                    let at = if ps.is_empty() {
                        f64::MAX
                    } else {
                        ps.iter().map(|&p| row[p]).sum::<f64>() / ps.len() as f64
                    };
                    (at, i)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *members = keyed.into_iter().map(|(_, i)| i).collect();
            for (r, &i) in members.iter().enumerate() {
                row[i] = r as f64;
            }
        }
        let tallest = by_layer.iter().map(Vec::len).max().unwrap_or(0);
        let mut nodes = Vec::with_capacity(drawn);
        for (l, members) in by_layer.iter().enumerate() {
            // Each layer centred against the tallest one.
            let shift = (tallest - members.len()) as f64 * (NODE_H + GAP_Y) / 2.0;
            for (r, &i) in members.iter().enumerate() {
                let x = PAD + l as f64 * (NODE_W + GAP_X);
                let y = PAD + shift + r as f64 * (NODE_H + GAP_Y);
                nodes.push((i, x, y));
            }
        }
        let edges = order.iter().flat_map(|&c| parents_of(c).into_iter().map(move |p| (p, c))).collect();
        let width = PAD * 2.0 + layer_count as f64 * (NODE_W + GAP_X) - if layer_count > 0 { GAP_X } else { 0.0 };
        let height = PAD * 2.0 + tallest as f64 * (NODE_H + GAP_Y) - if tallest > 0 { GAP_Y } else { 0.0 };
        Layout { nodes, edges, drawn, width, height }
    }

    /// The drawing: each step a link to its task page, coloured by its status class
    /// (`node s-<status>`, which the page's script changes as steps move on).
    fn svg(&self, root: &str, view: &WorkflowView) -> Markup {
        let at: HashMap<usize, (f64, f64)> = self.nodes.iter().map(|&(i, x, y)| (i, (x, y))).collect();
        let one = |v: f64| format!("{v:.1}");
        html! {
            div.graph-box {
                svg.graph #graph width=(one(self.width)) height=(one(self.height))
                    viewBox={ "0 0 " (one(self.width)) " " (one(self.height)) } role="img"
                    aria-label="the workflow's steps and their dependencies" {
                    // Closed elements throughout: inside `<svg>` an unclosed tag contains the next.
                    @for &(p, c) in &self.edges {
                        @let (px, py) = at[&p];
                        @let (cx, cy) = at[&c];
                        @let (x1, y1, x2, y2) = (px + NODE_W, py + NODE_H / 2.0, cx, cy + NODE_H / 2.0);
                        @let bend = (x2 - x1) / 2.0;
                        path.edge data-from=(view.steps[p].key) data-to=(view.steps[c].key)
                            d={ "M" (one(x1)) " " (one(y1)) " C" (one(x1 + bend)) " " (one(y1)) " "
                                (one(x2 - bend)) " " (one(y2)) " " (one(x2)) " " (one(y2)) } {}
                    }
                    @for &(i, x, y) in &self.nodes {
                        @let s = &view.steps[i];
                        a class={ "node s-" (s.status.as_str()) } href={ (root) "ui/tasks/" (s.task_id) }
                            data-step=(s.task_id) data-key=(s.key) {
                            title { (s.key) " (" (s.task_type) "): " (s.status.as_str()) }
                            rect x=(one(x)) y=(one(y)) width=(NODE_W) height=(NODE_H) rx="5" {}
                            text.key x=(one(x + 8.0)) y=(one(y + 16.0)) { (truncate(&s.key, 20)) }
                            text.st x=(one(x + 8.0)) y=(one(y + 32.0)) { (s.status.as_str()) }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A step's task page

/// The workflow part of a step's task page: the workflow (linked), the step's key, its
/// parents and its dependants, each with its task and status. `None` for a task that is no
/// step. Reads the workflow whole (one statement), as its page does.
pub async fn step_section(ctx: &Ctx, state: &ApiState, task: &Task) -> Option<Markup> {
    let wid = task.workflow_id?;
    let root = &ctx.root;
    let key = task.step_key.as_deref().unwrap_or("");
    let view = match state.store.get_workflow(wid).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, workflow = %wid, "task page: cannot read the step's workflow");
            None
        }
    };
    let link = html! { a #workflow-link href={ (root) "ui/workflows/" (wid) } { (view.as_ref().map(|v| v.summary.name.as_str()).unwrap_or("workflow")) } };
    let Some(view) = view else {
        return Some(html! { section #workflow-step { h2 { "Workflow step " span.mono { (key) } } p { (link) } } });
    };
    let me = view.steps.iter().find(|s| s.task_id == task.id);
    let by_key: HashMap<&str, &StepView> = view.steps.iter().map(|s| (s.key.as_str(), s)).collect();
    let parents: Vec<&StepView> =
        me.map(|m| m.depends_on.iter().filter_map(|d| by_key.get(d.as_str()).copied()).collect()).unwrap_or_default();
    let dependants: Vec<&StepView> = view.steps.iter().filter(|s| s.depends_on.iter().any(|d| d == key)).collect();
    // A sink of 10,000 parents would make a page of 10,000 links: the first ones, and a
    // link to the workflow's table for the rest.
    let list = |id: &str, steps: &[&StepView], none: &str| {
        html! {
            ul id=(id) {
                @for s in steps.iter().take(UI_STEP_LINKS_MAX) {
                    li data-key=(s.key) {
                        span.mono { (s.key) } " → " (full_task_link(root, &s.task_id)) " " (status_badge(s.status))
                    }
                }
                @if steps.len() > UI_STEP_LINKS_MAX {
                    li.more {
                        "and " (steps.len() - UI_STEP_LINKS_MAX) " more: see "
                        a href={ (root) "ui/workflows/" (wid) } { "the workflow's steps" }
                    }
                }
                @if steps.is_empty() { li.muted { (none) } }
            }
        }
    };
    Some(html! {
        section #workflow-step {
            h2 { "Workflow step " span.mono #step-key { (key) } }
            p {
                "Step of " (link) " (" (workflow_badge(view.summary.status)) ", " (view.steps.len()) " steps)"
                @if let Some(m) = me { "; on a parent's failure: " span #on-parent-failure { (m.on_parent_failure.as_str()) } }
            }
            div.two {
                div { h3 { "Parents" } (list("step-parents", &parents, "None: a root step.")) }
                div { h3 { "Dependants" } (list("step-dependants", &dependants, "None.")) }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskId;
    use crate::workflow::OnParentFailure;

    fn step(key: &str, deps: &[&str]) -> StepView {
        StepView {
            key: key.into(),
            task_id: TaskId::new(),
            task_type: "t".into(),
            status: TaskStatus::Waiting,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            on_parent_failure: OnParentFailure::Cancel,
            attempts: 0,
            max_attempts: 3,
            last_error: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn layers_are_the_longest_path_from_a_root() {
        // d waits for a directly and through b and c: its longest path decides.
        let steps = vec![step("d", &["b", "c", "a"]), step("b", &["a"]), step("a", &[]), step("c", &["b"])];
        assert_eq!(layers(&steps), vec![3, 1, 0, 2]);
        // An unknown parent is ignored; a cycle stays on layer 0 without looping.
        let odd = vec![step("x", &["nope"]), step("y", &["z"]), step("z", &["y"])];
        assert_eq!(layers(&odd), vec![0, 0, 0]);
    }

    #[test]
    fn a_diamond_is_drawn_in_three_columns_with_four_edges() {
        let steps = vec![step("a", &[]), step("b", &["a"]), step("c", &["a"]), step("d", &["b", "c"])];
        let l = Layout::of(&steps, 100);
        assert_eq!(l.drawn, 4);
        let x = |i: usize| l.nodes.iter().find(|n| n.0 == i).unwrap().1;
        let y = |i: usize| l.nodes.iter().find(|n| n.0 == i).unwrap().2;
        assert!(x(0) < x(1) && x(1) == x(2) && x(2) < x(3), "{l:?}");
        assert!(y(1) < y(2), "b above c: {l:?}");
        // a and d centred against the middle column.
        assert_eq!(y(0), y(3));
        assert!((y(0) - (y(1) + y(2)) / 2.0).abs() < 0.01, "{l:?}");
        let mut edges = l.edges.clone();
        edges.sort();
        assert_eq!(edges, vec![(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert!(l.width > 3.0 * NODE_W && l.height > 2.0 * NODE_H);
    }

    #[test]
    fn a_large_workflow_is_capped_to_its_first_layers() {
        // A chain of 1,000: only the first 10 are drawn, with the 9 edges between them.
        let keys: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
        let steps: Vec<StepView> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| if i == 0 { step(k, &[]) } else { step(k, &[keys[i - 1].as_str()]) })
            .collect();
        let l = Layout::of(&steps, 10);
        assert_eq!((l.drawn, l.nodes.len(), l.edges.len()), (10, 10, 9));
        assert!(l.nodes.iter().all(|n| n.0 < 10), "{l:?}");
        let empty = Layout::of(&[], 10);
        assert_eq!((empty.drawn, empty.width, empty.height), (0, PAD * 2.0, PAD * 2.0));
    }

    #[test]
    fn the_drawing_escapes_keys_and_links_each_task() {
        let mut steps = vec![step("a", &[]), step("b", &["a"])];
        steps[0].status = TaskStatus::Completed;
        steps[1].task_type = "<script>".into();
        let view = WorkflowView {
            summary: crate::workflow::WorkflowSummary {
                workflow_id: WorkflowId::new(),
                name: "w".into(),
                status: WorkflowStatus::Running,
                idempotency_key: None,
                cwom_issue_id: None,
                created_at: Utc::now(),
                finished_at: None,
                step_count: 2,
            },
            steps,
        };
        let svg = Layout::of(&view.steps, 10).svg("../../", &view).into_string();
        assert!(svg.contains(&format!("href=\"../../ui/tasks/{}\"", view.steps[0].task_id)), "{svg}");
        assert!(svg.contains("class=\"node s-completed\"") && svg.contains("class=\"node s-waiting\""), "{svg}");
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"), "{svg}");
        assert_eq!(svg.matches("<path").count(), 1, "{svg}");
    }
}
