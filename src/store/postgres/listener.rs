//! The PostgreSQL listener: a dedicated connection that LISTENs for inserted tasks.
//!
//! Its job is to turn the insert trigger's NOTIFY into a wake-up of the producer (and a
//! `jct_cancel` notification into a stop of the named running task), and to keep doing
//! so whatever happens to the connection. Dropped LISTEN connections that
//! silently stop dispatch are the classic queue bug, so this loop assumes the connection
//! will die: a socket error ends it, a periodic `SELECT 1` with a deadline catches a
//! half-open one, and every (re)connect re-issues LISTEN and wakes the producer at once so
//! whatever was inserted meanwhile runs without waiting for the poll.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{CANCEL_CHANNEL, NOTIFY_CHANNEL};
use crate::shutdown::Shutdown;
use crate::store::listener::{Listener, ListenerStatus, NotificationSink};
use crate::tunables::{LISTENER_BACKOFF_FIRST, LISTENER_BACKOFF_MAX, LISTENER_HEALTH_DEADLINE, LISTENER_HEALTH_EVERY};

/// The LISTEN connection's `application_name`.
pub const APPLICATION_NAME: &str = "jct-listener";

/// The LISTEN connection of one daemon.
pub struct PgListener {
    url: String,
}

impl PgListener {
    pub fn new(url: &str) -> Self {
        PgListener { url: url.to_string() }
    }
}

#[async_trait]
impl Listener for PgListener {
    async fn run(&self, sink: Arc<dyn NotificationSink>, status: Arc<ListenerStatus>, shutdown: Shutdown) {
        run(&self.url, sink, status, shutdown).await
    }
}

/// Listens until shutdown, reconnecting with jittered exponential backoff.
async fn run(url: &str, sink: Arc<dyn NotificationSink>, status: Arc<ListenerStatus>, shutdown: Shutdown) {
    let mut backoff = LISTENER_BACKOFF_FIRST;
    loop {
        let session = tokio::select! {
            _ = shutdown.stopping() => return,
            r = listen_once(url, &sink, &status) => r,
        };
        status.set(false);
        match session {
            // A session that ran a while earns a fresh backoff.
            Ok(()) => backoff = LISTENER_BACKOFF_FIRST,
            Err(e) => tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "LISTEN connection lost"),
        }
        let jitter = backoff.mul_f64(0.5 + 0.5 * rand::random::<f64>());
        tokio::select! {
            _ = shutdown.stopping() => return,
            _ = tokio::time::sleep(jitter) => {}
        }
        backoff = (backoff * 2).min(LISTENER_BACKOFF_MAX);
    }
}

/// One connection's life: connect, LISTEN, forward notifications until it breaks.
async fn listen_once(url: &str, sink: &Arc<dyn NotificationSink>, status: &ListenerStatus) -> Result<(), String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    // Named, so operators (and tests) can find the listener in pg_stat_activity.
    config.application_name(APPLICATION_NAME);
    config.connect_timeout(Duration::from_secs(5));
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| format!("connect: {e}"))?;
    let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel::<String>();
    // The connection object must be polled to deliver notifications; it runs in its own
    // task, wakes the producer straight from there, and reports how it ended.
    let notified = sink.clone();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let end = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CANCEL_CHANNEL => {
                    if let Ok(id) = n.payload().parse() {
                        notified.task_cancelled(id);
                    }
                }
                Some(Ok(AsyncMessage::Notification(_))) => notified.tasks_claimable(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("connection error: {e}"),
                None => break "connection closed by the server".to_string(),
            }
        };
        let _ = lost_tx.send(end);
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}; LISTEN {CANCEL_CHANNEL}"))
            .await
            .map_err(|e| format!("LISTEN: {e}"))?;
        status.set(true);
        tracing::info!(channel = NOTIFY_CHANNEL, "listening for new tasks");
        // Anything inserted while we were away is due now.
        sink.tasks_claimable();
        let mut health = tokio::time::interval(LISTENER_HEALTH_EVERY);
        health.tick().await;
        loop {
            tokio::select! {
                end = &mut lost_rx => return Err(end.unwrap_or_else(|_| "connection task ended".into())),
                _ = health.tick() => {
                    match tokio::time::timeout(LISTENER_HEALTH_DEADLINE, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(format!("health check: {e}")),
                        Err(_) => return Err("health check timed out (half-open connection?)".into()),
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}
