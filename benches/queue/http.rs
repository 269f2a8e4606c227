//! The HTTP side: the bench as a client of the daemon's API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::support::{bail, poll_until, Context, Result};

/// Every enqueue answers this; anything else is counted as an error.
const CREATED: StatusCode = StatusCode::CREATED;
/// Generous: the bulk request carries 100,000 tasks in one INSERT.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const READY_POLL: Duration = Duration::from_millis(20);

/// A keep-alive client: connections are reused, so the bench measures requests, not TCP
/// handshakes. Proxies are off, whatever the environment says.
pub fn client(max_connections: usize) -> Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(max_connections)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// Waits until `GET /health` answers 200.
pub async fn wait_healthy(client: &Client, base: &str) -> Result<()> {
    let url = format!("{base}/health");
    poll_until("GET /health to answer 200", READY_POLL, READY_TIMEOUT, || async {
        let ok = matches!(client.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK);
        Ok(ok.then_some(()))
    })
    .await
}

/// Waits until `GET /ready` says the LISTEN connection is up, so that the first inserts
/// are not measured against a listener that is still connecting.
pub async fn wait_listener(client: &Client, base: &str) -> Result<()> {
    let url = format!("{base}/ready");
    poll_until("GET /ready to report listener_connected", READY_POLL, READY_TIMEOUT, || async {
        let body: Option<Value> = match client.get(&url).send().await {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        let connected = body.is_some_and(|b| b["listener_connected"] == Value::Bool(true));
        Ok(connected.then_some(()))
    })
    .await
}

fn echo(i: u64) -> Value {
    json!({ "type": "echo", "payload": { "i": i } })
}

/// What a stream of enqueue requests got back.
#[derive(Debug, Default)]
pub struct Tally {
    pub created: u64,
    /// Non-201 answers by status code.
    pub rejected: BTreeMap<u16, u64>,
    /// Requests that got no answer at all (connection refused or reset, timeout).
    pub transport_errors: u64,
    pub first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, outcome: reqwest::Result<StatusCode>) {
        match outcome {
            Ok(CREATED) => self.created += 1,
            Ok(status) => *self.rejected.entry(status.as_u16()).or_default() += 1,
            Err(e) => {
                self.transport_errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.created += other.created;
        for (status, n) in other.rejected {
            *self.rejected.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn errors(&self) -> u64 {
        self.rejected.values().sum::<u64>() + self.transport_errors
    }

    /// A line for the report, when anything but 201 came back.
    pub fn describe_errors(&self) -> Option<String> {
        (self.errors() > 0).then(|| {
            format!(
                "{} enqueue request(s) failed: non-201 answers by status {:?}, {} without an answer{}",
                self.errors(),
                self.rejected,
                self.transport_errors,
                self.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
            )
        })
    }
}

async fn enqueue(client: &Client, url: &str, i: u64) -> reqwest::Result<StatusCode> {
    let response = client.post(url).json(&echo(i)).send().await?;
    let status = response.status();
    response.bytes().await?; // read the body whole so that the connection is reused
    Ok(status)
}

/// `concurrency` clients, each sending single enqueues back to back until `duration`
/// has passed. Returns the tally and the time until the last answer arrived.
pub async fn enqueue_flood(
    client: &Client,
    base: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<(Tally, Duration)> {
    let url: Arc<str> = format!("{base}/tasks/enqueue").into();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    tally.record(enqueue(&client, &url, i).await);
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.context("an enqueue client panicked")?);
    }
    Ok((total, start.elapsed()))
}

/// Sends `n` single enqueues one after the other, each after the previous answer and a
/// `pause`, so that each is dispatched alone.
pub async fn enqueue_sequentially(client: &Client, base: &str, n: usize, pause: Duration) -> Tally {
    let url = format!("{base}/tasks/enqueue");
    let mut tally = Tally::default();
    for i in 0..n as u64 {
        tally.record(enqueue(client, &url, i).await);
        tokio::time::sleep(pause).await;
    }
    tally
}

/// The body of one `POST /tasks/enqueue_batch` with `n` echo tasks.
pub fn batch_body(n: usize) -> Result<Vec<u8>> {
    let specs: Vec<Value> = (0..n as u64).map(echo).collect();
    serde_json::to_vec(&specs).context("serializing the batch")
}

/// Posts a prepared batch and returns how long it took until the whole answer arrived.
/// Anything but a 201 that reports `count` tasks fails: the scenario could not run.
pub async fn enqueue_batch(client: &Client, base: &str, body: Vec<u8>, n: usize) -> Result<Duration> {
    let request = client
        .post(format!("{base}/tasks/enqueue_batch"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let start = Instant::now();
    let response = request.send().await.context("POST /tasks/enqueue_batch")?;
    let status = response.status();
    let answer = response.bytes().await.context("reading the batch answer")?;
    let elapsed = start.elapsed();
    if status != CREATED {
        bail!(
            "POST /tasks/enqueue_batch answered {status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    let answer: Value = serde_json::from_slice(&answer).context("parsing the batch answer")?;
    if answer["count"].as_u64() != Some(n as u64) {
        bail!("POST /tasks/enqueue_batch answered count = {}, {n} were sent", answer["count"]);
    }
    Ok(elapsed)
}

/// Registers an HTTP worker serving `task_type`; returns its id.
pub async fn register_worker(client: &Client, base: &str, task_type: &str, max_slots: u32) -> Result<String> {
    let body = json!({ "name": "bench", "types": [task_type], "max_slots": max_slots });
    let res = client.post(format!("{base}/workers")).json(&body).send().await.context("POST /workers")?;
    if res.status() != CREATED {
        bail!("POST /workers answered {}", res.status());
    }
    let answer: Value = res.json().await.context("reading the registration")?;
    Ok(answer["worker_id"].as_str().ok_or("no worker_id in the registration")?.to_string())
}

/// One claim: up to `max` tasks, waiting up to `wait_ms`.
pub async fn claim(client: &Client, base: &str, worker: &str, max: u32, wait_ms: u64) -> Result<Vec<Value>> {
    let body = json!({ "worker_id": worker, "max": max, "wait_ms": wait_ms });
    let res = client.post(format!("{base}/tasks/claim")).json(&body).send().await.context("POST /tasks/claim")?;
    if res.status() != StatusCode::OK {
        bail!("POST /tasks/claim answered {}", res.status());
    }
    let mut answer: Value = res.json().await.context("reading the claim")?;
    Ok(answer["tasks"].as_array_mut().map(std::mem::take).unwrap_or_default())
}

/// Completes a claimed task with an empty result.
pub async fn complete(client: &Client, base: &str, task: &Value) -> Result<()> {
    let id = task["task_id"].as_str().ok_or("a claimed task without task_id")?;
    let body = json!({ "lease_token": task["lease_token"], "result": null });
    let res = client.post(format!("{base}/tasks/{id}/complete")).json(&body).send().await.context("POST complete")?;
    if res.status() != StatusCode::OK {
        bail!("POST /tasks/{id}/complete answered {}", res.status());
    }
    Ok(())
}

/// Claims (up to 100) and completes until a claim finds nothing; returns how many. The
/// tasks of one claim are completed concurrently, as a worker with 100 slots runs them.
pub async fn work_until_idle(client: &Client, base: &str, worker: &str) -> Result<usize> {
    let mut done = 0;
    loop {
        let tasks = claim(client, base, worker, 100, 200).await?;
        if tasks.is_empty() {
            return Ok(done);
        }
        let ends = futures_util::future::join_all(tasks.iter().map(|task| complete(client, base, task))).await;
        for end in ends {
            end?;
        }
        done += tasks.len();
    }
}
