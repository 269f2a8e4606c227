//! Metrics: what `GET /metrics` exposes, in the Prometheus/OpenMetrics text format.
//!
//! Counters and histograms are updated where things happen (the API counts enqueues, the
//! executor counts ends and times runs); the task counts by status and the per-queue
//! gauges (running, concurrency limit, paused) are read from the store when scraped, at
//! most every [`STATUS_COUNTS_TTL`], so a busy scraper costs a few cheap queries every few
//! seconds. The queue gauges come from the store, not from this process's own changes, so
//! every daemon reports the same values whichever daemon paused or limited the queue.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::queue::QueueView;
use crate::task::TaskStatus;
use crate::tunables::STATUS_COUNTS_TTL;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub task_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

fn by_type(task_type: &str) -> TypeLabel {
    TypeLabel { task_type: task_type.to_string() }
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    enqueued: Family<TypeLabel, Counter>,
    completed: Family<TypeLabel, Counter>,
    failed: Family<TypeLabel, Counter>,
    retried: Family<TypeLabel, Counter>,
    run_seconds: Family<TypeLabel, Histogram, fn() -> Histogram>,
    claim_to_start_seconds: Histogram,
    tasks: Family<StatusLabel, Gauge>,
    queued: Family<TypeLabel, Gauge>,
    listener_connected: Gauge,
    queue_running: Family<QueueLabel, Gauge>,
    queue_concurrency_limit: Family<QueueLabel, Gauge>,
    queue_paused: Family<QueueLabel, Gauge>,
    status_read_at: Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        fn run_histogram() -> Histogram {
            // 100 µs to ~30 min.
            Histogram::new(exponential_buckets(0.0001, 4.0, 13))
        }
        let mut registry = Registry::with_prefix("jct");
        let enqueued = Family::<TypeLabel, Counter>::default();
        let completed = Family::<TypeLabel, Counter>::default();
        let failed = Family::<TypeLabel, Counter>::default();
        let retried = Family::<TypeLabel, Counter>::default();
        let run_seconds = Family::<TypeLabel, Histogram, fn() -> Histogram>::new_with_constructor(run_histogram);
        // 10 µs to ~40 s.
        let claim_to_start_seconds = Histogram::new(exponential_buckets(0.00001, 4.0, 12));
        let tasks = Family::<StatusLabel, Gauge>::default();
        let queued = Family::<TypeLabel, Gauge>::default();
        let listener_connected = Gauge::default();
        let queue_running = Family::<QueueLabel, Gauge>::default();
        let queue_concurrency_limit = Family::<QueueLabel, Gauge>::default();
        let queue_paused = Family::<QueueLabel, Gauge>::default();
        registry.register("tasks_enqueued", "Tasks enqueued through the API", enqueued.clone());
        registry.register("tasks_completed", "Tasks completed", completed.clone());
        registry.register("tasks_failed", "Tasks failed for good (attempts used up or unknown type)", failed.clone());
        registry.register("tasks_retried", "Failed attempts that will be retried", retried.clone());
        registry.register("task_run_seconds", "Handler run time", run_seconds.clone());
        registry.register(
            "task_claim_to_start_seconds",
            "Time from claim to the handler's start",
            claim_to_start_seconds.clone(),
        );
        registry.register("tasks", "Tasks in the store by status", tasks.clone());
        registry.register("tasks_queued", "Queued tasks by type (a type nobody serves waits here)", queued.clone());
        registry.register(
            "listener_connected",
            "1 when the PostgreSQL LISTEN connection is up",
            listener_connected.clone(),
        );
        registry.register(
            "queue_running",
            "Running tasks by queue (every queue with a setting or a live task)",
            queue_running.clone(),
        );
        registry.register(
            "queue_concurrency_limit",
            "A queue's concurrency limit; no series for a queue without one",
            queue_concurrency_limit.clone(),
        );
        registry.register("queue_paused", "1 while a queue is paused, else 0", queue_paused.clone());
        Metrics {
            registry,
            enqueued,
            completed,
            failed,
            retried,
            run_seconds,
            claim_to_start_seconds,
            tasks,
            queued,
            listener_connected,
            queue_running,
            queue_concurrency_limit,
            queue_paused,
            status_read_at: Mutex::new(None),
        }
    }

    pub fn enqueued(&self, task_type: &str, n: u64) {
        self.enqueued.get_or_create(&by_type(task_type)).inc_by(n);
    }

    pub fn completed(&self, task_type: &str) {
        self.completed.get_or_create(&by_type(task_type)).inc();
    }

    pub fn failed(&self, task_type: &str) {
        self.failed.get_or_create(&by_type(task_type)).inc();
    }

    pub fn retried(&self, task_type: &str) {
        self.retried.get_or_create(&by_type(task_type)).inc();
    }

    pub fn ran(&self, task_type: &str, took: Duration) {
        self.run_seconds.get_or_create(&by_type(task_type)).observe(took.as_secs_f64());
    }

    pub fn started_after_claim(&self, waited: Duration) {
        self.claim_to_start_seconds.observe(waited.as_secs_f64());
    }

    pub fn set_listener_connected(&self, up: bool) {
        self.listener_connected.set(up as i64);
    }

    /// True when the counts by status are older than [`STATUS_COUNTS_TTL`] (and marks them
    /// as being refreshed, so concurrent scrapes do not all query).
    pub fn status_counts_due(&self) -> bool {
        let mut at = self.status_read_at.lock().unwrap_or_else(|p| p.into_inner());
        match *at {
            Some(t) if t.elapsed() < STATUS_COUNTS_TTL => false,
            _ => {
                *at = Some(Instant::now());
                true
            }
        }
    }

    pub fn set_status_counts(&self, counts: &[(TaskStatus, u64)]) {
        for status in TaskStatus::ALL {
            let n = counts.iter().find(|(s, _)| *s == status).map(|(_, n)| *n).unwrap_or(0);
            self.tasks.get_or_create(&StatusLabel { status: status.as_str().into() }).set(n as i64);
        }
    }

    /// Queued tasks by type; types with none queued any more disappear.
    pub fn set_queued_by_type(&self, counts: &[(String, u64)]) {
        self.queued.clear();
        for (task_type, n) in counts {
            self.queued.get_or_create(&by_type(task_type)).set(*n as i64);
        }
    }

    /// The per-queue gauges from the queues as listed now; queues no longer listed (no
    /// setting, no live task) disappear.
    ///
    /// A queue without a concurrency limit has no `jct_queue_concurrency_limit` series at
    /// all, rather than NaN or a sentinel: that is how Prometheus says "not applicable".
    /// `jct_queue_running / jct_queue_concurrency_limit` then yields a ratio for exactly the
    /// limited queues, `absent()` and `unless` work as expected, and no alert compares
    /// against a NaN that is never equal to anything.
    pub fn set_queues(&self, queues: &[QueueView]) {
        self.queue_running.clear();
        self.queue_concurrency_limit.clear();
        self.queue_paused.clear();
        for q in queues {
            let label = QueueLabel { queue: q.name.clone() };
            self.queue_running.get_or_create(&label).set(q.counts.running);
            self.queue_paused.get_or_create(&label).set(q.settings.paused as i64);
            if let Some(limit) = q.settings.concurrency {
                self.queue_concurrency_limit.get_or_create(&label).set(limit);
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_type_and_counts_by_status() {
        let m = Metrics::new();
        m.enqueued("echo", 3);
        m.completed("echo");
        m.failed("fail");
        m.ran("echo", Duration::from_millis(2));
        m.set_status_counts(&[(TaskStatus::Queued, 7)]);
        let text = m.render();
        assert!(text.contains("jct_tasks_enqueued_total{task_type=\"echo\"} 3"), "{text}");
        assert!(text.contains("jct_tasks_completed_total{task_type=\"echo\"} 1"), "{text}");
        assert!(text.contains("jct_tasks_failed_total{task_type=\"fail\"} 1"), "{text}");
        assert!(text.contains("jct_tasks{status=\"queued\"} 7"), "{text}");
        assert!(text.contains("jct_tasks{status=\"running\"} 0"), "{text}");
        assert!(text.contains("jct_task_run_seconds_count{task_type=\"echo\"} 1"), "{text}");
        assert!(m.status_counts_due() && !m.status_counts_due(), "the second scrape reuses the counts");
    }

    #[test]
    fn queue_gauges_follow_the_last_listing_and_omit_missing_limits() {
        use crate::queue::{QueueCounts, QueueSettings};
        let m = Metrics::new();
        let view = |name: &str, paused, concurrency, running| QueueView {
            name: name.into(),
            settings: QueueSettings { paused, concurrency, ..QueueSettings::default() },
            counts: QueueCounts { running, ..QueueCounts::default() },
        };
        m.set_queues(&[view("a", true, Some(3), 2), view("b", false, None, 1)]);
        let text = m.render();
        for line in [
            "jct_queue_running{queue=\"a\"} 2",
            "jct_queue_paused{queue=\"a\"} 1",
            "jct_queue_concurrency_limit{queue=\"a\"} 3",
            "jct_queue_running{queue=\"b\"} 1",
            "jct_queue_paused{queue=\"b\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("jct_queue_concurrency_limit{queue=\"b\"}"), "no limit, no series: {text}");
        m.set_queues(&[view("b", false, None, 0)]);
        let text = m.render();
        assert!(!text.contains("queue=\"a\""), "a queue no longer listed disappears: {text}");
    }
}
