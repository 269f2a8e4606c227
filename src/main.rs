//! `devops-control-tower`: parses the command line, builds the daemon, runs it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use devops_control_tower::config::{Config, DatabaseUrl};
use devops_control_tower::daemon::{self, Role};
use devops_control_tower::logging;
use devops_control_tower::shutdown::{self, Shutdown};
use devops_control_tower::tunables::HEALTHCHECK_TIMEOUT;

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
    runtime.block_on(async move {
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
    })
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

/// A dependency-free HTTP/1.0 GET of /health, for container healthchecks.
fn healthcheck(bind: SocketAddr) -> ExitCode {
    let mut addr = bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let check = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, HEALTHCHECK_TIMEOUT)?;
        s.set_read_timeout(Some(HEALTHCHECK_TIMEOUT))?;
        s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"))
    };
    match check() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("healthcheck: {addr} answered, but not 200");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
