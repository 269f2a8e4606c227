//! Maintenance: the home of the periodic services that keep the table honest, with one
//! lifecycle and one leadership.
//!
//! A [`Service`] is one periodic job: it says how often it runs and does one pass per call.
//! Services are registered on [`Maintenance`] (one registration point: [`Maintenance::with`];
//! `daemon` only says which run in which role), and [`Maintenance::run`] drives them all:
//! - **start**: spawned by the daemon in every role that has a store;
//! - **leadership**: on every [`LEADER_RENEW_EVERY`] it asks the store for the lease named
//!   [`LEADERSHIP`] ([`leader::Leadership`]); only the leader runs the services, so a fleet
//!   of daemons rescues leases once, not once per daemon;
//! - **soft stop** (shutdown asked): no pass starts; the leadership is given up at once, so
//!   another daemon takes over without waiting for the lease to expire;
//! - **hard stop** (grace over): a pass still running is dropped.
//!
//! The schedule [`Ticker`] lives here too but is no periodic [`Service`]: it sleeps until
//! the next tick of any schedule and runs on every daemon, leader or not ([`ticker`] says
//! why); [`Maintenance::with_ticker`] registers it.
//!
//! Leadership is an efficiency, never what makes a service correct: every service's
//! statements are right when two daemons run them at once (the rescue takes rows `FOR
//! UPDATE SKIP LOCKED`; exactly-once comes from unique keys and fenced updates), so a stale
//! leader that still runs a pass after losing its lease does no harm.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::shutdown::Shutdown;
use crate::store::{StoreError, TaskStore};
use crate::tunables::LEADER_RENEW_EVERY;

pub mod expiry;
pub mod leader;
pub mod rescuer;
pub mod ticker;

pub use expiry::Expirer;
pub use leader::Leadership;
pub use rescuer::Rescuer;
pub use ticker::Ticker;

/// The leadership the maintenance services run under.
pub const LEADERSHIP: &str = "maintenance";

/// One periodic maintenance job.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// How long from the start of one pass to the start of the next.
    fn every(&self) -> Duration;
    /// One pass.
    async fn run_once(&self) -> Result<(), StoreError>;
}

/// The maintenance services of one daemon.
pub struct Maintenance {
    services: Vec<Arc<dyn Service>>,
    leadership: Leadership,
    /// The schedule ticker, run beside the services on every daemon.
    ticker: Option<Ticker>,
}

impl Maintenance {
    /// No services yet; `holder` names this daemon in the leadership row.
    pub fn new(store: Arc<dyn TaskStore>, holder: String) -> Self {
        Maintenance { services: Vec::new(), leadership: Leadership::new(store, LEADERSHIP, holder), ticker: None }
    }

    /// Registers a service.
    pub fn with(mut self, service: Arc<dyn Service>) -> Self {
        self.services.push(service);
        self
    }

    /// Registers the schedule ticker.
    pub fn with_ticker(mut self, ticker: Ticker) -> Self {
        self.ticker = Some(ticker);
        self
    }

    /// Runs until shutdown: keeps or seeks the leadership, and while leading runs each
    /// service when it is due; the ticker runs throughout.
    pub async fn run(mut self, shutdown: Shutdown) {
        let ticker = self.ticker.take().map(|t| tokio::spawn(t.run(shutdown.clone())));
        let mut next: Vec<Instant> = self.services.iter().map(|_| Instant::now()).collect();
        let mut renew = tokio::time::interval(LEADER_RENEW_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        loop {
            let due = next.iter().min().copied().unwrap_or_else(|| Instant::now() + LEADER_RENEW_EVERY);
            tokio::select! {
                _ = shutdown.stopping() => break,
                _ = renew.tick() => {
                    let now_leading = self.leadership.keep().await;
                    if now_leading && !leading {
                        // A new leader runs every service at once: the last one may have died
                        // with leases to rescue.
                        next.iter_mut().for_each(|at| *at = Instant::now());
                    }
                    leading = now_leading;
                }
                _ = tokio::time::sleep_until(due), if leading => {
                    for (service, at) in self.services.iter().zip(next.iter_mut()) {
                        if *at > Instant::now() {
                            continue;
                        }
                        *at = Instant::now() + service.every();
                        let pass = tokio::select! {
                            r = service.run_once() => Some(r),
                            _ = shutdown.hard() => None,
                        };
                        match pass {
                            Some(Ok(())) => {}
                            Some(Err(e)) => tracing::warn!(service = service.name(), error = %e, "maintenance pass failed"),
                            None => return,
                        }
                    }
                }
            }
        }
        if leading {
            self.leadership.resign().await;
        }
        if let Some(ticker) = ticker {
            let _ = ticker.await;
        }
    }
}
