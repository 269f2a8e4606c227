//! PostgreSQL dispatch with real daemon processes: NOTIFY-driven claims of raw-SQL
//! inserts (also one notified while a claim is in flight), one wake-up per statement,
//! several daemons sharing a database, and a LISTEN connection killed from the server side; and the schema under them: column defaults,
//! time-ordered ids, and the lease statements' plans when statistics are stale.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::{wait_for, wait_status, PgDb, Spawn};
use serde_json::{json, Value};

/// A poll interval long enough that only NOTIFY can explain a fast dispatch.
const NO_POLL: &str = "60000";

async fn listener_connected(d: &support::DaemonProcess) {
    wait_for("the LISTEN connection", Duration::from_secs(10), || async {
        let body: Value = support::http().get(d.url("/ready")).send().await.ok()?.json().await.ok()?;
        (body["listener_connected"] == true).then_some(())
    })
    .await;
}

async fn status_counts(client: &tokio_postgres::Client) -> HashMap<String, i64> {
    client
        .query("SELECT status, count(*) FROM tasks GROUP BY status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_insert_is_dispatched_by_notify_within_a_second() {
    let db = PgDb::new().await;
    let d = Spawn::new().env("DATABASE_URL", &db.url).env("JCT_POLL_INTERVAL_MS", NO_POLL).start();
    listener_connected(&d).await;
    let client = db.client().await;
    for round in 0..3 {
        let row = client
            .query_one("INSERT INTO tasks (type, payload) VALUES ('echo', '{\"x\":1}') RETURNING id", &[])
            .await
            .unwrap();
        let id = row.get::<_, uuid::Uuid>(0).to_string();
        let done = wait_status(&d.url(""), &id, "completed", Duration::from_secs(1)).await;
        assert_eq!(done["result"], json!({"x": 1}), "round {round}");
    }
}

/// A task inserted while a claim is in flight may be missing from that claim's snapshot;
/// its NOTIFY must still lead to another claim. A row trigger makes the claim of the first
/// task take a second, and the second task is inserted (and notified) meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_inserted_during_a_claim_is_claimed_right_after_it() {
    let db = PgDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.payload ? 'slow' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$; \
             CREATE TRIGGER slow_claim BEFORE UPDATE ON tasks FOR EACH ROW \
               WHEN (OLD.status = 'queued') EXECUTE FUNCTION slow_claim();",
        )
        .await
        .unwrap();
    let d = Spawn::new().env("DATABASE_URL", &db.url).env("JCT_POLL_INTERVAL_MS", NO_POLL).start();
    listener_connected(&d).await;
    let insert = |payload: &'static str| {
        let client = &client;
        async move {
            let sql = format!("INSERT INTO tasks (type, payload) VALUES ('echo', '{payload}') RETURNING id");
            client.query_one(&sql, &[]).await.unwrap().get::<_, uuid::Uuid>(0).to_string()
        }
    };
    let slow = insert(r#"{"slow": true}"#).await;
    wait_for("the claim to sleep in the trigger", Duration::from_secs(5), || async {
        let sleeping: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event = 'PgSleep' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (sleeping > 0).then_some(())
    })
    .await;
    let quick = insert(r#"{"quick": true}"#).await;
    wait_status(&d.url(""), &slow, "completed", Duration::from_secs(5)).await;
    // Without another claim it would wait for the 60 s poll.
    wait_status(&d.url(""), &quick, "completed", Duration::from_secs(5)).await;
}

/// A batch of plain tasks goes in by COPY, one with keys or start times by INSERT: both
/// fire the statement trigger, so a daemon that only listens runs them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_batch_paths_are_dispatched_by_notify() {
    let db = PgDb::new().await;
    let d = Spawn::new().env("DATABASE_URL", &db.url).env("JCT_POLL_INTERVAL_MS", NO_POLL).start();
    listener_connected(&d).await;
    let http = support::http();
    let plain = json!([{"type": "echo", "payload": 1}, {"type": "echo", "payload": 2}]);
    let keyed = json!([{"type": "echo", "payload": 3, "idempotency_key": "batch-k"}]);
    for batch in [plain, keyed] {
        let reply = http.post(d.url("/tasks/enqueue_batch")).json(&batch).send().await.unwrap();
        assert_eq!(reply.status(), 201);
        let body: Value = reply.json().await.unwrap();
        for (id, task) in body["task_ids"].as_array().unwrap().iter().zip(batch.as_array().unwrap()) {
            let done = wait_status(&d.url(""), id.as_str().unwrap(), "completed", Duration::from_secs(1)).await;
            assert_eq!(done["result"], task["payload"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ten_thousand_row_insert_is_one_notification_and_all_run() {
    let db = PgDb::new().await;
    let client = db.client().await;
    // Count the notifications one statement sends, on our own LISTEN connection.
    let (listener, mut conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.channel().to_string());
            }
        }
    });
    listener.batch_execute("LISTEN jct_tasks").await.unwrap();

    let d = Spawn::new()
        .env("DATABASE_URL", &db.url)
        .env("JCT_POLL_INTERVAL_MS", NO_POLL)
        .env("JCT_WORKERS", "32")
        .env("JCT_TRACE", "off")
        .start();
    listener_connected(&d).await;
    client
        .execute(
            "INSERT INTO tasks (type, payload) SELECT 'echo', jsonb_build_object('i', g) FROM generate_series(1, 10000) g",
            &[],
        )
        .await
        .unwrap();
    wait_for("all 10,000 tasks to complete", Duration::from_secs(120), || async {
        let counts = status_counts(&client).await;
        (counts.get("completed") == Some(&10_000)).then_some(())
    })
    .await;
    listener.batch_execute("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut notes = 0;
    while rx.try_recv().is_ok() {
        notes += 1;
    }
    assert_eq!(notes, 1, "one notification for one INSERT statement");
    let bad = client
        .query_one("SELECT count(*) FROM tasks WHERE attempts <> 1 OR result <> payload", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(bad, 0, "each task ran once and echoed its payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_daemons_run_five_thousand_tasks_exactly_once() {
    let db = PgDb::new().await;
    let traces = tempfile::tempdir().unwrap();
    let trace_dir = traces.path().display().to_string();
    let daemons: Vec<_> = (0..4)
        .map(|_| {
            Spawn::new()
                .arg("worker")
                .no_api()
                .env("DATABASE_URL", &db.url)
                .env("JCT_TRACE_DIR", &trace_dir)
                .env("JCT_POLL_INTERVAL_MS", "500")
                .start()
        })
        .collect();
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO tasks (type, payload) SELECT 'echo', jsonb_build_object('i', g) FROM generate_series(1, 5000) g",
            &[],
        )
        .await
        .unwrap();
    wait_for("all 5,000 tasks to complete", Duration::from_secs(180), || async {
        (status_counts(&client).await.get("completed") == Some(&5_000)).then_some(())
    })
    .await;
    let retried: i64 = client.query_one("SELECT count(*) FROM tasks WHERE attempts <> 1", &[]).await.unwrap().get(0);
    assert_eq!(retried, 0);
    // Every trace folder records exactly one attempt, and the work was shared.
    let mut workers = HashSet::new();
    let ids: Vec<uuid::Uuid> =
        client.query("SELECT id FROM tasks", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for id in ids {
        let folder = traces.path().join(id.to_string());
        let log = std::fs::read_to_string(folder.join("log.txt")).unwrap();
        assert_eq!(log.lines().filter(|l| l.starts_with("=== attempt")).count(), 1, "task {id} ran once");
        let input: Value = serde_json::from_slice(&std::fs::read(folder.join("input.json")).unwrap()).unwrap();
        workers.insert(input["locked_by"].as_str().unwrap().to_string());
    }
    assert!(workers.len() >= 2, "more than one daemon took part: {workers:?}");
    drop(daemons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listen_connection_is_replaced_and_dispatch_continues() {
    let db = PgDb::new().await;
    let d = Spawn::new().env("DATABASE_URL", &db.url).env("JCT_POLL_INTERVAL_MS", NO_POLL).start();
    listener_connected(&d).await;
    let client = db.client().await;
    let find_listener = || async {
        client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'jct-listener' \
                 AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, i32>(0))
    };
    let old = find_listener().await.expect("the listener is visible in pg_stat_activity");
    let killed: bool = client.query_one("SELECT pg_terminate_backend($1)", &[&old]).await.unwrap().get(0);
    assert!(killed);
    // Inserted while the listener is down: the reconnect's wake-up must pick it up.
    let id: uuid::Uuid =
        client.query_one("INSERT INTO tasks (type) VALUES ('echo') RETURNING id", &[]).await.unwrap().get(0);
    wait_status(&d.url(""), &id.to_string(), "completed", Duration::from_secs(10)).await;
    let new = wait_for("a new listener", Duration::from_secs(10), || async {
        find_listener().await.filter(|pid| *pid != old)
    })
    .await;
    assert_ne!(new, old);
    // And the new connection carries notifications again.
    let id: uuid::Uuid =
        client.query_one("INSERT INTO tasks (type) VALUES ('echo') RETURNING id", &[]).await.unwrap().get(0);
    wait_status(&d.url(""), &id.to_string(), "completed", Duration::from_secs(2)).await;
    assert!(d.stderr().contains("LISTEN connection lost"), "{}", d.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_insert_gets_every_default() {
    let db = PgDb::new().await;
    let client = db.client().await;
    let row = client
        .query_one(
            "INSERT INTO tasks (type, payload) VALUES ('echo', '{\"x\":1}') \
             RETURNING id, status, queue, priority, attempts, max_attempts, timeout_seconds, \
                       run_at <= now() AS due, created_at IS NOT NULL AS created",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("status"), "queued");
    assert_eq!(row.get::<_, String>("queue"), "default");
    assert_eq!(row.get::<_, i32>("priority"), 0);
    assert_eq!(row.get::<_, i32>("attempts"), 0);
    assert_eq!(row.get::<_, i32>("max_attempts"), 3);
    assert_eq!(row.get::<_, i32>("timeout_seconds"), 900);
    assert!(row.get::<_, bool>("due") && row.get::<_, bool>("created"));
    let bad = client.execute("INSERT INTO tasks (type, status) VALUES ('echo', 'bogus')", &[]).await;
    assert!(bad.is_err(), "status is constrained");
}

/// Raw-SQL inserts get UUIDv7 ids like the daemon's, so ids order tasks by creation and the
/// primary key serves "newest first" listing for tasks from either source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_inserts_get_time_ordered_ids_and_list_newest_first() {
    let db = PgDb::new().await;
    let client = db.client().await;
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let row = client.query_one("INSERT INTO tasks (type) VALUES ('echo') RETURNING id", &[]).await.unwrap();
        ids.push(row.get::<_, uuid::Uuid>(0));
        // Ids from two clocks order by the millisecond: keep the creations in distinct ones.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let api = store.enqueue(devops_control_tower::task::NewTask::new("echo", json!({ "i": i }))).await.unwrap();
        ids.push(api.id.0);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for id in &ids {
        assert_eq!(id.get_version_num(), 7, "{id} is not a version 7 UUID");
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids do not follow creation order: {ids:?}");
    let filter = devops_control_tower::task::TaskFilter { limit: 10, ..Default::default() };
    let listed: Vec<uuid::Uuid> = store.list(&filter).await.unwrap().iter().map(|t| t.id.0).collect();
    let newest_first: Vec<uuid::Uuid> = ids.iter().rev().copied().collect();
    assert_eq!(listed, newest_first);
}

/// The plan PostgreSQL would run for `statement`, as EXPLAIN prints it.
async fn explain(client: &tokio_postgres::Client, statement: &str) -> String {
    let rows = client.query(&format!("EXPLAIN {statement}"), &[]).await.unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

/// A table never analyzed (a bulk load the moment before) makes the planner expect a few
/// hundred queued rows; left alone it then bitmap-scans every queued row and sorts them for
/// each claim; once it is analyzed, a generic plan guesses a tenth of the table and hashes a
/// scan of the whole table to join the claimed ids. With the claim connection's settings it
/// walks the claim index in order and updates each claimed row through the primary key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_walks_the_claim_index_whatever_the_statistics() {
    use devops_control_tower::store::postgres::{CLAIM, CLAIM_SETTINGS, WORKER_SETTINGS};
    let db = PgDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE tasks SET (autovacuum_enabled = off); \
             INSERT INTO tasks (type) SELECT 'echo' FROM generate_series(1, 200000)",
        )
        .await
        .unwrap();
    for (name, value) in WORKER_SETTINGS.iter().chain(CLAIM_SETTINGS) {
        client.batch_execute(&format!("SET {name} = {value}")).await.unwrap();
    }
    client.batch_execute(&format!("PREPARE claim_q (int8, text, float8, text[], text[]) AS {}", *CLAIM)).await.unwrap();
    for state in ["never analyzed", "analyzed"] {
        if state == "analyzed" {
            client.batch_execute("ANALYZE tasks").await.unwrap();
        }
        // More than five executions: where a cached generic plan could take over.
        for _ in 0..7 {
            for limit in [10, 200, 1024] {
                let plan =
                    explain(&client, &format!("EXECUTE claim_q ({limit}, 'w', 30, '{{echo,sleep,fail}}', NULL)")).await;
                let what = format!("claim of {limit} ({state})");
                assert!(plan.contains("Index Scan using tasks_claim_idx"), "{what}:\n{plan}");
                assert!(plan.contains("Index Scan using tasks_pkey"), "{what}:\n{plan}");
                assert!(!plan.contains("Sort"), "{what} sorts:\n{plan}");
                assert!(!plan.contains("Seq Scan on tasks"), "{what} scans the table:\n{plan}");
            }
        }
    }
}

/// The renew, finish and release statements must reach their rows through the primary
/// key, with the settings of the worker's connections, whatever the planner knows of the
/// table. Two states fooled it (both measured in 100,000-task drains):
/// - statistics from right after a bulk load say every task is queued, so the planner
///   believes `tasks_lease_idx` (the running rows) is empty and walks it, matching every
///   running row against the whole batch (0.6 s per finish);
/// - a table never analyzed: a custom plan expected one running row for this worker,
///   seq-scanned the table and matched each row against all 512 outcomes (0.55 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_statements_use_the_primary_key_whatever_the_statistics() {
    use devops_control_tower::store::postgres::{FINISH, FINISH_IDS, RELEASE, RENEW, WORKER_SETTINGS};
    for analyzed in [true, false] {
        let db = PgDb::new().await;
        let client = db.client().await;
        let analyze = if analyzed { "ANALYZE tasks;" } else { "" };
        client
            .batch_execute(&format!(
                "ALTER TABLE tasks SET (autovacuum_enabled = off); \
                 INSERT INTO tasks (type) SELECT 'echo' FROM generate_series(1, 50000); {analyze} \
                 UPDATE tasks SET status = 'running', attempts = 1, locked_by = 'w', \
                        locked_until = now() + interval '1 minute' \
                 WHERE id IN (SELECT id FROM tasks ORDER BY id LIMIT 5000);"
            ))
            .await
            .unwrap();
        for (name, value) in WORKER_SETTINGS {
            client.batch_execute(&format!("SET {name} = {value}")).await.unwrap();
        }
        // EXECUTE takes no subqueries: the batch's ids go in as an array literal.
        let row = client
            .query_one(
                "SELECT array_agg(id)::text FROM (SELECT id FROM tasks WHERE status = 'running' LIMIT 512) r",
                &[],
            )
            .await
            .unwrap();
        let args = format!("'{}'::uuid[]", row.get::<_, String>(0));
        let fences = format!("{args}, array_fill('w'::text, ARRAY[512]), array_fill(1, ARRAY[512])");
        let statements = [
            ("renew", RENEW, "uuid[], text[], int4[], float8", format!("{fences}, 30")),
            (
                "finish",
                FINISH.as_str(),
                "uuid[], int4[], text[], jsonb[], text[], timestamptz[], text[]",
                format!(
                    "{args}, array_fill(1, ARRAY[512]), array_fill('completed'::text, ARRAY[512]), \
                     array_fill('{{}}'::jsonb, ARRAY[512]), array_fill(NULL::text, ARRAY[512]), \
                     array_fill(NULL::timestamptz, ARRAY[512]), array_fill('w'::text, ARRAY[512])"
                ),
            ),
            (
                "finish_ids",
                FINISH_IDS.as_str(),
                "uuid[], int4[], text[], jsonb[], text[], timestamptz[], text[]",
                format!(
                    "{args}, array_fill(1, ARRAY[512]), array_fill('completed'::text, ARRAY[512]), \
                     array_fill('{{}}'::jsonb, ARRAY[512]), array_fill(NULL::text, ARRAY[512]), \
                     array_fill(NULL::timestamptz, ARRAY[512]), array_fill('w'::text, ARRAY[512])"
                ),
            ),
            ("release", RELEASE, "uuid[], text[], int4[]", fences.clone()),
        ];
        for (name, sql, types, values) in &statements {
            client.batch_execute(&format!("PREPARE {name}_q ({types}) AS {sql}")).await.unwrap();
            let plan = explain(&client, &format!("EXECUTE {name}_q ({values})")).await;
            let state = if analyzed { "stale statistics" } else { "never analyzed" };
            assert!(!plan.contains("tasks_lease_idx"), "{name} ({state}) walks the lease index:\n{plan}");
            assert!(!plan.contains("Seq Scan on tasks"), "{name} ({state}) scans the table:\n{plan}");
            assert!(plan.contains("tasks_pkey"), "{name} ({state}) does not use the primary key:\n{plan}");
        }
    }
}

/// Several daemons migrating one empty database at once: the advisory lock lets one
/// apply the migrations and the others find them applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_on_an_empty_database_all_succeed() {
    let admin = support::pg_base_url();
    let name = format!("m_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(support::BIN)
                .arg("migrate")
                .env_clear()
                .env("DATABASE_URL", &url)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let applied: i64 = db.query_one("SELECT count(*) FROM refinery_schema_history", &[]).await.unwrap().get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(applied as usize, files, "each migration applied exactly once");
    drop(db);
    client.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
}
