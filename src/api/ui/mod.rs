//! The dashboard under `/ui`: server-rendered HTML pages from the daemon itself, with the
//! stylesheet and the one script built into the binary (`include_str!`; no CDN, no build
//! step).
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the routes, the login and logout, the HTTP shape of a page (headers, status) |
//! | `html.rs` | the page frame (maud markup: every interpolated value escaped), formatters, and the pieces every view uses (status badge, task link, field, a page's error) |
//! | `pages.rs` | the views: overview, tasks, task, workers, schedules, queues, issue |
//! | `workflows.rs` | the workflow views: the list, one workflow (its graph laid out in Rust, drawn as SVG), a step's parents and dependants on its task page |
//! | `app.js`, `app.css` | live log tail, a workflow's live colours, actions (cancel, retry, bulk, enqueue, schedule, queue and workflow controls), looks |
//!
//! Pages read through the same services as the API and change nothing themselves: every
//! action is the page's script calling the JSON API (with the session's CSRF token), so the
//! API's checks are the only ones. Every link is relative, so a proxy may mount the
//! dashboard under any prefix.

use std::collections::HashMap;

use maud::{html, Markup};
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::access::{Granted, Level, SESSION_COOKIE};
use super::{ApiError, ApiState};
use html::{Frame, Nav, Script};

pub mod html;
pub mod pages;
pub mod workflows;

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// What a page handler gets: who is asking and how to link.
pub struct Ctx {
    pub root: String,
    pub granted: Granted,
    pub session: bool,
}

impl Ctx {
    pub fn frame(&self) -> Frame<'_> {
        Frame { root: &self.root, level: self.granted.level, csrf: self.granted.csrf.as_deref(), session: self.session }
    }

    pub fn writable(&self) -> bool {
        self.granted.level == Level::Full
    }
}

/// A rendered page, or a page saying what went wrong.
pub type PageResult = Result<Markup, (StatusCode, String)>;

/// Every `/ui` route.
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let asset_js = warp::path!("ui" / "assets" / "app.js")
        .and(warp::get())
        .map(|| asset(APP_JS, "text/javascript; charset=utf-8"));
    let asset_css =
        warp::path!("ui" / "assets" / "app.css").and(warp::get()).map(|| asset(APP_CSS, "text/css; charset=utf-8"));
    let login = warp::path!("ui" / "login")
        .and(warp::post())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(4096))
        .and(warp::body::form::<HashMap<String, String>>())
        .and(with_state.clone())
        .map(login);
    let logout = warp::path!("ui" / "logout")
        .and(warp::post())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(with_state.clone())
        .map(logout);
    let pages = warp::path("ui")
        .and(warp::get())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_state)
        .then(page);
    asset_js.or(asset_css).unify().or(login).unify().or(logout).unify().or(pages).unify().boxed()
}

fn asset(body: &'static str, media: &'static str) -> Response {
    let mut res = Response::new(body.into());
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Any GET under `/ui`: checks access (a login page when it is missing), then renders.
async fn page(
    path: warp::path::FullPath,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    state: ApiState,
) -> Response {
    let path = path.as_str().to_string();
    let root = html::root_for(&path);
    let granted = match state.access.check(&Method::GET, &headers) {
        Ok(g) => g,
        Err(ApiError::Unauthorized) => return login_page(&root, StatusCode::UNAUTHORIZED, None),
        Err(e) => return e.into_response(),
    };
    let session = state.access.needs_login() && super::access::cookie(&headers, SESSION_COOKIE).is_some();
    let ctx = Ctx { root, granted, session };
    let rest = path.trim_start_matches("/ui").trim_matches('/');
    let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
    let rendered = match parts.as_slice() {
        [] => pages::overview(&ctx, &state).await,
        ["login"] => {
            return if state.access.needs_login() {
                login_page(&ctx.root, StatusCode::OK, None)
            } else {
                see_other(&format!("{}ui", ctx.root), None)
            }
        }
        ["tasks"] => pages::tasks(&ctx, &state, &query).await,
        ["tasks", id] => pages::task(&ctx, &state, id).await,
        ["workers"] => pages::workers(&ctx, &state).await,
        ["schedules"] => pages::schedules(&ctx, &state).await,
        ["queues"] => pages::queues(&ctx, &state).await,
        ["workflows"] => workflows::workflows(&ctx, &state, &query).await,
        ["workflows", id] => workflows::workflow(&ctx, &state, id, &query).await,
        ["issues", id] => pages::issue(&ctx, &state, id).await,
        _ => Err((StatusCode::NOT_FOUND, "No such page.".into())),
    };
    match rendered {
        Ok(body) => html_response(StatusCode::OK, body),
        Err((status, message)) => {
            let body = html! { h1 { (status.as_u16()) } p.error #page-error { (message) } };
            html_response(status, html::page(&ctx.frame(), "Error", Nav::None, Script::Plain, body))
        }
    }
}

/// An HTML answer with the headers every dashboard page carries: no framing, no inline
/// script, nothing loaded from elsewhere.
pub fn html_response(status: StatusCode, page: Markup) -> Response {
    let mut res = warp::reply::with_status(warp::reply::html(page.into_string()), status).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn login_page(root: &str, status: StatusCode, message: Option<&str>) -> Response {
    let frame = Frame { root, level: Level::ReadOnly, csrf: None, session: false };
    let body = html! {
        section.login {
            h1 { "Sign in" }
            p {
                "This server needs an API key (" code { "JCT_API_KEY" } ", or " code { "JCT_READONLY_API_KEY" }
                " to look only)."
            }
            @if let Some(m) = message {
                p.error #login-error { (m) }
            }
            form method="post" action={ (root) "ui/login" } id="login" {
                label {
                    "API key "
                    input type="password" name="key" id="key" autocomplete="current-password" required autofocus;
                }
                button type="submit" id="login-submit" { "Sign in" }
            }
        }
    };
    // The frame without navigation: nothing else is reachable before signing in.
    let page = html::page(&frame, "Sign in", Nav::None, Script::Login, body);
    html_response(status, page)
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut res = warp::reply::with_status(warp::reply(), StatusCode::SEE_OTHER).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

/// The cookie's attributes: script cannot read it, other sites never send it, and it is
/// `Secure` when the request came over HTTPS (through a proxy that says so).
fn cookie_attrs(headers: &HeaderMap, max_age: u64) -> String {
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p == "https");
    let secure = if https { "; Secure" } else { "" };
    format!("; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
}

/// `POST /ui/login` (form field `key`): a session cookie for the key's level, then the
/// overview; the login page again with a message for a wrong key.
fn login(path: warp::path::FullPath, headers: HeaderMap, form: HashMap<String, String>, state: ApiState) -> Response {
    let root = html::root_for(path.as_str());
    // A login form posted from another site would sign the victim into the attacker's key.
    if let Err(e) = state.access.check_origin(&Method::POST, &headers) {
        return e.into_response();
    }
    let key = form.get("key").map(String::as_str).unwrap_or("");
    match state.access.level_of_key(key) {
        Some(level) => {
            let session = state.access.new_session(level);
            let cookie =
                format!("{SESSION_COOKIE}={session}{}", cookie_attrs(&headers, crate::tunables::SESSION_TTL.as_secs()));
            tracing::info!(read_only = level == Level::ReadOnly, "dashboard sign-in");
            see_other(&format!("{root}ui"), Some(cookie))
        }
        None => {
            tracing::info!("dashboard sign-in refused: wrong key");
            login_page(&root, StatusCode::UNAUTHORIZED, Some("That key is not valid."))
        }
    }
}

/// `POST /ui/logout`: forgets the session cookie.
fn logout(path: warp::path::FullPath, headers: HeaderMap, state: ApiState) -> Response {
    if let Err(e) = state.access.check_origin(&Method::POST, &headers) {
        return e.into_response();
    }
    let root = html::root_for(path.as_str());
    see_other(&format!("{root}ui/login"), Some(format!("{SESSION_COOKIE}={}", cookie_attrs(&headers, 0))))
}
