//! SQLite migrations that rebuild a table keep what an existing file holds.
//!
//! V4 rebuilds `tasks` (SQLite cannot change a column default or drop a UNIQUE constraint in
//! place). These tests apply V1–V3 to a file, store rows the way the daemon and a hand-written
//! INSERT do, apply V4, and check every row and the new rules.

use std::path::Path;

use rusqlite::Connection;

fn migration(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn v3_file() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("old.db")).unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    for m in ["V1__create_tasks.sql", "V2__cwom.sql", "V3__task_cwom_link.sql"] {
        conn.execute_batch(&migration(m)).unwrap();
    }
    (dir, conn)
}

fn dump(conn: &Connection) -> Vec<Vec<Option<String>>> {
    let mut stmt = conn.prepare("SELECT * FROM tasks ORDER BY id").unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, Option<String>>(i).or_else(|_| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v.to_string())))
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn v4_keeps_every_row_and_column() {
    let (_dir, conn) = v3_file();
    conn.execute_batch(
        "INSERT INTO tasks (type, payload) VALUES ('echo', '{\"x\":1}');
         INSERT INTO tasks (id, type, payload, status, queue, priority, attempts, idempotency_key, trace_id,
                            locked_by, locked_until, result, last_error, started_at, finished_at)
         VALUES ('0190f1a2-0000-7000-8000-000000000001', 'sleep', '{\"ms\":5}', 'completed', 'q2', 7, 2,
                 'key-1', 'trace-1', NULL, NULL, '{\"ok\":true}', 'first try failed',
                 '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:01.000000Z');",
    )
    .unwrap();
    let before = dump(&conn);
    conn.execute_batch(&migration("V4__time_ordered_ids.sql")).unwrap();
    assert_eq!(dump(&conn), before, "V4 changed stored rows");
}

#[test]
fn v4_gives_raw_inserts_time_ordered_ids_and_keeps_keys_unique() {
    let (_dir, conn) = v3_file();
    conn.execute_batch(&migration("V4__time_ordered_ids.sql")).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        conn.execute("INSERT INTO tasks (type) VALUES ('echo')", []).unwrap();
        ids.push(
            conn.query_row("SELECT id FROM tasks WHERE rowid = last_insert_rowid()", [], |r| r.get::<_, String>(0))
                .unwrap(),
        );
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    for id in &ids {
        let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id:?} is not a uuid: {e}"));
        assert_eq!(uuid.get_version_num(), 7, "{id} is not a UUIDv7");
        let (secs, _) = uuid.get_timestamp().expect("a v7 id carries its time").to_unix();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(now.abs_diff(secs) < 60, "{id} says {secs}, the clock says {now}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids made a few milliseconds apart sort by time");
    conn.execute("INSERT INTO tasks (type, idempotency_key) VALUES ('echo', 'k')", []).unwrap();
    let again = conn.execute("INSERT INTO tasks (type, idempotency_key) VALUES ('echo', 'k')", []);
    assert!(again.is_err(), "a repeated idempotency key must be refused");
    let inserted = conn
        .execute(
            "INSERT INTO tasks (type, idempotency_key) VALUES ('echo', 'k') \
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            [],
        )
        .unwrap();
    assert_eq!(inserted, 0, "the daemon's insert skips a used key");
}

fn v4_file() -> (tempfile::TempDir, Connection) {
    let (dir, conn) = v3_file();
    conn.execute_batch(&migration("V4__time_ordered_ids.sql")).unwrap();
    (dir, conn)
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_micros()
}

#[test]
fn v5_turns_every_stored_time_into_microseconds_and_keeps_the_rest() {
    let (_dir, conn) = v4_file();
    conn.execute_batch(
        "INSERT INTO tasks (id, type, payload, status, queue, priority, attempts, idempotency_key, trace_id,
                            locked_by, locked_until, result, last_error, run_at, created_at, updated_at,
                            started_at, finished_at)
         VALUES ('0190f1a2-0000-7000-8000-000000000001', 'sleep', '{\"ms\":5}', 'running', 'q2', 7, 2,
                 'key-1', 'trace-1', 'w', '2026-01-01T00:00:30.000001Z', NULL, 'first try failed',
                 '2026-01-01T00:00:00.123456Z', '2025-12-31T23:59:59.999999Z', '2026-01-01T00:00:01.500000Z',
                 '2026-01-01T00:00:02.000000Z', NULL);
         INSERT INTO tasks (id, type, run_at, created_at, updated_at)
         VALUES ('0190f1a2-0000-7000-8000-000000000002', 'echo', '2026-01-01 10:00:00', '2026-01-01 10:00:00.25',
                 '2026-01-01 12:00:00+02:00');",
    )
    .unwrap();
    let before = dump(&conn);
    conn.execute_batch(&migration("V5__integer_times.sql")).unwrap();
    let times = |id: &str| -> Vec<Option<i64>> {
        conn.query_row(
            "SELECT run_at, locked_until, created_at, updated_at, started_at, finished_at FROM tasks WHERE id = ?1",
            [id],
            |r| (0..6).map(|i| r.get::<_, Option<i64>>(i)).collect(),
        )
        .unwrap()
    };
    assert_eq!(
        times("0190f1a2-0000-7000-8000-000000000001"),
        vec![
            Some(micros("2026-01-01T00:00:00.123456Z")),
            Some(micros("2026-01-01T00:00:30.000001Z")),
            Some(micros("2025-12-31T23:59:59.999999Z")),
            Some(micros("2026-01-01T00:00:01.5Z")),
            Some(micros("2026-01-01T00:00:02Z")),
            None,
        ],
        "the daemon's own form keeps its microseconds"
    );
    assert_eq!(
        times("0190f1a2-0000-7000-8000-000000000002")[..4],
        [
            Some(micros("2026-01-01T10:00:00Z")),
            None,
            Some(micros("2026-01-01T10:00:00.25Z")),
            Some(micros("2026-01-01T10:00:00Z")),
        ],
        "times written by hand, with a fraction or a zone"
    );
    // Every other column is as it was.
    let after = dump(&conn);
    let time_cols = [6, 13, 16, 17, 18, 19];
    for (b, a) in before.iter().zip(&after) {
        for (i, (x, y)) in b.iter().zip(a).enumerate() {
            if !time_cols.contains(&i) {
                assert_eq!(x, y, "column {i} changed");
            }
        }
    }
}

/// A raw INSERT with `run_at` written the way SQLite users write times is honoured: a
/// future task is never claimed early, a due one is claimed. (With times kept as text the
/// claim compared text, and `2026-11-29 10:00:00` sorted before `2026-11-29T09:00:00Z`.)
#[tokio::test]
async fn hand_written_text_times_are_honoured_by_the_claim() {
    use devops_control_tower::store::{AttemptStore, ClaimParams, SqliteStore, TaskReads};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let conn = Connection::open(&path).unwrap();
    let cases = [
        ("future", "datetime('now', '+1 hour')", false),
        ("future_fraction", "strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 hour')", false),
        ("future_t", "strftime('%Y-%m-%dT%H:%M:%S', 'now', '+1 hour')", false),
        ("future_zone", "strftime('%Y-%m-%d %H:%M:%S', 'now', '+3 hours') || '+02:00'", false),
        ("future_minute", "datetime('now', '+2 minutes')", false),
        ("due", "datetime('now', '-1 minute')", true),
        ("due_fraction", "strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 minute')", true),
        ("due_zone", "strftime('%Y-%m-%d %H:%M:%S', 'now', '+1 hour') || '+02:00'", true),
        ("due_julian_day", "julianday('now', '-1 minute')", true),
    ];
    for (name, sql, _) in &cases {
        conn.execute(
            &format!("INSERT INTO tasks (type, payload, run_at) VALUES ('echo', json_object('name', ?1), {sql})"),
            [name],
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let bad = conn.execute("INSERT INTO tasks (type, run_at) VALUES ('echo', 'next tuesday')", []);
    assert!(bad.is_err(), "text that is no time is refused");
    let claim = ClaimParams {
        worker: devops_control_tower::task::WorkerId("w".into()),
        limit: 100,
        lease: std::time::Duration::from_secs(30),
        types: vec!["echo".into()],
        queues: None,
    };
    let claimed = store.claim(&claim).await.unwrap();
    let mut got: Vec<String> = claimed.iter().map(|t| t.payload["name"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want: Vec<String> = cases.iter().filter(|c| c.2).map(|c| c.0.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "exactly the due tasks are claimed");
    // The future ones read back an hour (or two minutes) ahead, as written.
    let filter = devops_control_tower::task::TaskFilter { limit: 100, ..Default::default() };
    let now = chrono::Utc::now();
    for t in store.list(&filter).await.unwrap() {
        let name = t.payload["name"].as_str().unwrap();
        let ahead = t.run_at - now;
        match name {
            "future_minute" => assert!(ahead.num_seconds() > 100 && ahead.num_seconds() <= 120, "{name}: {ahead}"),
            n if n.starts_with("future") => {
                assert!(ahead.num_seconds() > 3500 && ahead.num_seconds() <= 3600, "{name}: {ahead}")
            }
            _ => assert!(ahead.num_seconds() < 0, "{name}: {ahead}"),
        }
    }
    // A hand-written UPDATE is converted too.
    conn.execute(
        "UPDATE tasks SET run_at = datetime('now', '-5 minutes') WHERE json_extract(payload, '$.name') = 'future'",
        [],
    )
    .unwrap();
    let again = store.claim(&claim).await.unwrap();
    assert_eq!(again.len(), 1, "the task moved into the past by hand is due");
    assert_eq!(again[0].payload["name"], "future");
}
