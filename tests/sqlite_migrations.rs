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
