//! A client of the JCT HTTP API, for the programs that must never touch a database: the
//! remote worker (`worker --server URL`) and the MCP server (`mcp`). It knows paths, the API
//! key and the one error shape; what a body means is the server's business.

use std::time::Duration;

use serde_json::Value;

use crate::tunables::{CLIENT_CONNECT_TIMEOUT, CLIENT_REQUEST_SLACK};

/// Why a call did not produce the answer the caller wanted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and (normally) its JSON error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The whole body, for errors that carry more (the existing `task_id` of a 409).
        body: Value,
    },
    /// No answer: connection refused, reset, or timed out.
    #[error("the JCT server at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not what the API promises (not JSON where JSON is due).
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl ClientError {
    /// The server's error code, when the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One server: its base URL (`http://host:port`, optionally with a path prefix) and key.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    /// How long a request may take beyond what it asks the server to wait.
    slack: Duration,
}

impl Client {
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(CLIENT_CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Protocol { url: base.clone(), reason: e.to_string() })?;
        Ok(Client { base, key: api_key, http, slack: CLIENT_REQUEST_SLACK })
    }

    /// The same client, giving up on any request (connecting included) after `limit`
    /// beyond what it asks the server to wait: for a probe that must answer quickly.
    pub fn within(mut self, limit: Duration) -> Self {
        self.slack = limit;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET path`, a JSON answer.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.json(reqwest::Method::GET, path, None, Duration::ZERO).await
    }

    /// `GET path`, a text answer (trace files).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let res = self.send(reqwest::Method::GET, &url, None, Duration::ZERO).await?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(|e| unreachable(&url, &e))?;
        if status >= 400 {
            return Err(api_error(status, serde_json::from_str(&text).unwrap_or(Value::Null), &text));
        }
        Ok(text)
    }

    /// `POST path` with a JSON body, a JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(reqwest::Method::POST, path, Some(body), Duration::ZERO).await
    }

    /// `PUT path` with a JSON body, a JSON answer.
    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(reqwest::Method::PUT, path, Some(body), Duration::ZERO).await
    }

    /// `POST path` for a call the server may hold open for `wait` (a long-poll claim).
    pub async fn post_json_waiting(&self, path: &str, body: &Value, wait: Duration) -> Result<Value, ClientError> {
        self.json(reqwest::Method::POST, path, Some(body), wait).await
    }

    /// `DELETE path`, a JSON answer.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.json(reqwest::Method::DELETE, path, None, Duration::ZERO).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        wait: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, url).timeout(wait + self.slack);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.map_err(|e| unreachable(url, &e))
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        wait: Duration,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let res = self.send(method, &url, body, wait).await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| unreachable(&url, &e))?;
        let parsed: Result<Value, _> = if bytes.is_empty() { Ok(Value::Null) } else { serde_json::from_slice(&bytes) };
        if status >= 400 {
            let text = String::from_utf8_lossy(&bytes);
            return Err(api_error(status, parsed.unwrap_or(Value::Null), &text));
        }
        parsed.map_err(|e| ClientError::Protocol { url, reason: format!("the body is not JSON: {e}") })
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> ClientError {
    // reqwest's Display is terse ("error sending request"); the source says why.
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    ClientError::Unreachable { url: url.to_string(), reason }
}

fn api_error(status: u16, body: Value, text: &str) -> ClientError {
    let code = body["error"].as_str().map(str::to_string).unwrap_or_else(|| format!("http_{status}"));
    let message =
        body["message"].as_str().map(str::to_string).unwrap_or_else(|| text.chars().take(200).collect::<String>());
    ClientError::Api { status, code, message, body }
}
