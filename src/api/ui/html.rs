//! HTML building for the dashboard: the one escaping helper every user-controlled value
//! goes through, the page layout, and small formatters (times, ages, JSON).
//!
//! Pages are plain strings. Anything that did not come from this file's literals (task
//! payloads, errors, names, ids, query values) is passed through [`esc`] before it is
//! written, in text and in attributes alike (both quote characters are escaped).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::api::access::Level;

/// Escapes text for HTML text and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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

/// JSON pretty-printed and escaped, for a `<pre>`.
pub fn json_pre(v: &Value) -> String {
    esc(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
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

/// Which top-level view a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Tasks,
    Workers,
    Schedules,
    Queues,
    None,
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

/// A whole page: head, navigation, `body`. `data` is extra `data-*` attributes for the
/// script (already escaped by the caller).
pub fn page(frame: &Frame<'_>, title: &str, nav: Nav, data: &str, body: &str) -> String {
    let root = frame.root;
    let link = |n: Nav, href: &str, label: &str| {
        let class = if n == nav { " class=\"active\"" } else { "" };
        format!("<a href=\"{root}{href}\"{class}>{label}</a>")
    };
    let mode = match frame.level {
        Level::Full => "",
        Level::ReadOnly => "<span class=\"badge readonly\" id=\"readonly\">read-only</span>",
    };
    let logout = if frame.session {
        format!(
            "<form method=\"post\" action=\"{root}ui/logout\" class=\"logout\"><button type=\"submit\">Sign out</button></form>"
        )
    } else {
        String::new()
    };
    let writable = if frame.level == Level::Full { "1" } else { "0" };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · JCT</title>\
<link rel=\"stylesheet\" href=\"{root}ui/assets/app.css\">\
<script src=\"{root}ui/assets/app.js\" defer></script></head>\
<body data-root=\"{root}\" data-csrf=\"{csrf}\" data-writable=\"{writable}\"{data}>\
<header><nav><strong class=\"brand\">JCT</strong>{o}{t}{w}{s}{q}{mode}</nav>{logout}</header>\
<div id=\"flash\" role=\"status\"></div>\
<main>{body}</main></body></html>",
        title = esc(title),
        csrf = esc(frame.csrf.unwrap_or("")),
        o = link(Nav::Overview, "ui", "Overview"),
        t = link(Nav::Tasks, "ui/tasks", "Tasks"),
        w = link(Nav::Workers, "ui/workers", "Workers"),
        s = link(Nav::Schedules, "ui/schedules", "Schedules"),
        q = link(Nav::Queues, "ui/queues", "Queues"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
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
