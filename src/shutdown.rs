//! Shutdown: one soft signal (stop taking work) and one hard signal (stop running work).
//!
//! Every long-lived loop selects on [`Shutdown::stopping`]. The worker turns the soft
//! signal into a drain: running tasks get the grace period, then [`Shutdown::hard`]
//! interrupts the rest. [`listen_for_signals`] maps SIGTERM/SIGINT onto the soft signal,
//! and a second signal onto an immediate exit.

use tokio_util::sync::CancellationToken;

/// Cloneable handle to the daemon's shutdown state.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    hard: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything to stop taking new work (idempotent).
    pub fn trigger(&self) {
        self.stop.cancel();
    }

    /// Interrupts running work: the grace period is over.
    pub fn trigger_hard(&self) {
        self.stop.cancel();
        self.hard.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once a stop was asked for.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Resolves once running work must be interrupted.
    pub async fn hard(&self) {
        self.hard.cancelled().await
    }

    /// A token cancelled on the hard signal, to hand to a handler.
    pub fn hard_token(&self) -> CancellationToken {
        self.hard.clone()
    }
}

/// Triggers `shutdown` on the first SIGTERM or SIGINT; exits the process at once on
/// the second.
pub fn listen_for_signals(shutdown: Shutdown) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down: no new tasks, running tasks may finish");
        shutdown.trigger();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal: exiting at once");
        std::process::exit(130);
    });
    Ok(())
}
