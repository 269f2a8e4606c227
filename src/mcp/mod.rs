//! The MCP server (`devops-control-tower mcp`): coding agents drive JCT through the Model
//! Context Protocol over stdio, with the official SDK (`rmcp`). It never touches a database:
//! every tool is HTTP calls to the JCT server through [`crate::client`], so validation, auth
//! and fencing stay the server's.
//!
//! - `tools`: the catalog (names, descriptions, input schemas, which change nothing): tasks,
//!   the worker cycle, CWOM context, schedules, and queue controls (list, pause, resume,
//!   limits).
//! - `arguments`: each tool's arguments as a type, from which its input schema is derived and
//!   into which a call's arguments are parsed.
//! - `calls`: what each tool does; every failure is a [`calls::ToolError`].
//! - `agent`: the MCP server as a JCT worker (registrations, heartbeats, log numbering).
//!
//! A failed call is a tool result with `is_error: true` whose text is the API's error shape;
//! the process stops only when its client closes stdin or it gets a signal.

mod agent;
mod arguments;
mod calls;
mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

pub use calls::ToolError;
pub use tools::ToolName;

use crate::client::Client;
use crate::shutdown::Shutdown;

/// Why the MCP server could not run.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP session did not start: {0}")]
    Initialize(String),
    #[error("the MCP session ended abnormally: {0}")]
    Session(String),
}

/// The MCP server's state, shared by every request.
#[derive(Clone)]
pub struct JctMcp {
    client: Client,
    /// `--read-only`: only the tools that change nothing are listed or run.
    read_only: bool,
    agent: Arc<agent::Agent>,
}

impl JctMcp {
    pub fn new(client: Client, read_only: bool) -> Self {
        let agent = Arc::new(agent::Agent::new(client.clone(), format!("mcp-{}", std::process::id())));
        JctMcp { client, read_only, agent }
    }

    /// Heartbeats this server's worker registrations (and the tasks they hold); runs until
    /// dropped. [`serve_stdio`] runs it itself; an HTTP endpoint runs it beside its routes.
    pub async fn keep_alive(&self) {
        self.agent.clone().keep_alive().await
    }

    /// Deregisters this server's workers; their unfinished tasks go back to the queue.
    pub async fn deregister(&self) {
        self.agent.deregister_all().await
    }

    fn offered(&self) -> impl Iterator<Item = ToolName> + '_ {
        ToolName::ALL.into_iter().filter(|t| !self.read_only || t.is_read_only())
    }

    /// One tool call, as the tool result the agent sees.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> CallToolResult {
        let outcome = match ToolName::parse(name) {
            None => Err(ToolError::NotOffered(format!("there is no tool {name:?}"))),
            Some(tool) if self.read_only && !tool.is_read_only() => {
                Err(ToolError::NotOffered(format!("{name} changes state; this server was started with --read-only")))
            }
            Some(tool) => calls::call(&self.client, &self.agent, tool, arguments).await,
        };
        match outcome {
            // Trace files are text already; everything else is the server's JSON answer.
            Ok(serde_json::Value::String(text)) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Ok(answer) => CallToolResult::success(vec![ContentBlock::text(answer.to_string())]),
            Err(e) => {
                tracing::debug!(tool = name, error = %e, "tool call failed");
                CallToolResult::error(vec![ContentBlock::text(e.body().to_string())])
            }
        }
    }
}

impl ServerHandler for JctMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("devops-control-tower", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "JCT is a durable task queue. Operators enqueue, inspect, cancel and retry tasks, and \
                 pause queues or limit them (jct_list_queues, jct_set_queue_limits), and start \
                 workflows of dependent steps and follow them (jct_start_workflow, jct_get_workflow); an \
                 agent takes work with jct_claim_task, reads jct_get_issue_context when the task \
                 names a CWOM issue, reports progress with jct_append_log and jct_report_artifact, \
                 and ends with jct_complete_task or jct_fail_task.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.offered().map(ToolName::tool).collect()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(self.call(&request.name, request.arguments).await.into())
    }
}

/// Serves MCP on stdin/stdout until the client closes stdin or `shutdown` fires, keeping
/// this server's worker registrations alive meanwhile and removing them at the end.
pub async fn serve_stdio(server: JctMcp, shutdown: Shutdown) -> Result<(), McpError> {
    let beats = tokio::spawn(server.agent.clone().keep_alive());
    let agent = server.agent.clone();
    let outcome = async {
        let running =
            server.serve(rmcp::transport::stdio_pipes()).await.map_err(|e| McpError::Initialize(e.to_string()))?;
        let token = running.cancellation_token();
        let stop = tokio::spawn(async move {
            shutdown.stopping().await;
            token.cancel();
        });
        let quit = running.waiting().await;
        stop.abort();
        let quit = quit.map_err(|e| McpError::Session(e.to_string()))?;
        tracing::info!(reason = ?quit, "MCP session over");
        Ok(())
    }
    .await;
    beats.abort();
    agent.deregister_all().await;
    outcome
}
