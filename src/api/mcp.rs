//! `/mcp`: the same MCP tools as `devops-control-tower mcp`, over rmcp's streamable HTTP
//! transport, behind the API key. rmcp's service speaks `http` 1 requests and responses, the
//! types warp 0.4 (hyper 1) is built on, so it runs inside this one HTTP stack: the request is
//! handed over as it came, and the answer is handed back whole.
//!
//! The endpoint is stateless (no MCP sessions; every POST is one JSON-RPC exchange answered
//! with `application/json`), because warp offers no public way to stream an arbitrary body
//! back and each tool call is one request and one answer anyway. The tools call this API over
//! HTTP, exactly as the stdio server does, so validation, the key and fencing are the routes'.
//! Behind `/mcp`, the server is one JCT worker per set of types and queues an agent claims
//! with, shared by every caller, kept alive while the daemon runs and deregistered when it
//! stops.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, Request};
use warp::hyper::body::{Bytes, Frame};
use warp::reply::Response;
use warp::{Buf, Filter};

use super::access::authorized;
use super::ApiState;
use crate::client::Client;
use crate::mcp::JctMcp;

/// A JSON-RPC 2.0 answer; its `result` or `error` is MCP's (rmcp writes it).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct JsonRpcAnswer {
    jsonrpc: String,
    id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

/// `/mcp` in the OpenAPI document.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    doc.post(
        "/mcp",
        "One MCP JSON-RPC exchange (initialize, tools/list, tools/call with the jct_* tools); \
         send Accept: application/json, text/event-stream",
    )
    .body_example(serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "client", "version": "1" } }
    }))
    .answers::<JsonRpcAnswer>(200, "The JSON-RPC answer")
    .keyed()
    .answers_as(406, "Accept does not name both application/json and text/event-stream", None);
}

/// The MCP server behind `/mcp`, and the rmcp service that speaks its HTTP transport.
#[derive(Clone)]
pub struct Endpoint {
    server: JctMcp,
    service: Arc<StreamableHttpService<JctMcp, NeverSessionManager>>,
}

impl Endpoint {
    /// The endpoint of the API listening on `addr`, whose tools call that API back.
    pub fn new(state: &ApiState, addr: SocketAddr) -> Result<Self, crate::client::ClientError> {
        let mut own = addr;
        if own.ip().is_unspecified() {
            own.set_ip(if own.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let client = Client::new(&format!("http://{own}"), state.access.full_key().map(str::to_string))?;
        let server = JctMcp::new(client, false);
        let mut config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_max_request_body_bytes(usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX));
        if state.access.needs_login() {
            // The Host check guards a keyless server on loopback against DNS rebinding; a
            // browser cannot attach the bearer key, so with a key any host name may reach it.
            config = config.disable_allowed_hosts();
        }
        let factory = server.clone();
        let service = StreamableHttpService::new(move || Ok(factory.clone()), Default::default(), config);
        Ok(Endpoint { server, service: Arc::new(service) })
    }

    /// Heartbeats the endpoint's worker registrations; runs until dropped.
    pub async fn keep_alive(self) {
        self.server.keep_alive().await
    }

    /// Deregisters the endpoint's workers (while the API still answers).
    pub async fn stop(&self) {
        self.server.deregister().await
    }

    /// `GET`, `POST` and `DELETE /mcp`, behind the API key.
    pub fn routes(&self, state: &ApiState) -> BoxedFilter<(Response,)> {
        let service = self.service.clone();
        warp::path!("mcp")
            .and(authorized(state.access.clone()))
            .and(warp::method())
            .and(warp::header::headers_cloned())
            .and(warp::body::stream())
            .then(move |method: Method, headers: HeaderMap, body| {
                let service = service.clone();
                async move { handle(&service, method, headers, body).await }
            })
            .boxed()
    }
}

async fn handle<S, B>(
    service: &StreamableHttpService<JctMcp, NeverSessionManager>,
    method: Method,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    // rmcp reads the body itself, within its own size limit.
    let frames = body.map(|chunk| chunk.map(|mut buf| Frame::data(buf.copy_to_bytes(buf.remaining()))));
    let mut request = Request::new(StreamBody::new(frames));
    *request.method_mut() = method;
    *request.uri_mut() = warp::http::Uri::from_static("/mcp");
    *request.headers_mut() = headers;
    let (parts, body) = service.handle(request).await.into_parts();
    // Stateless JSON answers end; the body is whole once the exchange is over.
    let bytes: Bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    Response::from_parts(parts, bytes.into())
}
