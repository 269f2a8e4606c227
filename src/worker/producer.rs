//! The producer: decides when to claim, how many, and when each claimed task starts.
//!
//! A wake-up is only a hint. The producer always claims through the store and keeps
//! claiming while batches come back full. A wake-up that arrives during a claim causes one
//! more claim after it, because that claim may have looked before the new task was there.
//! When idle it sleeps until the earliest of: a wake-up, the poll interval, the next
//! scheduled `run_at`, a freed slot it has work for, or shutdown.
//!
//! Claims fill a local [`Buffer`] ahead of the slots when tasks are short (see
//! [`prefetch`]): one round trip then feeds many executions, and the next claim is already
//! in flight while the buffer drains. A slot whose task ended takes the next buffered task
//! itself; the producer only starts slots that are idle. Long tasks get no buffer, so a
//! daemon never sits on work another daemon could start. Buffered tasks hold leases like
//! running ones (the heartbeat renews them, cancels reach them) and are handed back at
//! shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::buffer::Buffer;
use super::completer::{Completion, CompletionSender};
use super::{executor, Worker};
use crate::shutdown::Shutdown;
use crate::store::{ClaimParams, StoreResult};
use crate::task::Task;
use crate::tunables::{PREFETCH_MAX, PREFETCH_MIN, PREFETCH_PER_SLOT, SCHEDULE_WAIT_FLOOR, SHORT_TASK};

/// How many tasks beyond the free slots the buffer may hold: none until tasks prove
/// short, then [`PREFETCH_PER_SLOT`] per slot within [`PREFETCH_MIN`]..=[`PREFETCH_MAX`].
/// Claims are made when the buffer is half empty, so this also sets their size.
pub fn prefetch(slots: usize, average_run: Option<Duration>) -> usize {
    match average_run {
        Some(avg) if avg < SHORT_TASK => (slots * PREFETCH_PER_SLOT).clamp(PREFETCH_MIN, PREFETCH_MAX),
        _ => 0,
    }
}

type Claim = Pin<Box<dyn Future<Output = StoreResult<Vec<Task>>> + Send>>;

/// Runs until shutdown is asked for; hands back what it buffered and returns without
/// waiting for running tasks.
pub async fn run(worker: &Arc<Worker>, slots: &Arc<Semaphore>, completer: &CompletionSender, shutdown: &Shutdown) {
    let poll = worker.settings.poll_interval;
    let buffer = Arc::new(Buffer::default());
    let mut claiming: Option<(Claim, OwnedSemaphorePermit)> = None;
    // Whether the queue may hold due work we have not claimed yet.
    let mut maybe_more = true;
    // A wake-up that came while a claim was in flight: that claim's snapshot may predate
    // the new task, so its result must not settle `maybe_more`.
    let mut woken_while_claiming = false;
    let mut woken = worker.wake.subscribe();
    loop {
        // Start an executor on every idle slot we hold work for.
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            let Some(task) = buffer.pop() else { break };
            executor::spawn(worker.clone(), task, permit, buffer.clone(), completer.clone(), shutdown.clone());
        }

        // Refill when the buffer runs low, not after every task.
        let extra = prefetch(worker.settings.slots, worker.average_run());
        buffer.set_refill_mark(extra / 2);
        let buffered = buffer.len();
        let slot_room = (slots.available_permits() + extra).saturating_sub(buffered);
        let place_room = worker.unfinished.available_permits();
        let room = slot_room.min(place_room);
        if claiming.is_none() && maybe_more && room > 0 && buffered <= extra / 2 {
            // Places for what the claim may return, taken before it is sent.
            if let Ok(places) = worker.unfinished.clone().try_acquire_many_owned(room as u32) {
                claiming = Some((claim(worker, room), places));
            }
        }

        let mut wait = poll;
        if claiming.is_none() && !maybe_more && buffered == 0 {
            if let Ok(Some(next)) = worker.store.next_scheduled().await {
                // A floor keeps a clock skew between daemon and database from spinning.
                let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until.max(SCHEDULE_WAIT_FLOOR));
            }
        }
        // A freed slot starts a buffered task, or makes room for a claim that had none. Only
        // then: when the claim waits for places alone, the free slots would answer a slot wait
        // at once, every time, and spin this loop. The decision uses the room computed above,
        // not a fresh look at the semaphores, so a slot or place freed since is never missed.
        let want_slot = buffered > 0 || (maybe_more && claiming.is_none() && slot_room == 0);
        let want_place = maybe_more && claiming.is_none() && place_room == 0;
        tokio::select! {
            biased;
            _ = shutdown.stopping() => break,
            claimed = async { (&mut claiming.as_mut().expect("guarded").0).await }, if claiming.is_some() => {
                let (_, places) = claiming.take().expect("guarded");
                let woken = std::mem::take(&mut woken_while_claiming);
                match claimed {
                    Ok(tasks) => {
                        maybe_more = tasks.len() == places.num_permits() || woken;
                        hold(worker, tasks, places, shutdown, &buffer);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                        maybe_more = false;
                    }
                }
            }
            _ = woken.changed() => {
                maybe_more = true;
                woken_while_claiming = claiming.is_some();
            }
            // The slots took the buffer down to the refill mark.
            _ = buffer.low() => {}
            permit = slots.clone().acquire_owned(), if want_slot => drop(permit),
            place = worker.unfinished.clone().acquire_owned(), if want_place => drop(place),
            _ = tokio::time::sleep(wait), if claiming.is_none() => maybe_more = true,
        }
    }
    // A claim still in flight may have taken tasks: let it land, then give everything back.
    // Not for longer than the grace period: with the database away it may never land, and
    // whatever it took comes back through the leases.
    if let Some((pending, places)) = claiming {
        if let Ok(Ok(tasks)) = tokio::time::timeout(worker.settings.shutdown_grace, pending).await {
            hold(worker, tasks, places, shutdown, &buffer);
        }
    }
    // The completer lets them go once they are back in the queue. Slots take no more
    // once shutdown is asked for.
    for task in buffer.drain() {
        completer.send(Completion::Release(crate::attempt::held_of(&task)));
    }
}

/// Holds freshly claimed tasks (each with one of the places taken for the claim; the
/// rest go back when `places` drops) and queues them for a slot.
fn hold(worker: &Worker, tasks: Vec<Task>, mut places: OwnedSemaphorePermit, shutdown: &Shutdown, buffer: &Buffer) {
    for task in &tasks {
        let place = places.split(1).expect("one place was taken per task asked for");
        worker.in_flight.hold(task.id, task.attempts, shutdown, place);
    }
    buffer.extend(tasks);
}

/// Starts a claim of up to `limit` tasks that runs while the producer keeps dispatching.
fn claim(worker: &Arc<Worker>, limit: usize) -> Claim {
    let worker = worker.clone();
    Box::pin(async move {
        let params = ClaimParams {
            worker: worker.settings.id.clone(),
            limit,
            lease: worker.settings.lease,
            types: worker.claim_types.clone(),
            queues: None,
        };
        worker.store.claim(&params).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_only_for_short_tasks() {
        assert_eq!(prefetch(4, None), 0, "unknown durations get no buffer");
        assert_eq!(prefetch(4, Some(Duration::from_millis(50))), 0);
        assert_eq!(prefetch(4, Some(Duration::from_micros(200))), 512);
        assert_eq!(prefetch(8, Some(Duration::from_micros(200))), 1024);
        assert_eq!(prefetch(100, Some(Duration::from_micros(200))), 2048);
    }
}
