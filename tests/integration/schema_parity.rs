//! The two dialects' schemas cannot drift: both are migrated from scratch and compared.
//!
//! Compared: the tables, each column with its nullability, primary keys, unique
//! constraints and unique indexes (by columns, and whether partial), foreign keys, and the
//! other indexes (by columns, and whether partial). Types are not compared: the dialects
//! spell them differently by design (jsonb/TEXT, timestamptz/TEXT, uuid/TEXT).
//! [`DELIBERATE`] names every accepted difference with its reason; anything else fails.

use std::collections::BTreeSet;

use crate::support::{PgDb, SqliteDb};

/// Differences the dialects keep on purpose: (fact only SQLite has, fact only PostgreSQL
/// has, why). Empty strings mean "nothing on that side".
const DELIBERATE: &[(&str, &str, &str)] = &[];

type Facts = BTreeSet<String>;

fn index_fact(kind: &str, table: &str, columns: &[String], partial: bool) -> String {
    format!("{kind} {table}({}){}", columns.join(","), if partial { " partial" } else { "" })
}

async fn sqlite_facts() -> Facts {
    let db = SqliteDb::new();
    drop(db.backend().await); // opening migrates
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    let mut facts = Facts::new();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> 'refinery_schema_history' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in &tables {
        facts.insert(format!("table {table}"));
        let columns: Vec<(String, bool, i64)> = conn
            .prepare(&format!("SELECT name, \"notnull\", pk FROM pragma_table_info('{table}') ORDER BY cid"))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (name, not_null, _) in &columns {
            facts.insert(format!("column {table}.{name}{}", if *not_null { " not null" } else { "" }));
        }
        let mut pk: Vec<(i64, String)> =
            columns.iter().filter(|(_, _, pk)| *pk > 0).map(|(n, _, pk)| (*pk, n.clone())).collect();
        pk.sort();
        if !pk.is_empty() {
            let cols: Vec<String> = pk.into_iter().map(|(_, n)| n).collect();
            facts.insert(index_fact("primary key", table, &cols, false));
        }
        let indexes: Vec<(String, bool, String, bool)> = conn
            .prepare(&format!("SELECT name, \"unique\", origin, partial FROM pragma_index_list('{table}')"))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (index, unique, origin, partial) in indexes {
            if origin == "pk" {
                continue; // seen above through table_info
            }
            let cols: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_index_info('{index}') ORDER BY seqno"))
                .unwrap()
                .query_map([], |r| r.get::<_, Option<String>>(0))
                .unwrap()
                .map(|c| c.unwrap().unwrap_or_else(|| "<expr>".into()))
                .collect();
            facts.insert(index_fact(if unique { "unique" } else { "index" }, table, &cols, partial));
        }
        let fks: Vec<(i64, String, String, Option<String>)> = conn
            .prepare(&format!(
                "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list('{table}') ORDER BY id, seq"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let ids: BTreeSet<i64> = fks.iter().map(|f| f.0).collect();
        for id in ids {
            let parts: Vec<&(i64, String, String, Option<String>)> = fks.iter().filter(|f| f.0 == id).collect();
            let target = &parts[0].1;
            let from: Vec<String> = parts.iter().map(|f| f.2.clone()).collect();
            let to: Vec<String> = parts.iter().map(|f| f.3.clone().unwrap_or_else(|| "id".into())).collect();
            facts.insert(format!("foreign key {table}({}) -> {target}({})", from.join(","), to.join(",")));
        }
    }
    facts
}

async fn postgres_facts() -> Facts {
    let db = PgDb::new().await;
    let client = db.client().await;
    let mut facts = Facts::new();
    for row in client
        .query(
            "SELECT table_name::text, column_name::text, is_nullable = 'NO' FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> 'refinery_schema_history'",
            &[],
        )
        .await
        .unwrap()
    {
        let (table, column, not_null): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        facts.insert(format!("table {table}"));
        facts.insert(format!("column {table}.{column}{}", if not_null { " not null" } else { "" }));
    }
    for row in client
        .query(
            "SELECT t.relname::text, i.indisprimary, i.indisunique, i.indpred IS NOT NULL, \
               array(SELECT coalesce(a.attname::text, '<expr>') \
                     FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                     LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                     ORDER BY k.ord) \
             FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = 'public' AND t.relname <> 'refinery_schema_history'",
            &[],
        )
        .await
        .unwrap()
    {
        let (table, primary, unique, partial, cols): (String, bool, bool, bool, Vec<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let kind = if primary {
            "primary key"
        } else if unique {
            "unique"
        } else {
            "index"
        };
        facts.insert(index_fact(kind, &table, &cols, partial));
    }
    for row in client
        .query(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, \
               array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o) \
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o), \
               array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o) \
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o) \
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE c.contype = 'f' AND n.nspname = 'public'",
            &[],
        )
        .await
        .unwrap()
    {
        let (table, target, from, to): (String, String, Vec<String>, Vec<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        facts.insert(format!("foreign key {table}({}) -> {target}({})", from.join(","), to.join(",")));
    }
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_migrate_to_the_same_schema() {
    let (sqlite, postgres) = (sqlite_facts().await, postgres_facts().await);
    assert!(sqlite.contains("table tasks") && postgres.contains("table tasks"), "introspection found no tasks table");
    assert!(
        postgres.iter().any(|f| f.starts_with("foreign key")) && sqlite.iter().any(|f| f.starts_with("foreign key")),
        "introspection found no foreign keys"
    );
    let accepted_sqlite: BTreeSet<&str> = DELIBERATE.iter().map(|d| d.0).filter(|f| !f.is_empty()).collect();
    let accepted_pg: BTreeSet<&str> = DELIBERATE.iter().map(|d| d.1).filter(|f| !f.is_empty()).collect();
    let only_sqlite: Vec<&String> =
        sqlite.difference(&postgres).filter(|f| !accepted_sqlite.contains(f.as_str())).collect();
    let only_pg: Vec<&String> = postgres.difference(&sqlite).filter(|f| !accepted_pg.contains(f.as_str())).collect();
    assert!(
        only_sqlite.is_empty() && only_pg.is_empty(),
        "the schemas differ (fix a migration, or name the difference in DELIBERATE with its reason)\n\
         only in SQLite:\n  {}\nonly in PostgreSQL:\n  {}",
        only_sqlite.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
        only_pg.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
    );
    // Every deliberate difference is still real: a fixed one must leave the list.
    for (s, p, why) in DELIBERATE {
        assert!(s.is_empty() || sqlite.contains(*s), "DELIBERATE names {s:?} ({why}), which SQLite no longer has");
        assert!(
            p.is_empty() || postgres.contains(*p),
            "DELIBERATE names {p:?} ({why}), which PostgreSQL no longer has"
        );
    }
}
