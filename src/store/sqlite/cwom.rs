//! CWOM on SQLite: the `cwom_mapping` plans executed with rusqlite on the driver's one
//! connection, on the blocking pool.
//!
//! Every write is one IMMEDIATE transaction: it takes the write lock up front, so two
//! processes sharing the file never deadlock upgrading a read into a write. JSON columns
//! are TEXT checked by `json_valid`, times the task store's fixed-width UTC text.
//!
//! Statements are prepared per call, not cached: the connection's small statement cache
//! belongs to the task store's hot path (claim, finish), and CWOM traffic is light.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::{conversion, fmt_ts, sql_err, SqliteStore};
use crate::cwom::error::{CwomError, CwomResult};
use crate::cwom::requests::ListQuery;
use crate::cwom::types::{Object, ObjectKind, Ref};
use crate::store::cwom::{Change, CwomStore};
use crate::store::cwom_mapping::{self as record, Check, ColType, Fields, Op, RefList, Table, Val, WritePlan};
use crate::store::error::StoreError;

pub(crate) struct SqliteCwom {
    store: SqliteStore,
}

impl SqliteCwom {
    pub(crate) fn new(store: SqliteStore) -> Self {
        SqliteCwom { store }
    }

    /// Runs `f` with the connection; domain errors travel inside the store's result.
    async fn run<T, F>(&self, f: F) -> CwomResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> CwomResult<T> + Send + 'static,
    {
        match self.store.call(move |conn| Ok(f(conn))).await {
            Ok(result) => result,
            Err(e) => Err(e.into()),
        }
    }
}

fn db(e: rusqlite::Error) -> CwomError {
    sql_err(e).into()
}

fn param(v: &Val) -> SqlValue {
    match v {
        Val::Text(s) => s.clone().map_or(SqlValue::Null, SqlValue::Text),
        Val::Int(n) => n.map_or(SqlValue::Null, SqlValue::Integer),
        Val::Json(j) => j.as_ref().map_or(SqlValue::Null, |j| SqlValue::Text(j.to_string())),
        Val::Time(t) => t.map_or(SqlValue::Null, |t| SqlValue::Text(fmt_ts(t))),
    }
}

fn read_row(table: &'static Table, row: &rusqlite::Row) -> rusqlite::Result<Fields> {
    let mut vals = Vec::with_capacity(table.columns.len());
    for (i, (_, ty)) in table.columns.iter().enumerate() {
        vals.push(match ty {
            ColType::Text => Val::Text(row.get(i)?),
            ColType::Int => Val::Int(row.get(i)?),
            ColType::Json => Val::Json(
                row.get::<_, Option<String>>(i)?
                    .map(|s| serde_json::from_str(&s).map_err(|e| conversion(i, e.to_string())))
                    .transpose()?,
            ),
            ColType::Time => Val::Time(
                row.get::<_, Option<String>>(i)?
                    .map(|s| {
                        DateTime::parse_from_rfc3339(&s)
                            .map(|t| t.with_timezone(&Utc))
                            .map_err(|e| conversion(i, format!("unreadable time {s:?}: {e}")))
                    })
                    .transpose()?,
            ),
        });
    }
    Ok(Fields::new(table, vals))
}

/// Objects of `kind` matching `where_sql`, with their Ref lists.
fn select(conn: &Connection, kind: ObjectKind, where_sql: &str, params: Vec<SqlValue>) -> CwomResult<Vec<Object>> {
    let table = record::table(kind);
    let sql = format!("SELECT {} FROM {} {where_sql}", table.column_list(), table.name);
    let mut stmt = conn.prepare(&sql).map_err(db)?;
    let rows = stmt.query_map(params_from_iter(params), |r| read_row(table, r)).map_err(db)?;
    let fields = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)?;
    let mut objects = fields.iter().map(|f| record::object(kind, f)).collect::<Result<Vec<_>, _>>()?;
    fill_lists(conn, kind, &mut objects)?;
    Ok(objects)
}

fn get(conn: &Connection, kind: ObjectKind, id: &str) -> CwomResult<Option<Object>> {
    Ok(select(conn, kind, "WHERE id = ?1", vec![SqlValue::Text(id.to_string())])?.pop())
}

/// Reads every Ref list of `objects` (all of `kind`), one query per list.
fn fill_lists(conn: &Connection, kind: ObjectKind, objects: &mut [Object]) -> CwomResult<()> {
    if objects.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = objects.iter().map(|o| o.id()).collect();
    let ids = serde_json::Value::from(ids).to_string();
    for &list in RefList::of(kind) {
        let s = list.source();
        let (role, order) = if s.join { ("role", "position") } else { ("NULL", s.target) };
        let sql = format!(
            "SELECT {owner}, {target}, {role} FROM {table} \
             WHERE {owner} IN (SELECT value FROM json_each(?1)) ORDER BY {owner}, {order}",
            owner = s.owner,
            target = s.target,
            table = s.table,
        );
        let mut stmt = conn.prepare(&sql).map_err(db)?;
        let target = list.target_kind();
        let pairs = stmt
            .query_map([&ids], |r| Ok((r.get::<_, String>(0)?, Ref { kind: target, id: r.get(1)?, role: r.get(2)? })))
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        record::attach(objects, list, pairs);
    }
    Ok(())
}

fn check(conn: &Connection, check: &Check) -> CwomResult<()> {
    match check {
        Check::Exists { field, target } => {
            let sql = format!("SELECT 1 FROM {} WHERE id = ?1", record::table(target.kind).name);
            if !conn.prepare(&sql).map_err(db)?.exists([&target.id]).map_err(db)? {
                return Err(CwomError::missing_ref(field, target));
            }
        }
        Check::Matches { kind, id, column, value, message } => {
            let sql = format!("SELECT {column} FROM {} WHERE id = ?1", record::table(*kind).name);
            let stored: Option<Option<String>> =
                conn.prepare(&sql).map_err(db)?.query_row([id], |r| r.get(0)).optional().map_err(db)?;
            if stored.flatten().as_deref() != Some(value.as_str()) {
                return Err(CwomError::InvalidRef(message.clone()));
            }
        }
    }
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

/// Runs a plan's checks, then its writes, on an open transaction.
fn exec(conn: &Connection, plan: &WritePlan) -> CwomResult<()> {
    for c in &plan.checks {
        check(conn, c)?;
    }
    for op in &plan.ops {
        match op {
            Op::Insert { table, row, on_duplicate } => {
                let columns: Vec<&str> = row.iter().map(|(c, _)| *c).collect();
                let holders: Vec<String> = (1..=row.len()).map(|i| format!("?{i}")).collect();
                let sql = format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), holders.join(", "));
                let result =
                    conn.prepare(&sql).map_err(db)?.execute(params_from_iter(row.iter().map(|(_, v)| param(v))));
                match (result, on_duplicate) {
                    (Ok(_), _) => {}
                    (Err(e), Some(message)) if is_unique_violation(&e) => {
                        return Err(CwomError::AlreadyExists(message.clone()))
                    }
                    (Err(e), _) => return Err(db(e)),
                }
            }
            Op::Update { table, id, row } => {
                let sets: Vec<(&str, &Val)> = row.iter().filter(|(c, _)| *c != "id").map(|(c, v)| (*c, v)).collect();
                let assignments: Vec<String> =
                    sets.iter().enumerate().map(|(i, (c, _))| format!("{c} = ?{}", i + 2)).collect();
                let sql = format!("UPDATE {table} SET {} WHERE id = ?1", assignments.join(", "));
                let params = std::iter::once(SqlValue::Text(id.clone())).chain(sets.iter().map(|(_, v)| param(v)));
                let n = conn.prepare(&sql).map_err(db)?.execute(params_from_iter(params)).map_err(db)?;
                if n != 1 {
                    return Err(StoreError::internal(format!("update of {table} {id} touched {n} rows")).into());
                }
            }
            Op::ReplaceList { list, owner, refs } => {
                let s = list.source();
                conn.prepare(&format!("DELETE FROM {} WHERE {} = ?1", s.table, s.owner))
                    .map_err(db)?
                    .execute([owner])
                    .map_err(db)?;
                let mut insert = conn
                    .prepare(&format!(
                        "INSERT INTO {} ({}, {}, role, position) VALUES (?1, ?2, ?3, ?4)",
                        s.table, s.owner, s.target
                    ))
                    .map_err(db)?;
                for (position, r) in refs.iter().enumerate() {
                    insert.execute(rusqlite::params![owner, r.id, r.role, position as i64]).map_err(db)?;
                }
            }
            Op::Append { list, owner, target } => {
                // The IMMEDIATE transaction already holds the write lock: no row lock needed.
                let s = list.source();
                conn.prepare(&format!(
                    "INSERT INTO {t} ({o}, {g}, role, position) \
                     SELECT ?1, ?2, ?3, coalesce(max(position) + 1, 0) FROM {t} WHERE {o} = ?1 \
                     ON CONFLICT DO NOTHING",
                    t = s.table,
                    o = s.owner,
                    g = s.target,
                ))
                .map_err(db)?
                .execute(rusqlite::params![owner, target.id, target.role])
                .map_err(db)?;
            }
        }
    }
    Ok(())
}

fn write_tx(conn: &mut Connection) -> CwomResult<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)
}

fn stored(conn: &Connection, kind: ObjectKind, id: &str) -> CwomResult<Object> {
    get(conn, kind, id)?.ok_or_else(|| StoreError::internal(format!("{kind} {id} vanished after its write")).into())
}

#[async_trait::async_trait]
impl CwomStore for SqliteCwom {
    async fn create(&self, object: Object) -> CwomResult<Object> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            exec(&tx, &record::create_plan(&object))?;
            let out = stored(&tx, object.kind(), object.id())?;
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }

    async fn get(&self, kind: ObjectKind, id: &str) -> CwomResult<Option<Object>> {
        let id = id.to_string();
        self.run(move |conn| {
            // One read transaction: the row and its lists are one snapshot.
            let tx = conn.transaction().map_err(db)?;
            let out = get(&tx, kind, &id)?;
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }

    async fn exists(&self, kind: ObjectKind, id: &str) -> CwomResult<bool> {
        let id = id.to_string();
        self.run(move |conn| {
            let sql = format!("SELECT 1 FROM {} WHERE id = ?1", record::table(kind).name);
            conn.prepare(&sql).map_err(db)?.exists([&id]).map_err(db)
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> CwomResult<Vec<Object>> {
        let query = query.clone();
        self.run(move |conn| {
            let filters = record::filter_columns(&query.filter);
            let mut conditions: Vec<String> =
                filters.iter().enumerate().map(|(i, (c, _))| format!("{c} = ?{}", i + 1)).collect();
            if conditions.is_empty() {
                conditions.push("1 = 1".into());
            }
            let n = filters.len();
            let where_sql =
                format!("WHERE {} ORDER BY id DESC LIMIT ?{} OFFSET ?{}", conditions.join(" AND "), n + 1, n + 2);
            let mut params: Vec<SqlValue> = filters.iter().map(|(_, v)| param(v)).collect();
            params.push(SqlValue::Integer(query.limit as i64));
            params.push(SqlValue::Integer(query.offset as i64));
            let tx = conn.transaction().map_err(db)?;
            let out = select(&tx, query.filter.kind(), &where_sql, params)?;
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }

    async fn update(&self, kind: ObjectKind, id: &str, change: Change) -> CwomResult<Object> {
        let id = id.to_string();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let mut object = get(&tx, kind, &id)?.ok_or(CwomError::NotFound { kind, id: id.clone() })?;
            change(&mut object)?;
            exec(&tx, &record::update_plan(&object))?;
            let out = stored(&tx, kind, &id)?;
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }
}
