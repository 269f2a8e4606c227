//! `devops-control-tower`: parses the command line, builds the daemon, runs it.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use devops_control_tower::client::Client;
use devops_control_tower::config::{Config, DatabaseUrl};
use devops_control_tower::daemon::{self, Role};
use devops_control_tower::logging;
use devops_control_tower::mcp::{self, JctMcp};
use devops_control_tower::shutdown::{self, Shutdown};
use devops_control_tower::tunables::{HEALTHCHECK_TIMEOUT, MCP_DEREGISTER_WITHIN};

#[derive(Parser)]
#[command(
    name = "devops-control-tower",
    version,
    about = "Task intake and execution daemon (configured by environment; see README)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Run the HTTP API and the worker in one process (the default).
    Serve,
    /// Run only the HTTP API.
    Api,
    /// Run only the worker (no HTTP listener).
    Worker {
        /// Work for the JCT server at this URL over the HTTP worker protocol, with no
        /// database access (the key is JCT_API_KEY).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// GET /health on the configured JCT_BIND address; exit 0 when healthy.
    Healthcheck,
    /// Serve MCP over stdio for coding agents, against the JCT server at JCT_SERVER_URL.
    Mcp {
        /// Offer only the tools that change nothing.
        #[arg(long)]
        read_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("devops-control-tower: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Healthcheck = command {
        return healthcheck(config.bind);
    }
    if let Err(e) = logging::init(config.log_format, &config.log_filter) {
        eprintln!("devops-control-tower: cannot set up logging: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devops-control-tower: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let is_mcp = matches!(command, Command::Mcp { .. });
    let code = runtime.block_on(async move {
        let shutdown = Shutdown::new();
        if let Err(e) = shutdown::listen_for_signals(shutdown.clone()) {
            eprintln!("devops-control-tower: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
        let role = match command {
            Command::Serve => Role::Serve,
            Command::Api => Role::Api,
            Command::Worker { server: None } => Role::Worker,
            Command::Worker { server: Some(url) } => {
                return match daemon::run_http_worker(&config, &url, shutdown).await {
                    Ok(()) => {
                        tracing::info!("stopped cleanly");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("devops-control-tower: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            Command::Migrate => return migrate(&config, &shutdown).await,
            Command::Mcp { read_only } => return serve_mcp(&config, read_only, shutdown).await,
            Command::Healthcheck => unreachable!("handled before the runtime starts"),
        };
        match daemon::start(&config, role, shutdown).await {
            Ok(running) => {
                running.wait().await;
                tracing::info!("stopped cleanly");
                ExitCode::SUCCESS
            }
            Err(daemon::StartError::Interrupted) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("devops-control-tower: {e}");
                ExitCode::FAILURE
            }
        }
    });
    if is_mcp {
        // A read of stdin that never ends (the client still holds the pipe open after a
        // signal) must not keep the process from exiting.
        runtime.shutdown_timeout(MCP_DEREGISTER_WITHIN);
    }
    code
}

/// `mcp`: stdout carries the protocol; the log goes to stderr like every role's.
async fn serve_mcp(config: &Config, read_only: bool, shutdown: Shutdown) -> ExitCode {
    let client = match Client::new(&config.server_url, config.api_key.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("devops-control-tower: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(server = %config.server_url, read_only, "MCP server on stdio");
    match mcp::serve_stdio(JctMcp::new(client, read_only), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devops-control-tower: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opening a store migrates it; that is all `migrate` needs to do.
async fn migrate(config: &Config, shutdown: &Shutdown) -> ExitCode {
    match daemon::open_store(config, shutdown).await {
        Ok(_) => {
            let what = match &config.database {
                DatabaseUrl::Postgres(_) => "PostgreSQL",
                DatabaseUrl::Sqlite(_) => "SQLite",
            };
            tracing::info!(store = %config.database.redacted(), "{what} schema is up to date");
            ExitCode::SUCCESS
        }
        Err(daemon::StartError::Interrupted) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("devops-control-tower: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /health` through the API client, for container healthchecks: healthy when the
/// daemon answers 200 `{"status": "ok"}` within `HEALTHCHECK_TIMEOUT`.
fn healthcheck(bind: SocketAddr) -> ExitCode {
    let mut addr = bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healthcheck: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = runtime.block_on(async {
        let client = Client::new(&format!("http://{addr}"), None)?.within(HEALTHCHECK_TIMEOUT);
        client.get_json("/health").await
    });
    match answer {
        Ok(body) if body["status"] == "ok" => ExitCode::SUCCESS,
        Ok(body) => {
            eprintln!("healthcheck: {addr} answered {body}, not {{\"status\": \"ok\"}}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
