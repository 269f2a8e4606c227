//! Who may do what: the API keys (`JCT_API_KEY` full, `JCT_READONLY_API_KEY` GET only), the
//! dashboard's session cookie, and the cross-site request forgery guards on every request
//! that changes something.
//!
//! Sessions are stateless: the cookie is `<level>.<expiry>.<nonce>.<mac>`, signed with an
//! HMAC-SHA256 key derived from the configured API keys. Every daemon sharing the keys
//! accepts it, a restart keeps it, and changing a key ends every session. The CSRF token of a
//! session is the HMAC of its cookie: the page carries it, a cross-site page cannot read it,
//! and nothing needs storing.
//!
//! Rules, in order, for every protected request:
//! 1. a state-changing request (not GET or HEAD) whose `Origin` names another host than the
//!    one it was sent to is refused (403 `cross_origin`), keys or not;
//! 2. with no `JCT_API_KEY`, everything else is allowed (the open default of `make run`);
//! 3. `Authorization: Bearer <key>` decides when present (401 on a wrong key);
//! 4. else a valid session cookie decides, and a state-changing request with it must carry
//!    the session's token in `X-CSRF-Token` (403 `csrf_rejected`);
//! 5. the read-only level may only GET (403 `read_only_key`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use warp::http::{HeaderMap, Method};
use warp::Filter;

use super::ApiError;
use crate::tunables::SESSION_TTL;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "jct_session";
/// The header a cookie-authenticated state-changing request carries its token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Everything (the full key, or no key configured).
    Full,
    /// GET only: the read-only key.
    ReadOnly,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::ReadOnly => "read",
        }
    }

    fn from_tag(tag: &str) -> Option<Level> {
        match tag {
            "full" => Some(Level::Full),
            "read" => Some(Level::ReadOnly),
            _ => None,
        }
    }
}

/// Who got in, and how: the dashboard needs the session's CSRF token to put in its pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub level: Level,
    /// The CSRF token when the request came with a session cookie.
    pub csrf: Option<String>,
}

/// The configured keys and the session signing key derived from them.
pub struct Access {
    full: Option<Arc<str>>,
    read_only: Option<Arc<str>>,
    secret: [u8; 32],
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("keyed", &self.full.is_some()).finish_non_exhaustive()
    }
}

impl Access {
    /// A read-only key without a full key changes nothing: with no `JCT_API_KEY` the API
    /// is open to everyone.
    pub fn new(full: Option<&str>, read_only: Option<&str>) -> Access {
        let mut h = Sha256::new();
        h.update(b"jct-session-v1\0");
        h.update(full.unwrap_or("").as_bytes());
        h.update(b"\0");
        h.update(read_only.unwrap_or("").as_bytes());
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&h.finalize());
        Access {
            full: full.map(Arc::from),
            read_only: if full.is_some() { read_only.map(Arc::from) } else { None },
            secret,
        }
    }

    /// The full key, for a part of this daemon that calls its own API (`/mcp`).
    pub fn full_key(&self) -> Option<&str> {
        self.full.as_deref()
    }

    /// Whether the dashboard must ask for a key.
    pub fn needs_login(&self) -> bool {
        self.full.is_some()
    }

    /// The level a key grants, if any.
    pub fn level_of_key(&self, key: &str) -> Option<Level> {
        if self.full.as_deref().is_some_and(|k| self.same(key, k)) {
            Some(Level::Full)
        } else if self.read_only.as_deref().is_some_and(|k| self.same(key, k)) {
            Some(Level::ReadOnly)
        } else {
            None
        }
    }

    /// A new session cookie value for `level`.
    pub fn new_session(&self, level: Level) -> String {
        let expiry = now_secs() + SESSION_TTL.as_secs();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let body = format!("{}.{expiry}.{nonce}", level.tag());
        let mac = hex(&hmac(&self.secret, format!("session|{body}").as_bytes()));
        format!("{body}.{mac}")
    }

    /// The level of a session cookie that is genuine and not expired.
    fn session_level(&self, cookie: &str) -> Option<Level> {
        let (body, mac) = cookie.rsplit_once('.')?;
        let expected = hex(&hmac(&self.secret, format!("session|{body}").as_bytes()));
        if !self.same(mac, &expected) {
            return None;
        }
        let mut parts = body.split('.');
        let level = Level::from_tag(parts.next()?)?;
        let expiry: u64 = parts.next()?.parse().ok()?;
        (expiry > now_secs()).then_some(level)
    }

    /// Whether `given` equals `expected`, in a time that says nothing about either: their
    /// MACs are compared by `Mac::verify_slice` (constant time), so neither the length nor
    /// the first differing byte shows.
    fn same(&self, given: &str, expected: &str) -> bool {
        let tag = hmac(&self.secret, format!("compare|{expected}").as_bytes());
        mac(&self.secret, format!("compare|{given}").as_bytes()).verify_slice(&tag).is_ok()
    }

    /// The CSRF token of a session.
    pub fn csrf_token(&self, cookie: &str) -> String {
        hex(&hmac(&self.secret, format!("csrf|{cookie}").as_bytes()))
    }

    /// Rule 1 alone: a state-changing request from another site is refused.
    pub fn check_origin(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let changes = !(method == Method::GET || method == Method::HEAD);
        if changes && !same_origin(headers) {
            return Err(ApiError::CrossOrigin);
        }
        Ok(())
    }

    /// Decides a request (the rules in the module doc).
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Granted, ApiError> {
        self.check_origin(method, headers)?;
        let changes = !(method == Method::GET || method == Method::HEAD);
        if self.full.is_none() {
            return Ok(Granted { level: Level::Full, csrf: None });
        }
        let granted = if let Some(auth) = header(headers, "authorization") {
            let token = auth.strip_prefix("Bearer ").unwrap_or("");
            let level = self.level_of_key(token).ok_or(ApiError::Unauthorized)?;
            Granted { level, csrf: None }
        } else if let Some(cookie) = cookie(headers, SESSION_COOKIE) {
            let level = self.session_level(&cookie).ok_or(ApiError::Unauthorized)?;
            let csrf = self.csrf_token(&cookie);
            if changes {
                let given = header(headers, CSRF_HEADER).unwrap_or_default();
                if !self.same(&given, &csrf) {
                    return Err(ApiError::CsrfRejected);
                }
            }
            Granted { level, csrf: Some(csrf) }
        } else {
            return Err(ApiError::Unauthorized);
        };
        if changes && granted.level == Level::ReadOnly {
            return Err(ApiError::ReadOnlyKey);
        }
        Ok(granted)
    }
}

/// Passes a request [`Access::check`] allows; else rejects with its error.
pub fn authorized(access: Arc<Access>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    granted(access).map(|_| ()).untuple_one()
}

/// As [`authorized`], extracting what was granted.
pub fn granted(access: Arc<Access>) -> impl Filter<Extract = (Granted,), Error = warp::Rejection> + Clone {
    warp::method().and(warp::header::headers_cloned()).and_then(move |method: Method, headers: HeaderMap| {
        let access = access.clone();
        async move { access.check(&method, &headers).map_err(warp::reject::custom) }
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The value of cookie `name`, if the request has it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// True unless `Origin` names another host than the one the request was sent to (the
/// proxy's `X-Forwarded-Host` when there is one). No `Origin`: not a browser's cross-site
/// request (browsers send it on every state-changing one).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = header(headers, "origin") else { return true };
    let Some(host) = header(headers, "x-forwarded-host").or_else(|| header(headers, "host")) else { return false };
    let origin_host = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
    origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host.split(',').next().unwrap_or("").trim()))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// HMAC-SHA256 (RFC 2104) of `msg` under a 32-byte key, before finalizing.
fn mac(key: &[u8; 32], msg: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(msg);
    m
}

/// HMAC-SHA256 of `msg` under a 32-byte key.
fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    mac(key, msg).finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_1() {
        // RFC 4231 case 1 has a 20-byte key; HMAC zero-pads keys to the block size, so the
        // same key zero-extended to 32 bytes gives the same MAC.
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        assert_eq!(hex(&hmac(&key, b"Hi There")), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }

    #[test]
    fn open_without_a_key_but_never_cross_origin() {
        let a = Access::new(None, Some("ro"));
        assert_eq!(a.check(&Method::POST, &headers(&[])).unwrap().level, Level::Full);
        let forged = headers(&[("origin", "http://evil.example"), ("host", "127.0.0.1:8000")]);
        assert!(matches!(a.check(&Method::POST, &forged), Err(ApiError::CrossOrigin)));
        let same = headers(&[("origin", "http://127.0.0.1:8000"), ("host", "127.0.0.1:8000")]);
        assert!(a.check(&Method::POST, &same).is_ok());
        assert!(a.check(&Method::GET, &forged).is_ok(), "reads are not forgery");
    }

    #[test]
    fn keys_sessions_and_csrf() {
        let a = Access::new(Some("full"), Some("ro"));
        assert!(a.same("abc", "abc") && !a.same("abc", "abd") && !a.same("ab", "abc") && !a.same("abc", ""));
        let bearer = |k: &str| headers(&[]).tap_insert("authorization", format!("Bearer {k}"));
        assert_eq!(a.check(&Method::POST, &bearer("full")).unwrap().level, Level::Full);
        assert!(matches!(a.check(&Method::GET, &bearer("nope")), Err(ApiError::Unauthorized)));
        assert_eq!(a.check(&Method::GET, &bearer("ro")).unwrap().level, Level::ReadOnly);
        assert!(matches!(a.check(&Method::POST, &bearer("ro")), Err(ApiError::ReadOnlyKey)));

        let session = a.new_session(Level::Full);
        let with_cookie = headers(&[]).tap_insert("cookie", format!("other=1; {SESSION_COOKIE}={session}"));
        let granted = a.check(&Method::GET, &with_cookie).unwrap();
        assert_eq!(granted.csrf.as_deref(), Some(a.csrf_token(&session).as_str()));
        assert!(matches!(a.check(&Method::POST, &with_cookie), Err(ApiError::CsrfRejected)));
        let with_token = with_cookie.clone().tap_insert(CSRF_HEADER, a.csrf_token(&session));
        assert!(a.check(&Method::POST, &with_token).is_ok());

        let mut forged = session.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        let bad = headers(&[]).tap_insert("cookie", format!("{SESSION_COOKIE}={forged}"));
        assert!(matches!(a.check(&Method::GET, &bad), Err(ApiError::Unauthorized)));
        // Another key set: every session ends.
        assert!(Access::new(Some("other"), None).session_level(&session).is_none());
        let ro = a.new_session(Level::ReadOnly);
        let ro_headers = headers(&[])
            .tap_insert("cookie", format!("{SESSION_COOKIE}={ro}"))
            .tap_insert(CSRF_HEADER, a.csrf_token(&ro));
        assert!(matches!(a.check(&Method::POST, &ro_headers), Err(ApiError::ReadOnlyKey)));
    }

    trait TapInsert {
        fn tap_insert(self, k: &'static str, v: String) -> Self;
    }
    impl TapInsert for HeaderMap {
        fn tap_insert(mut self, k: &'static str, v: String) -> Self {
            self.insert(k, v.parse().unwrap());
            self
        }
    }
}
