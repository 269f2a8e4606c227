//! The store conformance suite: every case runs against a real SQLite file and a real
//! PostgreSQL database, so both implementations keep one contract.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use devops_control_tower::lease::Held;
use devops_control_tower::store::{
    AttemptEnd, CancelError, ClaimParams, EnqueueError, Finish, LeadParams, LeaseState, RenewParams, RetryError,
    TaskStore,
};
use devops_control_tower::task::{NewTask, RetryPolicy, TaskFilter, TaskId, TaskStatus, WorkerId};
use serde_json::json;

fn worker(name: &str) -> WorkerId {
    WorkerId(name.to_string())
}

fn claim(w: &str, limit: usize) -> ClaimParams {
    claim_for(w, limit, Duration::from_secs(30))
}

/// Claims of the types these cases enqueue, from every queue.
fn claim_for(w: &str, limit: usize, lease: Duration) -> ClaimParams {
    ClaimParams { worker: worker(w), limit, lease, types: vec!["echo".into(), "fail".into()], queues: None }
}

/// The end of attempt `attempt` of `id`, fenced by holder `w`.
fn end(w: &str, id: TaskId, attempt: i32, finish: Finish) -> AttemptEnd {
    AttemptEnd { held: Held::new(id, worker(w), attempt), finish }
}

/// Writes ends; the ids whose write applied.
async fn finished(store: &dyn TaskStore, ends: &[AttemptEnd]) -> Vec<TaskId> {
    store.finish(ends).await.unwrap()
}

/// Renews attempt 1 of each of `ids` for holder `w`; the ids still held.
async fn renewed(store: &dyn TaskStore, w: &str, ids: &[TaskId], lease: Duration) -> Vec<TaskId> {
    let held: Vec<Held> = ids.iter().map(|id| Held::new(*id, worker(w), 1)).collect();
    let states = store.renew(RenewParams { attempts: &held, lease }).await.unwrap();
    assert_eq!(states.len(), held.len(), "a state for every attempt asked");
    held.iter().zip(states).filter(|(_, s)| matches!(s, LeaseState::Held { .. })).map(|(h, _)| h.id).collect()
}

async fn enqueue(store: &dyn TaskStore, t: &str) -> TaskId {
    store.enqueue(NewTask::new(t, json!({ "n": 1 }))).await.unwrap().id
}

/// Runs every case of `$cases` against a fresh SQLite file (module `$sqlite`) and a fresh
/// PostgreSQL database (module `$postgres`), each opened with its `$open` (`store` or
/// `backend`).
macro_rules! on_both_stores {
    ($sqlite:ident, $postgres:ident, $cases:ident, $open:ident; $($case:ident),* $(,)?) => {
        mod $sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::support::SqliteDb::new();
                    crate::store_conformance::$cases::$case(db.$open().await).await;
                }
            )*
        }
        mod $postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = crate::support::PgDb::new().await;
                    crate::store_conformance::$cases::$case(db.$open().await).await;
                }
            )*
        }
    };
}

mod cases {
    use super::*;

    pub async fn enqueue_then_get_round_trips(store: Arc<dyn TaskStore>) {
        let mut t = NewTask::new("echo", json!({"nested": {"a": [1, 2, 3]}, "s": "é"}));
        t.queue = "builds".into();
        t.priority = 7;
        t.max_attempts = 5;
        t.timeout_seconds = 60;
        t.trace_id = Some("trace-1".into());
        let stored = store.enqueue(t.clone()).await.unwrap();
        assert_eq!(stored.id, t.id);
        assert_eq!(stored.status, TaskStatus::Queued);
        assert_eq!(stored.attempts, 0);
        let got = store.get(t.id).await.unwrap().expect("stored task is found");
        assert_eq!(got.payload, t.payload);
        assert_eq!((got.queue.as_str(), got.priority, got.max_attempts, got.timeout_seconds), ("builds", 7, 5, 60));
        assert_eq!(got.trace_id.as_deref(), Some("trace-1"));
        assert!(got.started_at.is_none() && got.result.is_none());
        assert!((Utc::now() - got.created_at).num_seconds().abs() < 5);
    }

    pub async fn get_missing_is_none(store: Arc<dyn TaskStore>) {
        assert!(store.get(TaskId::new()).await.unwrap().is_none());
    }

    pub async fn claim_takes_due_tasks_by_priority(store: Arc<dyn TaskStore>) {
        let mut ids = Vec::new();
        for p in [0, 5, 1] {
            let mut t = NewTask::new("echo", json!({}));
            t.priority = p;
            ids.push(store.enqueue(t).await.unwrap().id);
        }
        let got = store.claim(&claim("w1", 2)).await.unwrap();
        assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[1], ids[2]]);
        for t in &got {
            assert_eq!(t.status, TaskStatus::Running);
            assert_eq!(t.attempts, 1);
            assert_eq!(t.locked_by.as_deref(), Some("w1"));
            assert!(t.locked_until.unwrap() > Utc::now() + chrono::Duration::seconds(20));
            assert!(t.started_at.is_some());
        }
        let rest = store.claim(&claim("w1", 10)).await.unwrap();
        assert_eq!(rest.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[0]]);
        assert!(store.claim(&claim("w1", 10)).await.unwrap().is_empty());
    }

    pub async fn claim_waits_for_run_at(store: Arc<dyn TaskStore>) {
        let mut t = NewTask::new("echo", json!({}));
        let at = Utc::now() + chrono::Duration::hours(1);
        t.run_at = Some(at);
        store.enqueue(t).await.unwrap();
        assert!(store.claim(&claim("w", 10)).await.unwrap().is_empty());
        let next = store.next_scheduled().await.unwrap().expect("a scheduled task");
        assert!((next - at).num_milliseconds().abs() < 5, "next {next} vs run_at {at}");
    }

    pub async fn concurrent_claims_never_share_a_task(store: Arc<dyn TaskStore>) {
        for _ in 0..200 {
            enqueue(&*store, "echo").await;
        }
        let mut joins = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            joins.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(&claim(&format!("w{w}"), 7)).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|t| t.id));
                }
            }));
        }
        let mut all = Vec::new();
        for j in joins {
            all.extend(j.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 200, "every task claimed once");
        assert_eq!(unique.len(), 200, "no task claimed twice");
    }

    pub async fn finish_is_fenced_by_worker_and_attempt(store: Arc<dyn TaskStore>) {
        let id = enqueue(&*store, "echo").await;
        let t = store.claim(&claim("w1", 1)).await.unwrap().remove(0);
        let done = |w: &str, attempt| end(w, id, attempt, Finish::Completed { result: json!({"ok": true}) });
        assert!(finished(&*store, &[done("intruder", t.attempts)]).await.is_empty());
        assert!(finished(&*store, &[done("w1", t.attempts + 1)]).await.is_empty());
        assert_eq!(store.finish(&[done("w1", t.attempts)]).await.unwrap(), vec![id]);
        assert!(finished(&*store, &[done("w1", t.attempts)]).await.is_empty(), "only once");
        let got = store.get(id).await.unwrap().unwrap();
        assert_eq!(got.status, TaskStatus::Completed);
        assert_eq!(got.result, Some(json!({"ok": true})));
        assert!(got.finished_at.is_some() && got.locked_by.is_none());
    }

    pub async fn finish_batches_mixed_outcomes(store: Arc<dyn TaskStore>) {
        let a = enqueue(&*store, "echo").await;
        let b = enqueue(&*store, "fail").await;
        let c = enqueue(&*store, "fail").await;
        let claimed = store.claim(&claim("w", 3)).await.unwrap();
        assert_eq!(claimed.len(), 3);
        let retry_at = Utc::now() + chrono::Duration::seconds(60);
        let outcomes = vec![
            end("w", a, 1, Finish::Completed { result: json!(1) }),
            end("w", b, 1, Finish::Retry { error: "boom".into(), run_at: retry_at }),
            end("w", c, 1, Finish::Failed { error: "fatal".into() }),
        ];
        let applied: HashSet<_> = finished(&*store, &outcomes).await.into_iter().collect();
        assert_eq!(applied, HashSet::from([a, b, c]));

        let b = store.get(b).await.unwrap().unwrap();
        assert_eq!(b.status, TaskStatus::Queued);
        assert_eq!(b.last_error.as_deref(), Some("boom"));
        assert!((b.run_at - retry_at).num_milliseconds().abs() < 5);
        assert!(b.locked_by.is_none() && b.finished_at.is_none());
        assert_eq!(b.attempts, 1, "the failed attempt stays counted");

        let c = store.get(c).await.unwrap().unwrap();
        assert_eq!(c.status, TaskStatus::Failed);
        assert_eq!(c.last_error.as_deref(), Some("fatal"));
        assert!(c.finished_at.is_some());
        // The retried task is not due yet.
        assert!(store.claim(&claim("w", 3)).await.unwrap().is_empty());
    }

    pub async fn cancel_only_queued(store: Arc<dyn TaskStore>) {
        let queued = enqueue(&*store, "echo").await;
        let cancelled = store.cancel(queued).await.unwrap();
        assert_eq!(cancelled.status, TaskStatus::Cancelled);
        assert!(cancelled.finished_at.is_some());
        assert!(matches!(
            store.cancel(queued).await,
            Err(CancelError::NotCancellable { status: TaskStatus::Cancelled, .. })
        ));
        assert!(matches!(store.cancel(TaskId::new()).await, Err(CancelError::NotFound(_))));
        // A cancelled task is never claimed.
        assert!(store.claim(&claim("w", 10)).await.unwrap().is_empty());
    }

    pub async fn cancel_running_fences_out_its_worker(store: Arc<dyn TaskStore>) {
        let id = enqueue(&*store, "echo").await;
        let t = store.claim(&claim("w", 1)).await.unwrap().remove(0);
        let cancelled = store.cancel(id).await.unwrap();
        assert_eq!(cancelled.status, TaskStatus::Cancelled);
        assert_eq!(cancelled.last_error.as_deref(), Some("cancelled while running"));
        assert!(cancelled.locked_by.is_none() && cancelled.finished_at.is_some());
        // Its daemon learns at the next heartbeat, and its late result is refused.
        assert!(renewed(&*store, "w", &[id], Duration::from_secs(30)).await.is_empty());
        let late = end("w", id, t.attempts, Finish::Completed { result: json!(1) });
        assert!(finished(&*store, &[late]).await.is_empty());
        assert_eq!(store.get(id).await.unwrap().unwrap().status, TaskStatus::Cancelled);
        let done = enqueue(&*store, "echo").await;
        let t = store.claim(&claim("w", 1)).await.unwrap().remove(0);
        let ok = end("w", done, t.attempts, Finish::Completed { result: json!(1) });
        store.finish(&[ok]).await.unwrap();
        assert!(matches!(
            store.cancel(done).await,
            Err(CancelError::NotCancellable { status: TaskStatus::Completed, .. })
        ));
    }

    pub async fn enqueue_batch_is_all_or_nothing(store: Arc<dyn TaskStore>) {
        let tasks: Vec<_> = (0..50).map(|i| NewTask::new("echo", json!({ "i": i }))).collect();
        let ids = store.enqueue_batch(tasks.clone()).await.unwrap();
        assert_eq!(ids, tasks.iter().map(|t| t.id).collect::<Vec<_>>());
        let got = store.get(ids[49]).await.unwrap().unwrap();
        assert_eq!((got.payload.clone(), got.status), (json!({"i": 49}), TaskStatus::Queued));

        // Every field survives both ways in: a plain batch (COPY on PostgreSQL) and one with
        // a start time (INSERT).
        let mut full = NewTask::new("echo", json!({"deep": [1, {"x": null}]}));
        (full.queue, full.priority, full.max_attempts, full.timeout_seconds) = ("q2".into(), -3, 7, 11);
        full.trace_id = Some("trace-batch".into());
        let mut later = full.clone();
        later.id = TaskId::new();
        later.run_at = Some(Utc::now() + chrono::Duration::hours(1));
        for t in [full, later] {
            store.enqueue_batch(vec![t.clone()]).await.unwrap();
            let got = store.get(t.id).await.unwrap().unwrap();
            assert_eq!(
                (&got.task_type, &got.payload, &got.queue, got.priority, got.max_attempts, got.timeout_seconds),
                (&t.task_type, &t.payload, &t.queue, t.priority, t.max_attempts, t.timeout_seconds)
            );
            assert_eq!(
                (got.trace_id.as_deref(), got.status, got.attempts),
                (Some("trace-batch"), TaskStatus::Queued, 0)
            );
            match t.run_at {
                Some(at) => assert!((got.run_at - at).num_milliseconds().abs() <= 1, "{} vs {at}", got.run_at),
                None => assert!(got.run_at <= Utc::now() + chrono::Duration::seconds(1), "due now: {}", got.run_at),
            }
        }

        let mut keyed = NewTask::new("echo", json!({}));
        keyed.idempotency_key = Some("k".into());
        let holder = store.enqueue(keyed.clone()).await.unwrap().id;
        let mut clash = NewTask::new("echo", json!({}));
        clash.idempotency_key = Some("k".into());
        let batch = vec![NewTask::new("echo", json!({})), clash, NewTask::new("echo", json!({}))];
        match store.enqueue_batch(batch).await {
            Err(EnqueueError::Duplicate { existing }) => assert_eq!(existing, holder),
            other => panic!("expected Duplicate, got {other:?}"),
        }
        let mut twice_a = NewTask::new("echo", json!({}));
        twice_a.idempotency_key = Some("inside".into());
        let mut twice_b = NewTask::new("echo", json!({}));
        twice_b.idempotency_key = Some("inside".into());
        assert!(matches!(store.enqueue_batch(vec![twice_a, twice_b]).await, Err(EnqueueError::Duplicate { .. })));
        let all = store.list(&TaskFilter { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(all.len(), 53, "the refused batches inserted nothing");
    }

    pub async fn idempotency_key_is_unique(store: Arc<dyn TaskStore>) {
        let mut t = NewTask::new("echo", json!({}));
        t.idempotency_key = Some("key-1".into());
        let first = store.enqueue(t.clone()).await.unwrap();
        let mut again = t.clone();
        again.id = TaskId::new();
        match store.enqueue(again).await {
            Err(EnqueueError::Duplicate { existing }) => assert_eq!(existing, first.id),
            other => panic!("expected Duplicate, got {other:?}"),
        }
        let all = store.list(&TaskFilter { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(all.len(), 1, "the duplicate inserted nothing");
    }

    pub async fn list_filters_newest_first(store: Arc<dyn TaskStore>) {
        let mut ids = Vec::new();
        for (i, ty) in ["echo", "fail", "echo", "sleep", "echo"].iter().enumerate() {
            let mut t = NewTask::new(*ty, json!({ "i": i }));
            if i == 3 {
                t.queue = "other".into();
            }
            ids.push(store.enqueue(t).await.unwrap().id);
            // Distinct creation times, so "newest first" has one right answer.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let all = store.list(&TaskFilter { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>());
        let echoes =
            store.list(&TaskFilter { task_type: Some("echo".into()), limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(echoes.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[4], ids[2], ids[0]]);
        let page = store
            .list(&TaskFilter { task_type: Some("echo".into()), limit: 1, offset: 1, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[2]]);
        let other =
            store.list(&TaskFilter { queue: Some("other".into()), limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(other.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[3]]);
        store.cancel(ids[1]).await.unwrap();
        let cancelled = store
            .list(&TaskFilter { status: Some(TaskStatus::Cancelled), limit: 100, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(cancelled.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[1]]);
    }

    pub async fn rescue_returns_expired_leases(store: Arc<dyn TaskStore>) {
        let retry = enqueue(&*store, "echo").await;
        let mut last = NewTask::new("echo", json!({}));
        last.max_attempts = 1;
        let last = store.enqueue(last).await.unwrap().id;
        let short = claim_for("dead", 2, Duration::from_millis(50));
        assert_eq!(store.claim(&short).await.unwrap().len(), 2);
        // The rescued task waits like a failed attempt: 400 ms · 2^0, times a jitter
        // factor from 0.75 to 1.
        let policy = RetryPolicy { base: Duration::from_millis(400), cap: Duration::from_secs(10) };
        assert!(store.rescue_expired(&policy).await.unwrap().is_empty(), "leases still valid");
        tokio::time::sleep(Duration::from_millis(120)).await;
        let before = Utc::now();
        let mut rescued = store.rescue_expired(&policy).await.unwrap();
        let after = Utc::now();
        rescued.sort_by_key(|r| r.id);
        let mut want = vec![(retry, TaskStatus::Queued), (last, TaskStatus::Failed)];
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(), want);
        for r in &rescued {
            assert_eq!((r.attempt, r.worker.as_deref()), (1, Some("dead")), "{r:?}");
            assert!(r.started_at.is_some(), "the expired attempt's claim time: {r:?}");
        }
        let r = store.get(retry).await.unwrap().unwrap();
        assert_eq!(r.status, TaskStatus::Queued);
        let error = r.last_error.unwrap();
        assert!(
            error.starts_with("lease 20") && error.ends_with("of worker dead expired while running (attempt 1)"),
            "{error}"
        );
        assert!(r.locked_by.is_none());
        let wait = r.run_at - before;
        assert!(
            r.run_at >= before + chrono::Duration::milliseconds(300)
                && r.run_at <= after + chrono::Duration::milliseconds(400),
            "run_at {} is not 300-400 ms after the rescue (waits {wait})",
            r.run_at
        );
        assert!(store.claim(&claim("alive", 5)).await.unwrap().is_empty(), "not due before its backoff");
        tokio::time::sleep((r.run_at - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(20)).await;
        let l = store.get(last).await.unwrap().unwrap();
        assert_eq!(l.status, TaskStatus::Failed, "attempts used up");
        // The dead worker's late result is refused.
        let late = end("dead", retry, 1, Finish::Completed { result: json!(0) });
        assert!(finished(&*store, &[late]).await.is_empty());
        let again = store.claim(&claim("alive", 5)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);
    }

    pub async fn heartbeat_extends_only_own_leases(store: Arc<dyn TaskStore>) {
        let id = enqueue(&*store, "echo").await;
        let short = claim_for("w", 1, Duration::from_secs(1));
        store.claim(&short).await.unwrap();
        assert!(renewed(&*store, "other", &[id], Duration::from_secs(60)).await.is_empty());
        assert_eq!(renewed(&*store, "w", &[id], Duration::from_secs(60)).await, vec![id]);
        let t = store.get(id).await.unwrap().unwrap();
        assert!(t.locked_until.unwrap() > Utc::now() + chrono::Duration::seconds(50));
    }

    pub async fn release_gives_back_uncounted(store: Arc<dyn TaskStore>) {
        let id = enqueue(&*store, "echo").await;
        store.claim(&claim("w", 1)).await.unwrap();
        assert!(store.release(&[Held::new(id, worker("other"), 1)]).await.unwrap().is_empty());
        assert!(store.release(&[Held::new(id, worker("w"), 2)]).await.unwrap().is_empty(), "another attempt's fence");
        assert_eq!(store.release(&[Held::new(id, worker("w"), 1)]).await.unwrap(), vec![id]);
        let t = store.get(id).await.unwrap().unwrap();
        assert_eq!((t.status, t.attempts), (TaskStatus::Queued, 0));
        assert!(t.locked_by.is_none() && t.started_at.is_none());
        assert_eq!(store.claim(&claim("w2", 1)).await.unwrap()[0].attempts, 1);
    }

    /// Heartbeats and finishes over the same rows at the same time, the finishes in a
    /// scrambled order: both lock in id order, so neither ever fails with a deadlock.
    pub async fn heartbeat_and_finish_never_deadlock(store: Arc<dyn TaskStore>) {
        for round in 0..5 {
            let mut ids = Vec::new();
            for _ in 0..400 {
                ids.push(enqueue(&*store, "echo").await);
            }
            store.claim(&claim("w", 400)).await.unwrap();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let beats: Vec<_> = (0..2)
                .map(|_| {
                    let (store, ids, stop) = (store.clone(), ids.clone(), stop.clone());
                    tokio::spawn(async move {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            renewed(&*store, "w", &ids, Duration::from_secs(30)).await;
                        }
                    })
                })
                .collect();
            ids.sort_by_key(|id| id.0.as_u128().rotate_left(17 + round));
            let finishes: Vec<_> = ids
                .chunks(100)
                .map(|chunk| {
                    let (store, chunk) = (store.clone(), chunk.to_vec());
                    tokio::spawn(async move {
                        let outcomes: Vec<AttemptEnd> = chunk
                            .iter()
                            .map(|id| end("w", *id, 1, Finish::Completed { result: json!(null) }))
                            .collect();
                        store.finish(&outcomes).await.unwrap().len()
                    })
                })
                .collect();
            let mut done = 0;
            for f in finishes {
                done += f.await.unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for b in beats {
                b.await.unwrap();
            }
            assert_eq!(done, 400);
        }
    }

    pub async fn ping_answers(store: Arc<dyn TaskStore>) {
        store.ping().await.unwrap();
    }

    pub async fn claim_takes_only_the_types_and_queues_asked_for(store: Arc<dyn TaskStore>) {
        let mut build = NewTask::new("build", json!({}));
        build.queue = "ci".into();
        let build = store.enqueue(build).await.unwrap().id;
        let lint = store.enqueue(NewTask::new("lint", json!({}))).await.unwrap().id;
        let echo = enqueue(&*store, "echo").await;
        let params = |types: &[&str], queues: Option<&[&str]>| ClaimParams {
            worker: worker("w"),
            limit: 10,
            lease: Duration::from_secs(30),
            types: types.iter().map(|t| t.to_string()).collect(),
            queues: queues.map(|q| q.iter().map(|t| t.to_string()).collect()),
        };
        assert!(store.claim(&params(&["deploy"], None)).await.unwrap().is_empty(), "nobody asked for these types");
        assert!(store.claim(&params(&["build"], Some(&["default"]))).await.unwrap().is_empty(), "build is in ci");
        let got: Vec<TaskId> =
            store.claim(&params(&["build", "lint"], Some(&["ci"]))).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(got, vec![build]);
        let got: Vec<TaskId> =
            store.claim(&params(&["lint", "echo"], None)).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(got.len(), 2);
        assert!(got.contains(&lint) && got.contains(&echo));
        let queued = store.queued_by_type().await.unwrap();
        assert!(queued.is_empty(), "everything was claimed: {queued:?}");
        store.enqueue(NewTask::new("lint", json!({}))).await.unwrap();
        assert_eq!(store.queued_by_type().await.unwrap(), vec![("lint".to_string(), 1)]);
    }

    pub async fn lease_tokens_fence_one_attempt(store: Arc<dyn TaskStore>) {
        let id = enqueue(&*store, "echo").await;
        let t = store.claim(&claim("w", 1)).await.unwrap().remove(0);
        let held = Held::new(id, worker("w"), t.attempts);
        let stale = Held::new(id, worker("w"), t.attempts - 1);
        let other = Held::new(id, worker("x"), t.attempts);
        assert!(store.holds(&held).await.unwrap());
        assert!(!store.holds(&stale).await.unwrap() && !store.holds(&other).await.unwrap());
        assert_eq!(store.running_count(&worker("w")).await.unwrap(), 1);
        assert_eq!(store.running_count(&worker("x")).await.unwrap(), 0);
        let renew = |h: &Held, secs| {
            let (store, h) = (store.clone(), h.clone());
            async move {
                let lease = Duration::from_secs(secs);
                store.renew(RenewParams { attempts: std::slice::from_ref(&h), lease }).await.unwrap().remove(0)
            }
        };
        match renew(&held, 90).await {
            LeaseState::Held { until } => assert!(until > Utc::now() + chrono::Duration::seconds(80)),
            other => panic!("expected the lease held, got {other:?}"),
        }
        assert_eq!(renew(&stale, 90).await, LeaseState::Lost);
        // Several at once: each answered in the order asked.
        let lease = Duration::from_secs(30);
        let states = store.renew(RenewParams { attempts: &[stale.clone(), held.clone(), other.clone()], lease }).await;
        let states = states.unwrap();
        assert!(matches!(states[..], [LeaseState::Lost, LeaseState::Held { .. }, LeaseState::Lost]), "{states:?}");
        assert!(store.release(std::slice::from_ref(&other)).await.unwrap().is_empty(), "another worker's token");
        assert_eq!(store.release(std::slice::from_ref(&held)).await.unwrap(), vec![id]);
        let back = store.get(id).await.unwrap().unwrap();
        assert_eq!((back.status, back.attempts), (TaskStatus::Queued, 0), "released uncounted");
        assert!(!store.holds(&held).await.unwrap());
        // Claimed again and cancelled: the holder's renewal says so.
        let t = store.claim(&claim("w", 1)).await.unwrap().remove(0);
        let held = Held::new(id, worker("w"), t.attempts);
        assert!(store.holds(&held).await.unwrap());
        store.cancel(id).await.unwrap();
        assert_eq!(renew(&held, 30).await, LeaseState::Cancelled);
        assert!(!store.holds(&held).await.unwrap());
        // One end, answered whole; refused when the fence does not match.
        let next = enqueue(&*store, "echo").await;
        let t = store.claim(&claim("w", 1)).await.unwrap().remove(0);
        let done = |w: &str, attempt| end(w, next, attempt, Finish::Completed { result: json!({ "ok": 1 }) });
        assert!(store.finish_reporting(&done("w", t.attempts + 1)).await.unwrap().is_none(), "wrong attempt");
        assert!(store.finish_reporting(&done("x", t.attempts)).await.unwrap().is_none(), "wrong holder");
        let ended = store.finish_reporting(&done("w", t.attempts)).await.unwrap().expect("the fence matches");
        assert_eq!((ended.id, ended.status, ended.result), (next, TaskStatus::Completed, Some(json!({ "ok": 1 }))));
        assert!(ended.finished_at.is_some() && ended.locked_by.is_none());
    }

    /// The maintenance leadership: one holder at a time, renewed by its holder, taken over
    /// once it expires, handed over at once when resigned.
    pub async fn leadership_has_one_holder_at_a_time(store: Arc<dyn TaskStore>) {
        let lead = |holder: &'static str, ms: u64| {
            let store = store.clone();
            async move {
                let params = LeadParams { name: "maintenance", holder, ttl: Duration::from_millis(ms) };
                store.lead(params).await.unwrap()
            }
        };
        assert!(lead("a", 300).await, "free: taken");
        assert!(!lead("b", 300).await, "held by a");
        assert!(lead("a", 300).await, "its holder renews it");
        assert!(!lead("b", 300).await);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(lead("b", 60_000).await, "expired: taken over");
        assert!(!lead("a", 300).await, "the old holder does not get it back");
        store.resign("maintenance", "a").await.unwrap();
        assert!(!lead("a", 300).await, "only its holder can give it up");
        store.resign("maintenance", "b").await.unwrap();
        assert!(lead("a", 300).await, "given up: free at once");
    }

    pub async fn retry_requeues_only_failed_or_cancelled(store: Arc<dyn TaskStore>) {
        let mut once = NewTask::new("fail", json!({}));
        once.max_attempts = 1;
        let id = store.enqueue(once).await.unwrap().id;
        assert!(matches!(store.retry(id).await, Err(RetryError::NotRetryable { status: TaskStatus::Queued, .. })));
        let t = store.claim(&claim("w", 1)).await.unwrap().remove(0);
        let failed = end("w", id, t.attempts, Finish::Failed { error: "boom".into() });
        store.finish(&[failed]).await.unwrap();
        let again = store.retry(id).await.unwrap();
        assert_eq!((again.status, again.attempts), (TaskStatus::Queued, 0));
        assert!(again.finished_at.is_none() && again.locked_by.is_none());
        assert_eq!(again.last_error.as_deref(), Some("boom"), "the last error stays for the record");
        assert_eq!(store.claim(&claim("w", 1)).await.unwrap().len(), 1, "claimable again");
        assert!(matches!(store.retry(TaskId::new()).await, Err(RetryError::NotFound(_))));
    }

    pub async fn keyset_pages_and_issue_filter(store: Arc<dyn TaskStore>) {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(store.enqueue(NewTask::new("echo", json!({ "i": i }))).await.unwrap().id);
        }
        let page = |before: Option<TaskId>| TaskFilter { before, limit: 2, ..Default::default() };
        let first = store.list(&page(None)).await.unwrap();
        assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[4], ids[3]], "newest first");
        let second = store.list(&page(Some(ids[3]))).await.unwrap();
        assert_eq!(second.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
        let last = store.list_ids(&page(Some(ids[1]))).await.unwrap();
        assert_eq!(last, vec![ids[0]], "list_ids pages the same way");
        let none = TaskFilter { cwom_issue_id: Some("no-such-issue".into()), limit: 10, ..Default::default() };
        assert!(store.list(&none).await.unwrap().is_empty());
        let failed = TaskFilter { status: Some(TaskStatus::Failed), limit: 10, ..Default::default() };
        assert!(store.list_ids(&failed).await.unwrap().is_empty());
    }

    pub async fn bulk_cancel_and_retry_touch_only_eligible_tasks(store: Arc<dyn TaskStore>) {
        let queued = enqueue(&*store, "echo").await;
        let running = enqueue(&*store, "echo").await;
        let done = enqueue(&*store, "echo").await;
        // Claim all three, give `queued` back, complete `done`: one task in each state.
        let claimed = store.claim(&claim("w", 3)).await.unwrap();
        assert_eq!(claimed.len(), 3);
        let attempt = |id| claimed.iter().find(|t| t.id == id).unwrap().attempts;
        store.release(&[Held::new(queued, worker("w"), attempt(queued))]).await.unwrap();
        let completed = end("w", done, attempt(done), Finish::Completed { result: json!(1) });
        assert_eq!(finished(&*store, &[completed]).await, vec![done]);
        let missing = TaskId::new();

        let mut cancelled = store.cancel_many(&[queued, running, done, missing]).await.unwrap();
        cancelled.sort_by_key(|id| id.0);
        let mut expected = vec![queued, running];
        expected.sort_by_key(|id| id.0);
        assert_eq!(cancelled, expected, "only queued and running tasks are cancelled");
        let r = store.get(running).await.unwrap().unwrap();
        assert_eq!((r.status, r.last_error.as_deref()), (TaskStatus::Cancelled, Some("cancelled while running")));
        assert!(r.locked_by.is_none() && r.finished_at.is_some());
        assert!(store.cancel_many(&[queued]).await.unwrap().is_empty(), "only once");
        // The cancelled running attempt's late result is refused by the fence.
        let late = end("w", running, attempt(running), Finish::Completed { result: json!(2) });
        assert!(finished(&*store, &[late]).await.is_empty());

        let mut retried = store.retry_many(&[queued, running, done, missing]).await.unwrap();
        retried.sort_by_key(|id| id.0);
        assert_eq!(retried, expected, "only failed or cancelled tasks are retried");
        let q = store.get(queued).await.unwrap().unwrap();
        assert_eq!((q.status, q.attempts), (TaskStatus::Queued, 0));
        assert!(q.finished_at.is_none());
        assert_eq!(store.get(done).await.unwrap().unwrap().status, TaskStatus::Completed);
        assert!(store.cancel_many(&[]).await.unwrap().is_empty() && store.retry_many(&[]).await.unwrap().is_empty());
    }

    pub async fn overview_counts_capped_and_per_minute(store: Arc<dyn TaskStore>) {
        let empty = store.overview(3, Utc::now() - chrono::Duration::hours(1)).await.unwrap();
        assert!(empty.by_status.iter().all(|(_, c)| c.n == 0 && !c.capped));
        assert_eq!(empty.by_status.len(), TaskStatus::ALL.len(), "every status is reported");
        assert!(empty.oldest_queued_at.is_none() && empty.per_minute.is_empty() && empty.active_by_queue.is_empty());

        let mut first = NewTask::new("echo", json!({}));
        first.queue = "a".into();
        let first = store.enqueue(first).await.unwrap();
        for _ in 0..4 {
            enqueue(&*store, "echo").await;
        }
        let ok = enqueue(&*store, "echo").await;
        let bad = enqueue(&*store, "fail").await;
        // Claim all, end two, give the rest back.
        let claimed = store.claim(&claim("w", 10)).await.unwrap();
        let attempt = |id| claimed.iter().find(|t| t.id == id).unwrap().attempts;
        let outcomes = [
            end("w", ok, attempt(ok), Finish::Completed { result: json!(1) }),
            end("w", bad, attempt(bad), Finish::Failed { error: "x".into() }),
        ];
        store.finish(&outcomes).await.unwrap();
        let rest: Vec<Held> = claimed
            .iter()
            .filter(|t| t.id != ok && t.id != bad)
            .map(|t| Held::new(t.id, worker("w"), t.attempts))
            .collect();
        store.release(&rest).await.unwrap();

        let ov = store.overview(3, Utc::now() - chrono::Duration::hours(1)).await.unwrap();
        let of = |s: TaskStatus| ov.by_status.iter().find(|(st, _)| *st == s).unwrap().1;
        assert_eq!((of(TaskStatus::Queued).n, of(TaskStatus::Queued).capped), (3, true), "5 queued, cap 3");
        assert_eq!((of(TaskStatus::Completed).n, of(TaskStatus::Completed).capped), (1, false));
        assert_eq!((of(TaskStatus::Failed).n, of(TaskStatus::Running).n), (1, 0));
        let oldest = ov.oldest_queued_at.expect("an oldest queued task");
        assert!((oldest - first.created_at).num_milliseconds().abs() < 1, "the first task is the oldest");
        assert!(ov.active_by_queue_capped, "4 of the 5 active rows were read (cap + 1)");
        let total: u64 = ov.per_minute.iter().map(|m| m.completed).sum();
        let failures: u64 = ov.per_minute.iter().map(|m| m.failed).sum();
        assert_eq!((total, failures), (1, 1));
        let wide = store.overview(100, Utc::now() - chrono::Duration::hours(1)).await.unwrap();
        assert!(!wide.active_by_queue_capped);
        assert_eq!(wide.active_by_queue, vec![("a".to_string(), 1, 0), ("default".to_string(), 4, 0)]);
        let later = store.overview(100, Utc::now() + chrono::Duration::minutes(1)).await.unwrap();
        assert!(later.per_minute.is_empty(), "nothing finished after `since`");
    }
}

on_both_stores!(sqlite, postgres, cases, store;
    enqueue_then_get_round_trips,
    get_missing_is_none,
    claim_takes_due_tasks_by_priority,
    claim_waits_for_run_at,
    concurrent_claims_never_share_a_task,
    finish_is_fenced_by_worker_and_attempt,
    finish_batches_mixed_outcomes,
    cancel_only_queued,
    cancel_running_fences_out_its_worker,
    enqueue_batch_is_all_or_nothing,
    idempotency_key_is_unique,
    list_filters_newest_first,
    rescue_returns_expired_leases,
    heartbeat_extends_only_own_leases,
    release_gives_back_uncounted,
    heartbeat_and_finish_never_deadlock,
    ping_answers,
    claim_takes_only_the_types_and_queues_asked_for,
    lease_tokens_fence_one_attempt,
    leadership_has_one_holder_at_a_time,
    retry_requeues_only_failed_or_cancelled,
    keyset_pages_and_issue_filter,
    bulk_cancel_and_retry_touch_only_eligible_tasks,
    overview_counts_capped_and_per_minute,
);

/// The worker registry, on both stores.
mod registry {
    use super::*;
    use devops_control_tower::registration::NewWorker;
    use devops_control_tower::store::Backend;

    fn new_worker(types: &[&str]) -> NewWorker {
        serde_json::from_value(json!({ "name": "py-1", "types": types, "max_slots": 3, "labels": { "host": "a" } }))
            .unwrap()
    }

    pub async fn register_beat_list_deregister(backend: Backend) {
        let (workers, tasks) = (backend.workers(), backend.tasks());
        let id = WorkerId::generate();
        let record = workers.register(&id, &new_worker(&["build", "lint"])).await.unwrap();
        assert_eq!((record.worker_id.clone(), record.max_slots, record.queues.clone()), (id.clone(), 3, None));
        assert_eq!(record.labels["host"], "a");
        assert_eq!(workers.get(&id).await.unwrap().unwrap(), record);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let beat = workers.beat(&id).await.unwrap().unwrap();
        assert!(beat.last_heartbeat_at > record.last_heartbeat_at, "a beat moves the heartbeat time");
        assert!(workers.beat(&WorkerId("nobody".into())).await.unwrap().is_none());
        let mut served = workers.served_types().await.unwrap();
        served.sort();
        assert_eq!(served, ["build", "lint"]);

        // Two tasks held by the worker: listed as running, given back on deregister.
        for _ in 0..2 {
            tasks.enqueue(NewTask::new("build", json!({}))).await.unwrap();
        }
        let params = ClaimParams {
            worker: id.clone(),
            limit: 5,
            lease: Duration::from_secs(30),
            types: vec!["build".into()],
            queues: None,
        };
        assert_eq!(tasks.claim(&params).await.unwrap().len(), 2);
        let listed = workers.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0.worker_id.clone(), listed[0].1), (id.clone(), 2));
        assert_eq!(workers.deregister(&id).await.unwrap(), Some(2));
        assert!(workers.get(&id).await.unwrap().is_none());
        assert_eq!(workers.deregister(&id).await.unwrap(), None, "gone already");
        let queued = tasks
            .list(&TaskFilter { status: Some(TaskStatus::Queued), limit: 10, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(queued.len(), 2);
        assert!(queued.iter().all(|t| t.attempts == 0 && t.locked_by.is_none()), "given back uncounted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_registry_on_sqlite() {
    let db = support::SqliteDb::new();
    registry::register_beat_list_deregister(db.backend().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_registry_on_postgres() {
    let db = support::PgDb::new().await;
    registry::register_beat_list_deregister(db.backend().await).await;
}

/// Schedules and their fires, on both stores.
mod schedule_cases {
    use super::*;
    use chrono::{DateTime, Duration as TimeDelta};
    use devops_control_tower::schedule::{FireKind, FireOutcome, Overlap, Schedule, ScheduleSpec, Source, Started};
    use devops_control_tower::store::{Backend, FireParams, Fired, ScheduleError, ScheduleStore, SchedulesFingerprint};

    fn spec(name: &str, overlap: &str) -> ScheduleSpec {
        ScheduleSpec::from_body(
            json!({"name": name, "cron": "* * * * * *", "task": {"type": "echo", "payload": {"from": name}},
                   "overlap": overlap}),
            None,
        )
        .unwrap()
    }

    fn params(s: &Schedule, kind: FireKind, at: DateTime<Utc>) -> FireParams {
        let work = s.spec.target.fire(&s.spec.name, at, "trace".into()).unwrap();
        FireParams { name: s.spec.name.clone(), kind, scheduled_for: at, version: s.updated_at, work }
    }

    async fn fire(store: &dyn ScheduleStore, s: &Schedule, at: DateTime<Utc>) -> FireOutcome {
        match store.fire(&params(s, FireKind::Tick, at)).await.unwrap() {
            Fired::Done(o) => o,
            Fired::Stale => panic!("stale fire of {}", s.spec.name),
        }
    }

    fn fired_id(o: &FireOutcome) -> TaskId {
        match o {
            FireOutcome::Fired { started: Started::Task(task_id), .. } => *task_id,
            other => panic!("expected a fire, got {other:?}"),
        }
    }

    /// A tick after the schedule's cursor (ticks at or before it are dealt with).
    fn tick(s: &Schedule, seconds: i64) -> DateTime<Utc> {
        s.fired_through + TimeDelta::seconds(seconds)
    }

    pub async fn schedules_create_get_replace_pause_delete(backend: Backend) {
        let store = backend.schedules();
        let before = Utc::now();
        let created = store.create_schedule(&spec("a", "skip"), Source::Api).await.unwrap();
        assert_eq!(created.spec, spec("a", "skip"));
        assert_eq!(created.source, Source::Api);
        assert!(created.fired_through >= before - TimeDelta::seconds(1), "the cursor starts now");
        assert!(created.last_task_id.is_none() && created.buffered_for.is_none());
        assert!(matches!(
            store.create_schedule(&spec("a", "allow"), Source::Api).await,
            Err(ScheduleError::Exists(n)) if n == "a"
        ));
        store.create_schedule(&spec("b", "allow"), Source::File).await.unwrap();
        let names: Vec<String> = store.list_schedules().await.unwrap().into_iter().map(|s| s.spec.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(store.get_schedule("a").await.unwrap().unwrap(), created);
        assert!(store.get_schedule("nope").await.unwrap().is_none());

        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut changed = spec("a", "buffer_one");
        changed.timing = ScheduleSpec::from_body(
            json!({"name": "a", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "task": {"type": "echo"}}),
            None,
        )
        .unwrap()
        .timing;
        let replaced = store.replace_schedule(&changed, Source::Api).await.unwrap();
        assert_eq!(replaced.spec, changed);
        assert!(replaced.updated_at > created.updated_at, "a replace is a new version");
        assert!(replaced.fired_through > created.fired_through, "the cursor moves to the replace");
        assert!(matches!(
            store.replace_schedule(&spec("nope", "skip"), Source::Api).await,
            Err(ScheduleError::NotFound(_))
        ));

        let paused = store.set_paused("a", true).await.unwrap();
        assert!(paused.spec.paused && paused.updated_at > replaced.updated_at);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let resumed = store.set_paused("a", false).await.unwrap();
        assert!(!resumed.spec.paused);
        assert!(resumed.fired_through > paused.fired_through, "ticks of the pause are passed");
        assert!(matches!(store.set_paused("nope", true).await, Err(ScheduleError::NotFound(_))));

        store.delete_schedule("a").await.unwrap();
        assert!(store.get_schedule("a").await.unwrap().is_none());
        assert!(matches!(store.delete_schedule("a").await, Err(ScheduleError::NotFound(_))));
    }

    pub async fn a_tick_fires_exactly_once(backend: Backend) {
        let (store, tasks) = (backend.schedules(), backend.tasks());
        let s = store.create_schedule(&spec("once", "allow"), Source::Api).await.unwrap();
        let at = tick(&s, 1);
        // Eight fires of one tick at once (as eight daemons would): one task.
        let mut racers = Vec::new();
        for _ in 0..8 {
            let (store, p) = (store.clone(), params(&s, FireKind::Tick, at));
            racers.push(tokio::spawn(async move { store.fire(&p).await.unwrap() }));
        }
        let mut fired = Vec::new();
        for r in racers {
            match r.await.unwrap() {
                Fired::Done(FireOutcome::Fired { started: Started::Task(task_id), .. }) => fired.push(task_id),
                Fired::Done(FireOutcome::AlreadyDone) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fired.len(), 1, "one fire of the tick");
        let task = tasks.get(fired[0]).await.unwrap().unwrap();
        assert_eq!(task.schedule_name.as_deref(), Some("once"));
        assert_eq!(task.scheduled_for, Some(at));
        assert_eq!(task.status, TaskStatus::Queued);
        assert_eq!(task.payload, json!({"from": "once"}));
        let after = store.get_schedule("once").await.unwrap().unwrap();
        assert_eq!((after.fired_through, after.last_task_id), (at, Some(fired[0])));
        assert!(after.last_fired_at.is_some());
        // An earlier tick is behind the cursor: dealt with, never fired late.
        assert_eq!(fire(store.as_ref(), &after, at - TimeDelta::seconds(1)).await, FireOutcome::AlreadyDone);
        // A trigger at the same instant has a key of its own.
        let trig = store.fire(&params(&after, FireKind::Trigger, at)).await.unwrap();
        assert!(matches!(trig, Fired::Done(FireOutcome::Fired { .. })), "{trig:?}");
        let trig_again = store.fire(&params(&after, FireKind::Trigger, at)).await.unwrap();
        assert_eq!(trig_again, Fired::Done(FireOutcome::AlreadyDone));
        // A copy read before a change is stale; a paused schedule's ticks do not fire.
        let paused = store.set_paused("once", true).await.unwrap();
        assert_eq!(store.fire(&params(&after, FireKind::Tick, tick(&after, 5))).await.unwrap(), Fired::Stale);
        assert_eq!(fire(store.as_ref(), &paused, tick(&paused, 5)).await, FireOutcome::Paused);
        // pass_ticks moves the cursor forward only.
        store.set_paused("once", false).await.unwrap();
        let s = store.get_schedule("once").await.unwrap().unwrap();
        store.pass_ticks("once", tick(&s, 10)).await.unwrap();
        store.pass_ticks("once", tick(&s, 3)).await.unwrap();
        assert_eq!(store.get_schedule("once").await.unwrap().unwrap().fired_through, tick(&s, 10));
        // Deleting the schedule leaves its tasks; its fires then find no schedule.
        store.delete_schedule("once").await.unwrap();
        assert!(tasks.get(fired[0]).await.unwrap().is_some(), "a deleted schedule's tasks stay");
        let gone = store.fire(&params(&s, FireKind::Tick, tick(&s, 20))).await;
        assert!(matches!(gone, Err(ScheduleError::NotFound(_))), "{gone:?}");
        let listed = tasks
            .list(&TaskFilter { schedule_name: Some("once".into()), limit: 10, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(listed.len(), 2, "the tick's task and the trigger's");
    }

    /// The ticker's cheap look: the fingerprint moves on every change of a spec, a pause, a
    /// delete and a buffered tick, and stays put when ticks fire or pass.
    pub async fn the_fingerprint_moves_on_every_change_and_only_then(backend: Backend) {
        let (store, tasks) = (backend.schedules(), backend.tasks());
        let empty = store.schedules_fingerprint().await.unwrap();
        assert_eq!((empty.count, empty.latest_change, empty.buffered), (0, None, 0));
        let mut seen = vec![empty];
        let mut moved = |fp: SchedulesFingerprint, what: &str| {
            assert!(!seen.contains(&fp), "{what}: the fingerprint did not move ({fp:?}, seen {seen:?})");
            seen.push(fp);
        };
        let a = store.create_schedule(&spec("a", "buffer_one"), Source::Api).await.unwrap();
        moved(store.schedules_fingerprint().await.unwrap(), "create a");
        store.create_schedule(&spec("b", "allow"), Source::Api).await.unwrap();
        moved(store.schedules_fingerprint().await.unwrap(), "create b");

        // Fires and passed ticks leave it alone.
        let before = store.schedules_fingerprint().await.unwrap();
        let first = fired_id(&fire(store.as_ref(), &a, tick(&a, 1)).await);
        store.pass_ticks("a", tick(&a, 1)).await.unwrap();
        assert_eq!(store.schedules_fingerprint().await.unwrap(), before, "a fire is not a change");

        // A held-back tick moves it, and so does its release.
        assert_eq!(fire(store.as_ref(), &a, tick(&a, 2)).await, FireOutcome::Buffered);
        let held = store.schedules_fingerprint().await.unwrap();
        assert_eq!(held.buffered, 1);
        moved(held, "buffer a tick");
        tasks.cancel(first).await.unwrap();
        let t = a.spec.target.fire("a", tick(&a, 2), "x".into()).unwrap();
        store.release_buffered("a", &t).await.unwrap().expect("released");
        let released = store.schedules_fingerprint().await.unwrap();
        assert_eq!(released.buffered, 0);
        assert_ne!(released, held, "release a tick");

        store.set_paused("b", true).await.unwrap();
        moved(store.schedules_fingerprint().await.unwrap(), "pause b");
        let mut changed = spec("b", "skip");
        changed.paused = true;
        store.replace_schedule(&changed, Source::Api).await.unwrap();
        moved(store.schedules_fingerprint().await.unwrap(), "replace b");
        store.delete_schedule("a").await.unwrap();
        let after = store.schedules_fingerprint().await.unwrap();
        assert_eq!(after.count, 1);
        moved(after, "delete a");
    }

    pub async fn overlap_policies_decide_in_the_fire(backend: Backend) {
        let (store, tasks) = (backend.schedules(), backend.tasks());
        for overlap in Overlap::ALL {
            let name = format!("o-{overlap}");
            let s = store.create_schedule(&spec(&name, overlap.as_str()), Source::Api).await.unwrap();
            let first = fired_id(&fire(store.as_ref(), &s, tick(&s, 1)).await);
            let second = fire(store.as_ref(), &s, tick(&s, 2)).await;
            match overlap {
                Overlap::Allow => {
                    fired_id(&second);
                }
                Overlap::Skip => {
                    assert_eq!(second, FireOutcome::Skipped);
                    // Once the first is over, the next tick fires.
                    tasks.cancel(first).await.unwrap();
                    fired_id(&fire(store.as_ref(), &s, tick(&s, 3)).await);
                }
                Overlap::BufferOne => {
                    assert_eq!(second, FireOutcome::Buffered);
                    assert_eq!(fire(store.as_ref(), &s, tick(&s, 3)).await, FireOutcome::Skipped, "one waits at most");
                    let held = store.get_schedule(&name).await.unwrap().unwrap();
                    assert_eq!(held.buffered_for, Some(tick(&s, 2)));
                    let t = held.spec.target.fire(&name, tick(&s, 2), "x".into()).unwrap();
                    assert_eq!(store.release_buffered(&name, &t).await.unwrap(), None, "the first still runs");
                    tasks.cancel(first).await.unwrap();
                    let released = store.release_buffered(&name, &t).await.unwrap().expect("released");
                    let task = tasks.get(fired_id(&released)).await.unwrap().unwrap();
                    assert_eq!(task.scheduled_for, Some(tick(&s, 2)), "the buffered tick, not the release's time");
                    let after = store.get_schedule(&name).await.unwrap().unwrap();
                    assert_eq!((after.buffered_for, after.last_task_id), (None, Some(task.id)));
                    assert_eq!(store.release_buffered(&name, &t).await.unwrap(), None, "released once");
                }
                Overlap::CancelOther => {
                    let FireOutcome::Fired { started: Started::Task(task_id), cancelled } = second else {
                        panic!("{second:?}")
                    };
                    assert_eq!(cancelled, vec![first]);
                    assert_eq!(tasks.get(first).await.unwrap().unwrap().status, TaskStatus::Cancelled);
                    assert_eq!(tasks.get(task_id).await.unwrap().unwrap().status, TaskStatus::Queued);
                }
            }
            // A trigger fires whatever the policy.
            let s = store.get_schedule(&name).await.unwrap().unwrap();
            let trig = store.fire(&params(&s, FireKind::Trigger, Utc::now())).await.unwrap();
            assert!(matches!(trig, Fired::Done(FireOutcome::Fired { .. })), "{overlap}: {trig:?}");
        }
    }
}

on_both_stores!(schedules_sqlite, schedules_postgres, schedule_cases, backend;
    schedules_create_get_replace_pause_delete,
    a_tick_fires_exactly_once,
    overlap_policies_decide_in_the_fire,
    the_fingerprint_moves_on_every_change_and_only_then,
);

/// Queue controls: the pause and every limit, enforced by the claim on both drivers.
mod queue_cases {
    use super::*;
    use devops_control_tower::queue::{Change, Rate, SettingsChange};
    use devops_control_tower::store::Backend;

    async fn enqueue_in(store: &dyn TaskStore, queue: &str, key: Option<&str>) -> TaskId {
        let mut t = NewTask::new("echo", json!({}));
        t.queue = queue.into();
        t.concurrency_key = key.map(String::from);
        store.enqueue(t).await.unwrap().id
    }

    fn set(concurrency: Option<i64>, key_concurrency: Option<i64>, rate: Option<Rate>) -> SettingsChange {
        SettingsChange {
            concurrency: Change::Set(concurrency),
            key_concurrency: Change::Set(key_concurrency),
            rate: Change::Set(rate),
        }
    }

    async fn complete_all(store: &dyn TaskStore, w: &str, ids: &[TaskId]) {
        let ends: Vec<AttemptEnd> =
            ids.iter().map(|id| end(w, *id, 1, Finish::Completed { result: json!({}) })).collect();
        assert_eq!(finished(store, &ends).await.len(), ids.len());
    }

    pub async fn settings_are_kept_changed_and_removed(backend: Backend) {
        let (queues, tasks) = (backend.queues(), backend.tasks());
        let fresh = queues.get_queue("nobody").await.unwrap();
        assert_eq!((fresh.settings, fresh.counts.queued), (Default::default(), 0), "a queue needs no row");
        enqueue_in(tasks.as_ref(), "busy", None).await;
        let s = queues.change_queue("agents", &set(Some(3), Some(1), None)).await.unwrap();
        assert_eq!((s.concurrency, s.key_concurrency, s.rate), (Some(3), Some(1), None));
        // Absent fields are kept, null removes.
        let only_rate = SettingsChange { rate: Change::Set(Some(Rate { limit: 5, per_s: 2.5 })), ..Default::default() };
        let s = queues.change_queue("agents", &only_rate).await.unwrap();
        assert_eq!((s.concurrency, s.key_concurrency, s.rate), (Some(3), Some(1), Some(Rate { limit: 5, per_s: 2.5 })));
        let s = queues.set_queue_paused("agents", true).await.unwrap();
        assert!(s.paused && s.concurrency == Some(3), "a pause keeps the limits");
        let s = queues.change_queue("agents", &set(None, None, None)).await.unwrap();
        assert!(s.paused && !s.limited(), "a change keeps the pause: {s:?}");
        let names: Vec<String> = queues.list_queues().await.unwrap().into_iter().map(|q| q.name).collect();
        assert_eq!(names, vec!["agents".to_string(), "busy".to_string()], "configured queues and queues with work");
        let busy = queues.get_queue("busy").await.unwrap();
        assert_eq!((busy.counts.queued, busy.counts.running), (1, 0));
    }

    pub async fn a_paused_queue_is_not_claimed_from(backend: Backend) {
        let (queues, tasks) = (backend.queues(), backend.tasks());
        let held = enqueue_in(tasks.as_ref(), "held", None).await;
        let free = enqueue_in(tasks.as_ref(), "free", None).await;
        queues.set_queue_paused("held", true).await.unwrap();
        let got: Vec<TaskId> = tasks.claim(&claim("w", 10)).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(got, vec![free]);
        assert!(tasks.claim(&claim("w", 10)).await.unwrap().is_empty(), "nothing from the paused queue");
        queues.set_queue_paused("held", false).await.unwrap();
        let got: Vec<TaskId> = tasks.claim(&claim("w", 10)).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(got, vec![held], "resumed");
    }

    pub async fn concurrency_caps_the_running_tasks_and_an_end_frees_a_slot(backend: Backend) {
        let (queues, tasks) = (backend.queues(), backend.tasks());
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(enqueue_in(tasks.as_ref(), "q", None).await);
        }
        let other = enqueue_in(tasks.as_ref(), "other", None).await;
        queues.change_queue("q", &set(Some(2), None, None)).await.unwrap();
        let first: Vec<TaskId> = tasks.claim(&claim("w", 10)).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(first.len(), 3, "two of the limited queue and the other queue's task: {first:?}");
        assert!(first.contains(&other) && first.contains(&ids[0]) && first.contains(&ids[1]), "in order");
        assert!(tasks.claim(&claim("w", 10)).await.unwrap().is_empty(), "both slots are taken");
        // Around the limited queue's backlog, the other queues are claimed from as before.
        let other2 = enqueue_in(tasks.as_ref(), "other", None).await;
        let around: Vec<TaskId> = tasks.claim(&claim("w", 10)).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(around, vec![other2]);
        // Every way an attempt ends frees its slot: a completion, a cancel, a release.
        complete_all(tasks.as_ref(), "w", &[ids[0]]).await;
        let next = tasks.claim(&claim("w", 10)).await.unwrap();
        assert_eq!(next.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[2]]);
        tasks.cancel(ids[1]).await.unwrap();
        assert_eq!(tasks.claim(&claim("w", 10)).await.unwrap().iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[3]]);
        tasks.release(&[Held::new(ids[2], worker("w"), 1)]).await.unwrap();
        assert_eq!(tasks.claim(&claim("w", 10)).await.unwrap().len(), 1, "the released slot");
        // A raised limit applies to the next claim.
        queues.change_queue("q", &set(Some(3), None, None)).await.unwrap();
        assert_eq!(tasks.claim(&claim("w", 10)).await.unwrap().len(), 1, "the third slot takes the last task");
        let running = tasks
            .list(&TaskFilter {
                status: Some(TaskStatus::Running),
                queue: Some("q".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(running.len(), 3);
    }

    pub async fn key_concurrency_caps_each_key(backend: Backend) {
        let (queues, tasks) = (backend.queues(), backend.tasks());
        queues.change_queue("repos", &set(None, Some(1), None)).await.unwrap();
        let mut by_key = Vec::new();
        for key in ["a", "a", "b", "b", "c"] {
            by_key.push((key, enqueue_in(tasks.as_ref(), "repos", Some(key)).await));
        }
        let keyless = enqueue_in(tasks.as_ref(), "repos", None).await;
        let got: HashSet<TaskId> = tasks.claim(&claim("w", 10)).await.unwrap().iter().map(|t| t.id).collect();
        let expected: HashSet<TaskId> = [by_key[0].1, by_key[2].1, by_key[4].1, keyless].into_iter().collect();
        assert_eq!(got, expected, "one task per key, and the keyless one");
        assert!(tasks.claim(&claim("w", 10)).await.unwrap().is_empty());
        complete_all(tasks.as_ref(), "w", &[by_key[0].1]).await;
        let next: Vec<TaskId> = tasks.claim(&claim("w", 10)).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(next, vec![by_key[1].1], "key a's next task");
        let stored = tasks.get(by_key[1].1).await.unwrap().unwrap();
        assert_eq!(stored.concurrency_key.as_deref(), Some("a"));
    }

    pub async fn a_rate_holds_over_a_sliding_window(backend: Backend) {
        let (queues, tasks) = (backend.queues(), backend.tasks());
        queues.change_queue("calls", &set(None, None, Some(Rate { limit: 3, per_s: 1.0 }))).await.unwrap();
        for _ in 0..7 {
            enqueue_in(tasks.as_ref(), "calls", None).await;
        }
        assert_eq!(tasks.claim(&claim("w", 2)).await.unwrap().len(), 2);
        assert_eq!(tasks.claim(&claim("w", 10)).await.unwrap().len(), 1, "three starts per second");
        assert!(tasks.claim(&claim("w", 10)).await.unwrap().is_empty());
        // The producer sleeps until the window lets the next start in, not until a poll.
        let next = tasks.next_scheduled().await.unwrap().expect("the end of the full window");
        let wait = next - Utc::now();
        assert!(wait > chrono::Duration::zero() && wait <= chrono::Duration::seconds(1), "{wait:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(tasks.claim(&claim("w", 10)).await.unwrap().len(), 3, "the window moved on");
        assert!(tasks.claim(&claim("w", 10)).await.unwrap().is_empty());
    }

    /// Eight claimers at once on a queue with `concurrency` 3: never more than three run.
    pub async fn concurrent_claims_never_exceed_the_limit(backend: Backend) {
        let (queues, tasks) = (backend.queues(), backend.tasks());
        queues.change_queue("tight", &set(Some(3), None, None)).await.unwrap();
        for _ in 0..40 {
            enqueue_in(tasks.as_ref(), "tight", None).await;
        }
        let mut done = 0;
        while done < 40 {
            let claims = (0..8).map(|i| {
                let tasks = tasks.clone();
                tokio::spawn(async move { tasks.claim(&claim(&format!("w{i}"), 2)).await.unwrap() })
            });
            let mut got = Vec::new();
            for c in claims {
                got.extend(c.await.unwrap());
            }
            assert!(got.len() <= 3, "{} running at once against a limit of 3", got.len());
            assert!(!got.is_empty(), "every slot was free: someone claims");
            for t in &got {
                let w = t.locked_by.clone().unwrap();
                complete_all(tasks.as_ref(), &w, &[t.id]).await;
            }
            done += got.len();
        }
    }
}

on_both_stores!(queues_sqlite, queues_postgres, queue_cases, backend;
    settings_are_kept_changed_and_removed,
    a_paused_queue_is_not_claimed_from,
    concurrency_caps_the_running_tasks_and_an_end_frees_a_slot,
    key_concurrency_caps_each_key,
    a_rate_holds_over_a_sliding_window,
    concurrent_claims_never_exceed_the_limit,
);

/// Workflows: stored whole, steps released in the transaction of their last parent's end,
/// failures cancelling on down, `parents` in the claim.
pub(crate) mod workflow_cases {
    use super::*;
    use devops_control_tower::store::WorkflowCreateError;
    use devops_control_tower::workflow::{NewStep, NewWorkflow, OnParentFailure, StepKey, WorkflowId, WorkflowStatus};

    /// A step of type `t` with these parents.
    pub fn step(key: &str, t: &str, deps: &[&str], mode: OnParentFailure) -> NewStep {
        NewStep {
            key: StepKey::parse(key).unwrap(),
            task: NewTask::new(t, json!({ "step": key })),
            depends_on: deps.iter().map(|d| StepKey::parse(d).unwrap()).collect(),
            on_parent_failure: mode,
        }
    }

    pub fn workflow(steps: Vec<NewStep>) -> NewWorkflow {
        NewWorkflow { id: WorkflowId::new(), name: "wf".into(), idempotency_key: None, cwom_issue_id: None, steps }
            .checked()
            .unwrap()
    }

    fn claim_types(w: &str, types: &[&str]) -> ClaimParams {
        ClaimParams {
            worker: worker(w),
            limit: 100,
            lease: Duration::from_secs(30),
            types: types.iter().map(|t| t.to_string()).collect(),
            queues: None,
        }
    }

    async fn status(store: &dyn TaskStore, id: TaskId) -> TaskStatus {
        store.get(id).await.unwrap().unwrap().status
    }

    /// Claims exactly the one task of type `t` and ends it with `finish`.
    async fn run_one(store: &dyn TaskStore, t: &str, finish: Finish) -> devops_control_tower::task::Task {
        let mut claimed = store.claim(&claim_types("w", &[t])).await.unwrap();
        assert_eq!(claimed.len(), 1, "one {t} task claimable: {claimed:?}");
        let task = claimed.remove(0);
        assert_eq!(finished(store, &[end("w", task.id, task.attempts, finish)]).await, vec![task.id]);
        task
    }

    pub async fn a_workflow_is_stored_whole_with_waiting_steps(store: Arc<dyn TaskStore>) {
        let wf = workflow(vec![
            step("a", "wa", &[], OnParentFailure::Cancel),
            step("b", "wb", &["a"], OnParentFailure::Run),
        ]);
        let created = store.create_workflow(&wf).await.unwrap();
        assert_eq!(created.workflow_id, wf.id);
        let statuses: Vec<(String, TaskStatus)> = created.steps.iter().map(|s| (s.key.to_string(), s.status)).collect();
        assert_eq!(statuses, [("a".to_string(), TaskStatus::Queued), ("b".to_string(), TaskStatus::Waiting)]);
        let b = store.get(created.steps[1].task_id).await.unwrap().unwrap();
        assert_eq!((b.workflow_id, b.step_key.as_deref(), b.status), (Some(wf.id), Some("b"), TaskStatus::Waiting));
        // A waiting step is never claimed.
        assert!(store.claim(&claim_types("w", &["wb"])).await.unwrap().is_empty());
        let view = store.get_workflow(wf.id).await.unwrap().expect("stored");
        assert_eq!(view.summary.status, WorkflowStatus::Running);
        assert_eq!(view.summary.step_count, 2);
        let b_view = view.steps.iter().find(|s| s.key == "b").unwrap();
        assert_eq!(
            (b_view.depends_on.clone(), b_view.on_parent_failure),
            (vec!["a".to_string()], OnParentFailure::Run)
        );
        assert!(store.get_workflow(WorkflowId::new()).await.unwrap().is_none());
        // A step that the database refuses (an Issue that does not exist) stores nothing.
        let mut bad = workflow(vec![
            step("x", "echo", &[], OnParentFailure::Cancel),
            step("y", "echo", &["x"], OnParentFailure::Cancel),
        ]);
        bad.steps[1].task.cwom_issue_id = Some("no-such-issue".into());
        assert!(store.create_workflow(&bad).await.is_err());
        assert!(store.get_workflow(bad.id).await.unwrap().is_none());
        assert!(store.get(bad.steps[0].task.id).await.unwrap().is_none(), "a step of a refused workflow was kept");
    }

    pub async fn a_workflow_idempotency_key_is_used_once(store: Arc<dyn TaskStore>) {
        let mut first = workflow(vec![step("a", "echo", &[], OnParentFailure::Cancel)]);
        first.idempotency_key = Some("deploy-42".into());
        store.create_workflow(&first).await.unwrap();
        let mut again = workflow(vec![step("a", "echo", &[], OnParentFailure::Cancel)]);
        again.idempotency_key = Some("deploy-42".into());
        match store.create_workflow(&again).await {
            Err(WorkflowCreateError::Duplicate { existing }) => assert_eq!(existing, first.id),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert!(store.get(again.steps[0].task.id).await.unwrap().is_none());
    }

    pub async fn a_diamond_releases_each_step_when_its_parents_end(store: Arc<dyn TaskStore>) {
        let wf = workflow(vec![
            step("d", "wd", &["b", "c"], OnParentFailure::Cancel),
            step("a", "wa", &[], OnParentFailure::Cancel),
            step("b", "wb", &["a"], OnParentFailure::Cancel),
            step("c", "wc", &["a"], OnParentFailure::Cancel),
        ]);
        let created = store.create_workflow(&wf).await.unwrap();
        let id = |k: &str| created.steps.iter().find(|s| s.key.as_str() == k).unwrap().task_id;
        let a = run_one(&*store, "wa", Finish::Completed { result: json!({ "from": "a" }) }).await;
        assert!(a.parents.as_ref().is_some_and(|p| p.is_empty()), "a root step has no parents: {:?}", a.parents);
        assert_eq!(status(&*store, id("b")).await, TaskStatus::Queued);
        assert_eq!(status(&*store, id("c")).await, TaskStatus::Queued);
        assert_eq!(status(&*store, id("d")).await, TaskStatus::Waiting);
        let b = run_one(&*store, "wb", Finish::Completed { result: json!({ "from": "b" }) }).await;
        assert_eq!(b.parents.unwrap()["a"].result, Some(json!({ "from": "a" })));
        assert_eq!(status(&*store, id("d")).await, TaskStatus::Waiting, "d waits for c too");
        run_one(&*store, "wc", Finish::Completed { result: json!({ "from": "c" }) }).await;
        assert_eq!(status(&*store, id("d")).await, TaskStatus::Queued);
        let d = run_one(&*store, "wd", Finish::Completed { result: json!("done") }).await;
        let parents = d.parents.expect("a step's claim carries its parents");
        assert_eq!(parents.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(parents["c"].task_id, id("c"));
        assert_eq!(parents["c"].status, TaskStatus::Completed);
        assert_eq!(parents["c"].result, Some(json!({ "from": "c" })));
        let view = store.get_workflow(wf.id).await.unwrap().unwrap();
        assert_eq!(view.summary.status, WorkflowStatus::Completed);
        assert!(view.summary.finished_at.is_some());
        // A plain task's claim carries no parents.
        let plain = enqueue(&*store, "echo").await;
        let claimed = store.claim(&claim("w", 10)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].id, claimed[0].parents.clone(), claimed[0].workflow_id), (plain, None, None));
    }

    pub async fn a_failure_cancels_on_down_and_run_steps_run(store: Arc<dyn TaskStore>) {
        // a fails: b (cancel) is cancelled; c (run, below b) runs all the same and sees b
        // cancelled; r (run) runs and sees the failure; s (cancel, below r) waits for r.
        let wf = workflow(vec![
            step("a", "wa", &[], OnParentFailure::Cancel),
            step("b", "wb", &["a"], OnParentFailure::Cancel),
            step("c", "wc", &["b"], OnParentFailure::Run),
            step("r", "wr", &["a"], OnParentFailure::Run),
            step("s", "ws", &["r"], OnParentFailure::Cancel),
        ]);
        let created = store.create_workflow(&wf).await.unwrap();
        let id = |k: &str| created.steps.iter().find(|s| s.key.as_str() == k).unwrap().task_id;
        run_one(&*store, "wa", Finish::Failed { error: "boom".into() }).await;
        let b = store.get(id("b")).await.unwrap().unwrap();
        assert_eq!(b.status, TaskStatus::Cancelled);
        assert_eq!(b.last_error.as_deref(), Some("parent step a ended failed"));
        assert!(b.finished_at.is_some());
        // c runs on a parent's failure, but its parent b was cancelled: a `run` step runs.
        assert_eq!(status(&*store, id("c")).await, TaskStatus::Queued);
        assert_eq!(status(&*store, id("r")).await, TaskStatus::Queued);
        let r = run_one(&*store, "wr", Finish::Completed { result: json!(1) }).await;
        let seen = &r.parents.unwrap()["a"];
        assert_eq!((seen.status, seen.error.as_deref(), seen.result.clone()), (TaskStatus::Failed, Some("boom"), None));
        assert_eq!(status(&*store, id("s")).await, TaskStatus::Queued);
        let c = run_one(&*store, "wc", Finish::Completed { result: json!(2) }).await;
        assert_eq!(c.parents.unwrap()["b"].status, TaskStatus::Cancelled);
        run_one(&*store, "ws", Finish::Completed { result: json!(3) }).await;
        assert_eq!(store.get_workflow(wf.id).await.unwrap().unwrap().summary.status, WorkflowStatus::Failed);
    }

    pub async fn cancelling_a_step_cancels_its_dependants(store: Arc<dyn TaskStore>) {
        let wf = workflow(vec![
            step("a", "wa", &[], OnParentFailure::Cancel),
            step("b", "wb", &["a"], OnParentFailure::Cancel),
            step("c", "wc", &["b"], OnParentFailure::Cancel),
        ]);
        let created = store.create_workflow(&wf).await.unwrap();
        let id = |k: &str| created.steps.iter().find(|s| s.key.as_str() == k).unwrap().task_id;
        // A waiting step can be cancelled, and its own dependants go with it.
        let b = store.cancel(id("b")).await.unwrap();
        assert_eq!(b.status, TaskStatus::Cancelled);
        let c = store.get(id("c")).await.unwrap().unwrap();
        assert_eq!((c.status, c.last_error.as_deref()), (TaskStatus::Cancelled, Some("parent step b ended cancelled")));
        assert_eq!(store.unfinished_steps(wf.id).await.unwrap(), Some(vec![id("a")]));
        assert_eq!(store.cancel_many(&[id("a"), id("b")]).await.unwrap(), vec![id("a")]);
        assert_eq!(store.unfinished_steps(wf.id).await.unwrap(), Some(vec![]));
        assert_eq!(store.unfinished_steps(WorkflowId::new()).await.unwrap(), None);
        let view = store.get_workflow(wf.id).await.unwrap().unwrap();
        assert_eq!(view.summary.status, WorkflowStatus::Cancelled);
        let listed = store
            .list_workflows(&devops_control_tower::workflow::WorkflowFilter {
                status: Some(WorkflowStatus::Cancelled),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.iter().map(|w| w.workflow_id).collect::<Vec<_>>(), [wf.id]);
        let running = store
            .list_workflows(&devops_control_tower::workflow::WorkflowFilter {
                status: Some(WorkflowStatus::Running),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(running.is_empty(), "{running:?}");
    }

    pub async fn a_retried_parent_counts_off_its_dependants_once(store: Arc<dyn TaskStore>) {
        // c waits for a (run) and b. a fails and counts off; retried and completed, it must
        // not count off again: c still waits for b.
        let wf = workflow(vec![
            step("a", "wa", &[], OnParentFailure::Cancel),
            step("b", "wb", &[], OnParentFailure::Cancel),
            step("c", "wc", &["a", "b"], OnParentFailure::Run),
        ]);
        let created = store.create_workflow(&wf).await.unwrap();
        let id = |k: &str| created.steps.iter().find(|s| s.key.as_str() == k).unwrap().task_id;
        run_one(&*store, "wa", Finish::Failed { error: "first try".into() }).await;
        assert_eq!(status(&*store, id("c")).await, TaskStatus::Waiting);
        assert_eq!(store.retry(id("a")).await.unwrap().status, TaskStatus::Queued);
        run_one(&*store, "wa", Finish::Completed { result: json!("second try") }).await;
        assert_eq!(status(&*store, id("c")).await, TaskStatus::Waiting, "a's second end counted off c again");
        run_one(&*store, "wb", Finish::Completed { result: json!("b") }).await;
        let c = run_one(&*store, "wc", Finish::Completed { result: json!("c") }).await;
        assert_eq!(c.parents.unwrap()["a"].result, Some(json!("second try")));
    }

    pub async fn step_counts_group_each_workflows_steps_by_status(store: Arc<dyn TaskStore>) {
        let first = workflow(vec![
            step("a", "ca", &[], OnParentFailure::Cancel),
            step("b", "cb", &["a"], OnParentFailure::Cancel),
            step("c", "cb", &["a"], OnParentFailure::Cancel),
        ]);
        let second = workflow(vec![step("x", "cx", &[], OnParentFailure::Cancel)]);
        store.create_workflow(&first).await.unwrap();
        store.create_workflow(&second).await.unwrap();
        let counts = store.step_counts(&[first.id, second.id, WorkflowId::new()]).await.unwrap();
        assert_eq!(counts.len(), 2, "a workflow without steps is left out: {counts:?}");
        assert_eq!(counts[&first.id], vec![(TaskStatus::Waiting, 2), (TaskStatus::Queued, 1)]);
        assert_eq!(counts[&second.id], vec![(TaskStatus::Queued, 1)]);
        run_one(&*store, "ca", Finish::Failed { error: "no".into() }).await;
        let counts = store.step_counts(&[first.id]).await.unwrap();
        assert_eq!(counts[&first.id], vec![(TaskStatus::Failed, 1), (TaskStatus::Cancelled, 2)]);
        assert!(store.step_counts(&[]).await.unwrap().is_empty());
    }

    pub async fn a_spawn_is_fenced_and_its_steps_join_the_workflow(store: Arc<dyn TaskStore>) {
        use devops_control_tower::store::{Spawn, SpawnError};
        use devops_control_tower::workflow::InvalidWorkflow;
        let wf = workflow(vec![
            step("a", "wa", &[], OnParentFailure::Cancel),
            step("b", "wb", &["a"], OnParentFailure::Cancel),
        ]);
        let created = store.create_workflow(&wf).await.unwrap();
        let b = created.steps[1].task_id;
        let mut claimed = store.claim(&claim_types("w", &["wa"])).await.unwrap();
        let a = claimed.remove(0);
        let spawn =
            |held: Held, steps: Vec<NewStep>, completes: Option<serde_json::Value>| Spawn { held, steps, completes };
        let x = || {
            vec![step("x", "wx", &[], OnParentFailure::Cancel), step("y", "wy", &["x", "a"], OnParentFailure::Cancel)]
        };
        let wrong = Held::new(a.id, worker("w"), a.attempts + 1);
        assert!(
            matches!(store.spawn_steps(&spawn(wrong, x(), None)).await, Err(SpawnError::LeaseLost(id)) if id == a.id)
        );
        let nobody = Held::new(TaskId::new(), worker("w"), 1);
        assert!(matches!(store.spawn_steps(&spawn(nobody, x(), None)).await, Err(SpawnError::NotFound(_))));
        let held = Held::new(a.id, worker("w"), a.attempts);
        let taken = vec![step("b", "wx", &[], OnParentFailure::Cancel)];
        match store.spawn_steps(&spawn(held.clone(), taken, None)).await {
            Err(SpawnError::Invalid(InvalidWorkflow::KeyTaken { index: 0, key })) => assert_eq!(key, "b"),
            other => panic!("expected the key to be refused, got {other:?}"),
        }
        let cycle = vec![step("x", "wx", &["b"], OnParentFailure::Cancel)];
        assert!(matches!(
            store.spawn_steps(&spawn(held.clone(), cycle, None)).await,
            Err(SpawnError::Invalid(InvalidWorkflow::DependsOnDependant { .. }))
        ));
        assert_eq!(
            store.get_workflow(wf.id).await.unwrap().unwrap().summary.step_count,
            2,
            "a refused spawn stored steps"
        );
        // Spawned and ended in one transaction: b waits for x and y, y for x and the spawner.
        let steps = x();
        let (x_id, y_id) = (steps[0].task.id, steps[1].task.id);
        let spawned = store.spawn_steps(&spawn(held.clone(), steps, Some(json!("a")))).await.unwrap();
        assert_eq!(spawned.steps.workflow_id, wf.id);
        let statuses: Vec<(String, TaskStatus)> =
            spawned.steps.steps.iter().map(|s| (s.key.to_string(), s.status)).collect();
        assert_eq!(statuses, [("x".to_string(), TaskStatus::Queued), ("y".to_string(), TaskStatus::Waiting)]);
        assert_eq!(spawned.ended.map(|t| t.status), Some(TaskStatus::Completed));
        assert_eq!(status(&*store, b).await, TaskStatus::Waiting, "the spawner's end released b before x and y");
        let view = store.get_workflow(wf.id).await.unwrap().unwrap();
        let b_view = view.steps.iter().find(|s| s.key == "b").unwrap();
        assert_eq!(b_view.depends_on, ["a", "x", "y"]);
        // The ended spawner's token holds nothing: no more spawns.
        let late = vec![step("z", "wx", &[], OnParentFailure::Cancel)];
        assert!(matches!(store.spawn_steps(&spawn(held, late, None)).await, Err(SpawnError::LeaseLost(_))));
        // A plain task holds its lease but has no workflow.
        let plain = enqueue(&*store, "echo").await;
        let claimed = store.claim(&claim("w", 10)).await.unwrap();
        assert_eq!(claimed[0].id, plain);
        let on_plain = Held::new(plain, worker("w"), claimed[0].attempts);
        assert!(matches!(store.spawn_steps(&spawn(on_plain, x(), None)).await, Err(SpawnError::NotAWorkflowStep(_))));
        run_one(&*store, "wx", Finish::Completed { result: json!("x") }).await;
        assert_eq!(status(&*store, y_id).await, TaskStatus::Queued);
        assert_eq!(status(&*store, b).await, TaskStatus::Waiting);
        let y = run_one(&*store, "wy", Finish::Completed { result: json!("y") }).await;
        assert_eq!(y.parents.unwrap().keys().collect::<Vec<_>>(), ["a", "x"]);
        let b_task = run_one(&*store, "wb", Finish::Completed { result: json!("b") }).await;
        let parents = b_task.parents.unwrap();
        assert_eq!(parents.keys().collect::<Vec<_>>(), ["a", "x", "y"]);
        assert_eq!(parents["x"].task_id, x_id);
        assert_eq!(store.get_workflow(wf.id).await.unwrap().unwrap().summary.status, WorkflowStatus::Completed);
    }
}

on_both_stores!(workflows_sqlite, workflows_postgres, workflow_cases, store;
    a_workflow_is_stored_whole_with_waiting_steps,
    a_workflow_idempotency_key_is_used_once,
    a_diamond_releases_each_step_when_its_parents_end,
    a_failure_cancels_on_down_and_run_steps_run,
    cancelling_a_step_cancels_its_dependants,
    a_retried_parent_counts_off_its_dependants_once,
    step_counts_group_each_workflows_steps_by_status,
    a_spawn_is_fenced_and_its_steps_join_the_workflow,
);

/// Approval steps (issue 25, point 6): never claimed, ended by a fenced decision or expiry
/// whose end releases their dependants like any other.
pub(crate) mod approval_cases {
    use super::*;
    use devops_control_tower::approval::{Decision, DecisionRecord};
    use devops_control_tower::store::{DecideError, NotAwaiting};
    use devops_control_tower::workflow::{NewStep, NewWorkflow, OnParentFailure, StepKey, StepsRetried, WorkflowId};

    fn step(key: &str, t: &str, payload: serde_json::Value, deps: &[&str], mode: OnParentFailure) -> NewStep {
        NewStep {
            key: StepKey::parse(key).unwrap(),
            task: NewTask::new(t, payload),
            depends_on: deps.iter().map(|d| StepKey::parse(d).unwrap()).collect(),
            on_parent_failure: mode,
        }
    }

    fn gate(key: &str, deps: &[&str], expires_after_s: Option<u64>) -> NewStep {
        let mut payload = json!({ "prompt": format!("{key}?") });
        if let Some(s) = expires_after_s {
            payload["expires_after_s"] = json!(s);
        }
        step(key, "approval", payload, deps, OnParentFailure::Cancel)
    }

    fn workflow(steps: Vec<NewStep>) -> NewWorkflow {
        NewWorkflow { id: WorkflowId::new(), name: "gates".into(), idempotency_key: None, cwom_issue_id: None, steps }
            .checked()
            .unwrap()
    }

    fn record(decision: Decision, by: &str) -> DecisionRecord {
        let at = chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        DecisionRecord { decision, comment: Some(format!("{by} says so")), by: Some(by.into()), at }
    }

    fn claim_types(types: &[&str]) -> ClaimParams {
        ClaimParams {
            worker: WorkerId("w".into()),
            limit: 100,
            lease: Duration::from_secs(30),
            types: types.iter().map(|t| t.to_string()).collect(),
            queues: None,
        }
    }

    async fn status(store: &dyn TaskStore, id: TaskId) -> TaskStatus {
        store.get(id).await.unwrap().unwrap().status
    }

    async fn complete_one(store: &dyn TaskStore, t: &str) {
        let mut claimed = store.claim(&claim_types(&[t])).await.unwrap();
        assert_eq!(claimed.len(), 1, "one {t} claimable: {claimed:?}");
        let task = claimed.remove(0);
        let end = AttemptEnd {
            held: Held::new(task.id, WorkerId("w".into()), task.attempts),
            finish: Finish::Completed { result: json!(t) },
        };
        assert_eq!(store.finish(&[end]).await.unwrap(), vec![task.id]);
    }

    fn why(e: Result<devops_control_tower::task::Task, DecideError>) -> (NotAwaiting, TaskStatus) {
        match e {
            Err(DecideError::NotAwaiting { why, status, .. }) => (why, status),
            other => panic!("expected NotAwaiting, got {other:?}"),
        }
    }

    pub async fn an_approval_awaits_its_decision_unclaimed_and_approve_releases(store: Arc<dyn TaskStore>) {
        let wf = workflow(vec![
            step("a", "ga", json!({}), &[], OnParentFailure::Cancel),
            gate("gate", &["a"], None),
            step("c", "gc", json!({}), &["gate"], OnParentFailure::Cancel),
        ]);
        let created = store.create_workflow(&wf).await.unwrap();
        let statuses: Vec<TaskStatus> = created.steps.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [TaskStatus::Queued, TaskStatus::Waiting, TaskStatus::Waiting]);
        let (a, g, c) = (wf.steps[0].task.id, wf.steps[1].task.id, wf.steps[2].task.id);
        let early = store.decide(g, &record(Decision::Approve, "ana")).await;
        assert_eq!(why(early), (NotAwaiting::ParentsPending, TaskStatus::Waiting));
        complete_one(&*store, "ga").await;
        assert_eq!(status(&*store, g).await, TaskStatus::Waiting, "released to its decision, not queued");
        assert!(store.claim(&claim_types(&["approval", "gc"])).await.unwrap().is_empty(), "nothing claimable");
        let waited_from = store.get(g).await.unwrap().unwrap().updated_at;
        let r = record(Decision::Approve, "ana");
        let done = store.decide(g, &r).await.unwrap();
        assert_eq!((done.status, done.attempts), (TaskStatus::Completed, 1));
        assert_eq!(done.result, Some(serde_json::to_value(&r).unwrap()));
        assert_eq!((done.started_at, done.finished_at), (Some(waited_from), Some(r.at)));
        assert_eq!(done.last_error, None);
        assert_eq!(
            status(&*store, c).await,
            TaskStatus::Queued,
            "its dependant released in the decision's transaction"
        );
        let again = store.decide(g, &record(Decision::Reject, "bob")).await;
        assert_eq!(why(again), (NotAwaiting::Ended, TaskStatus::Completed));
        let plain = store.decide(a, &record(Decision::Approve, "ana")).await;
        assert_eq!(why(plain), (NotAwaiting::NotAnApproval, TaskStatus::Completed));
        let missing = TaskId::new();
        assert!(matches!(store.decide(missing, &r).await, Err(DecideError::NotFound(id)) if id == missing));
        assert_eq!(store.get(g).await.unwrap().unwrap().result, done.result, "the refused decisions changed nothing");
    }

    pub async fn a_rejected_approval_fails_and_a_retry_asks_again(store: Arc<dyn TaskStore>) {
        let wf = workflow(vec![
            gate("gate", &[], None),
            step("b", "gb", json!({}), &["gate"], OnParentFailure::Cancel),
            step("c", "gc", json!({}), &["gate"], OnParentFailure::Run),
        ]);
        store.create_workflow(&wf).await.unwrap();
        let (g, b, c) = (wf.steps[0].task.id, wf.steps[1].task.id, wf.steps[2].task.id);
        let r = record(Decision::Reject, "bob");
        let failed = store.decide(g, &r).await.unwrap();
        assert_eq!(failed.status, TaskStatus::Failed);
        assert_eq!(failed.last_error.as_deref(), Some("approval_rejected by bob: bob says so"));
        assert_eq!(failed.result, Some(serde_json::to_value(&r).unwrap()));
        assert_eq!((status(&*store, b).await, status(&*store, c).await), (TaskStatus::Cancelled, TaskStatus::Queued));
        let retried = store.retry_workflow(wf.id).await.unwrap().unwrap();
        assert_eq!(retried, StepsRetried { requeued: 0, reopened: 2 }, "the gate and b wait; nothing is queued");
        let again = store.get(g).await.unwrap().unwrap();
        assert_eq!((again.status, again.attempts, again.result), (TaskStatus::Waiting, 0, None));
        assert_eq!(status(&*store, b).await, TaskStatus::Waiting);
        assert!(store.claim(&claim_types(&["approval"])).await.unwrap().is_empty());
        store.decide(g, &record(Decision::Approve, "ana")).await.unwrap();
        assert_eq!(status(&*store, b).await, TaskStatus::Queued);
        // A task's own retry of a decided approval also asks again.
        let wf = workflow(vec![gate("solo", &[], None)]);
        store.create_workflow(&wf).await.unwrap();
        let solo = wf.steps[0].task.id;
        store.decide(solo, &record(Decision::Reject, "bob")).await.unwrap();
        let retried = store.retry(solo).await.unwrap();
        assert_eq!((retried.status, retried.result), (TaskStatus::Waiting, None));
        assert_eq!(store.decide(solo, &record(Decision::Approve, "ana")).await.unwrap().status, TaskStatus::Completed);
    }

    pub async fn only_approvals_past_their_expiry_expire(store: Arc<dyn TaskStore>) {
        let wf = workflow(vec![
            gate("quick", &[], Some(1)),
            gate("slow", &[], Some(3600)),
            gate("forever", &[], None),
            gate("behind", &["slow"], Some(1)),
        ]);
        store.create_workflow(&wf).await.unwrap();
        let ids: Vec<TaskId> = wf.steps.iter().map(|s| s.task.id).collect();
        assert!(store.expire_approvals(100).await.unwrap().is_empty(), "none is due yet");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let expired = store.expire_approvals(100).await.unwrap();
        assert_eq!(expired.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[0]], "only quick: {expired:?}");
        assert_eq!(
            (expired[0].status, expired[0].last_error.as_deref()),
            (TaskStatus::Failed, Some("approval_expired"))
        );
        assert_eq!(expired[0].attempts, 1);
        assert!(store.expire_approvals(100).await.unwrap().is_empty(), "an expiry ends a step once");
        for id in &ids[1..] {
            assert_eq!(status(&*store, *id).await, TaskStatus::Waiting, "behind waits for its parent, not its clock");
        }
        assert!(matches!(
            store.decide(ids[0], &record(Decision::Approve, "ana")).await,
            Err(DecideError::NotAwaiting { .. })
        ));
    }
}

on_both_stores!(approvals_sqlite, approvals_postgres, approval_cases, store;
    an_approval_awaits_its_decision_unclaimed_and_approve_releases,
    a_rejected_approval_fails_and_a_retry_asks_again,
    only_approvals_past_their_expiry_expire,
);
