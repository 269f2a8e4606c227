//! HTML building for the dashboard: the page frame, small formatters (times, ages,
//! counts, JSON) and the pieces every page uses (a status badge, a task link, a field, a
//! page's error).
//!
//! Pages are [`maud`] markup: every value interpolated into `html!` (task payloads, errors,
//! names, ids, query values) is escaped by the macro, in text and in attribute values alike;
//! only a [`maud::PreEscaped`] is written as is, and no page needs one. The formatters here
//! return plain text for the pages to interpolate.

use std::time::Duration;

use chrono::{DateTime, Utc};
use maud::{html, Markup, Render, DOCTYPE};
use serde_json::Value;
use warp::http::StatusCode;

use crate::api::access::Level;
use crate::api::ApiError;
use crate::task::{TaskId, TaskStatus};
use crate::workflow::{WorkflowId, WorkflowStatus};

/// Percent-encodes a query value or path segment.
pub use crate::url::encode as url_enc;

/// A time as `2026-11-29 09:48:07Z`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// An optional time, or a dash.
pub fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "–".into())
}

/// How long ago, short: `42s`, `5m`, `3h`, `2d`.
pub fn age(t: &DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - *t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// JSON pretty-printed, for a `<pre>`.
pub fn pretty_json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A number with thousands separators, `+` when it is a lower bound.
pub fn count(n: u64, capped: bool) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if capped {
        out.push('+');
    }
    out
}

/// A task id's first 13 characters (its time part), as the lists show it.
pub fn short_id(id: &TaskId) -> String {
    id.to_string()[..13].to_string()
}

/// Which top-level view a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Tasks,
    Workers,
    Schedules,
    Queues,
    Workflows,
    None,
}

/// What the page's script does besides the actions every page has, told by `data-*`
/// attributes on `<body>`.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// Nothing more.
    Plain,
    /// Reloads the page after this long (`data-refresh`, in milliseconds).
    Refresh(Duration),
    /// The sign-in page (`data-login`).
    Login,
    /// One task's page: its id and status, and whether to follow its live log.
    Task { id: TaskId, status: TaskStatus, follow: bool },
    /// One workflow's page: its id and status, and how often to read it again while it
    /// runs (`data-poll`, in milliseconds) to recolour its steps in place.
    Workflow { id: WorkflowId, status: WorkflowStatus, poll: Duration },
}

/// What every page's frame needs.
pub struct Frame<'a> {
    /// The relative path from this page to the server root (`./`, `../`, `../../`): every
    /// link is relative, so the dashboard works behind a proxy that mounts it under a prefix.
    pub root: &'a str,
    pub level: Level,
    /// The session's CSRF token, for the page's script.
    pub csrf: Option<&'a str>,
    /// Whether the page is behind a login (shows the sign-out button).
    pub session: bool,
}

/// A whole page: head, navigation, `body`.
pub fn page(frame: &Frame<'_>, title: &str, nav: Nav, script: Script, body: impl Render) -> Markup {
    let root = frame.root;
    let link = |n: Nav, href: &str, label: &str| {
        html! { a href={ (root) (href) } class=[(n == nav).then_some("active")] { (label) } }
    };
    let writable = if frame.level == Level::Full { "1" } else { "0" };
    let refresh = match script {
        Script::Refresh(every) => Some(every.as_millis()),
        _ => None,
    };
    let login = matches!(script, Script::Login).then_some("1");
    let task = match script {
        Script::Task { id, status, follow } => Some((id, status.as_str(), if follow { "1" } else { "0" })),
        _ => None,
    };
    let workflow = match script {
        Script::Workflow { id, status, poll } => Some((id, status.as_str(), poll.as_millis())),
        _ => None,
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · JCT" }
                link rel="stylesheet" href={ (root) "ui/assets/app.css" };
                script src={ (root) "ui/assets/app.js" } defer {}
            }
            body data-root=(root) data-csrf=(frame.csrf.unwrap_or("")) data-writable=(writable)
                data-refresh=[refresh] data-login=[login]
                data-task=[task.map(|t| t.0)] data-status=[task.map(|t| t.1)] data-follow=[task.map(|t| t.2)]
                data-workflow=[workflow.map(|w| w.0)] data-wf-status=[workflow.map(|w| w.1)]
                data-poll=[workflow.map(|w| w.2)] {
                header {
                    nav {
                        strong.brand { "JCT" }
                        (link(Nav::Overview, "ui", "Overview"))
                        (link(Nav::Tasks, "ui/tasks", "Tasks"))
                        (link(Nav::Workers, "ui/workers", "Workers"))
                        (link(Nav::Schedules, "ui/schedules", "Schedules"))
                        (link(Nav::Queues, "ui/queues", "Queues"))
                        (link(Nav::Workflows, "ui/workflows", "Workflows"))
                        @if frame.level == Level::ReadOnly {
                            span.badge.readonly #readonly { "read-only" }
                        }
                    }
                    @if frame.session {
                        form method="post" action={ (root) "ui/logout" } class="logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                div #flash role="status" {}
                main { (body) }
            }
        }
    }
}

/// The `root` for a request path: one `../` per directory level below the server root.
pub fn root_for(path: &str) -> String {
    let depth = path.matches('/').count().saturating_sub(1);
    if depth == 0 {
        "./".into()
    } else {
        "../".repeat(depth)
    }
}

/// A page's error: the status and words of an [`ApiError`].
pub fn failed(e: impl Into<ApiError>) -> (StatusCode, String) {
    let e = e.into();
    (e.status(), e.to_string())
}

pub fn status_badge(status: TaskStatus) -> Markup {
    html! { span class={ "status s-" (status.as_str()) } { (status.as_str()) } }
}

/// A task's short id linking its page.
pub fn task_link(root: &str, id: &TaskId) -> Markup {
    html! { a.mono href={ (root) "ui/tasks/" (id) } { (short_id(id)) } }
}

/// One of the task page's fields: its name and value.
pub fn field(name: &str, value: impl Render) -> Markup {
    html! { div { span.k { (name) } span.v { (value) } } }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_escapes_what_it_is_given() {
        let frame = Frame { root: "../", level: Level::ReadOnly, csrf: Some("a\"><b>"), session: true };
        let html = page(&frame, "<i>x</i>", Nav::Queues, Script::Plain, "<script>").into_string();
        assert!(html.contains("<title>&lt;i&gt;x&lt;/i&gt; · JCT</title>"), "{html}");
        assert!(html.contains("data-csrf=\"a&quot;&gt;&lt;b&gt;\""), "{html}");
        assert!(html.contains("<main>&lt;script&gt;</main>"), "{html}");
        assert!(html.contains("<a href=\"../ui/queues\" class=\"active\">Queues</a>"), "{html}");
        assert!(html.contains("<a href=\"../ui/tasks\">Tasks</a>"), "{html}");
        assert!(html.contains("id=\"readonly\"") && html.contains("action=\"../ui/logout\""), "{html}");
        assert!(!html.contains("data-refresh") && !html.contains("data-task"), "{html}");
        assert!(
            html.contains("<a href=\"../ui/workflows\">Workflows</a>") && !html.contains("data-workflow"),
            "{html}"
        );
    }

    #[test]
    fn roots_are_relative() {
        assert_eq!(root_for("/ui"), "./");
        assert_eq!(root_for("/ui/"), "../");
        assert_eq!(root_for("/ui/tasks"), "../");
        assert_eq!(root_for("/ui/tasks/abc"), "../../");
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(1_234_567, false), "1,234,567");
        assert_eq!(count(10_000, true), "10,000+");
        assert_eq!(count(7, false), "7");
    }
}
