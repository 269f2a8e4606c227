//! CWOM on PostgreSQL: the `cwom_mapping` plans executed with tokio-postgres on the
//! driver's durable pool.
//!
//! Writes are READ COMMITTED transactions; a change to an Issue or Run, and an append to
//! an Issue's packet list, lock the owner's row `FOR NO KEY UPDATE`: it serialises them
//! with each other but not with the foreign-key checks of concurrent inserts that point at
//! the row (those take KEY SHARE), so creating Runs and Artifacts never waits on a patch.
//! Reads are one REPEATABLE READ snapshot, so an object and its lists agree.

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::{pg_err, PgStore};
use crate::cwom::error::{CwomError, CwomResult};
use crate::cwom::requests::ListQuery;
use crate::cwom::types::{Object, ObjectKind, Ref};
use crate::store::cwom::{Change, CwomStore};
use crate::store::cwom_mapping::{self as record, Check, ColType, Fields, Op, RefList, Table, Val, WritePlan};
use crate::store::error::StoreError;

pub(crate) struct PgCwom {
    store: PgStore,
}

impl PgCwom {
    pub(crate) fn new(store: PgStore) -> Self {
        PgCwom { store }
    }
}

fn db(e: tokio_postgres::Error) -> CwomError {
    pg_err(e).into()
}

type Param<'a> = &'a (dyn ToSql + Sync);

fn param(v: &Val) -> Param<'_> {
    match v {
        Val::Text(s) => s,
        Val::Int(n) => n,
        Val::Json(j) => j,
        Val::Time(t) => t,
    }
}

fn read_row(table: &'static Table, row: &tokio_postgres::Row) -> CwomResult<Fields> {
    let bad = |e: tokio_postgres::Error| StoreError::internal(format!("unreadable {} row: {e}", table.name));
    let mut vals = Vec::with_capacity(table.columns.len());
    for (i, (_, ty)) in table.columns.iter().enumerate() {
        vals.push(match ty {
            ColType::Text => Val::Text(row.try_get(i).map_err(bad)?),
            ColType::Int => Val::Int(row.try_get(i).map_err(bad)?),
            ColType::Json => Val::Json(row.try_get(i).map_err(bad)?),
            ColType::Time => Val::Time(row.try_get(i).map_err(bad)?),
        });
    }
    Ok(Fields::new(table, vals))
}

/// Objects of `kind` matching `where_sql` (which may end in a locking clause), with their
/// Ref lists.
async fn select(
    tx: &Transaction<'_>,
    kind: ObjectKind,
    where_sql: &str,
    params: &[Param<'_>],
) -> CwomResult<Vec<Object>> {
    let table = record::table(kind);
    let sql = format!("SELECT {} FROM {} {where_sql}", table.column_list(), table.name);
    let stmt = tx.prepare_cached(&sql).await.map_err(db)?;
    let rows = tx.query(&stmt, params).await.map_err(db)?;
    let mut objects = Vec::with_capacity(rows.len());
    for row in &rows {
        objects.push(record::object(kind, &read_row(table, row)?)?);
    }
    fill_lists(tx, kind, &mut objects).await?;
    Ok(objects)
}

async fn get(tx: &Transaction<'_>, kind: ObjectKind, id: &str, lock: bool) -> CwomResult<Option<Object>> {
    let where_sql = if lock { "WHERE id = $1 FOR NO KEY UPDATE" } else { "WHERE id = $1" };
    Ok(select(tx, kind, where_sql, &[&id]).await?.pop())
}

/// Reads every Ref list of `objects` (all of `kind`), one query per list.
async fn fill_lists(tx: &Transaction<'_>, kind: ObjectKind, objects: &mut [Object]) -> CwomResult<()> {
    if objects.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = objects.iter().map(|o| o.id().to_string()).collect();
    for &list in RefList::of(kind) {
        let s = list.source();
        let (role, order) = if s.join { ("role", "position") } else { ("NULL::text", s.target) };
        let sql = format!(
            "SELECT {owner}, {target}, {role} FROM {table} WHERE {owner} = ANY($1) ORDER BY {owner}, {order}",
            owner = s.owner,
            target = s.target,
            table = s.table,
        );
        let stmt = tx.prepare_cached(&sql).await.map_err(db)?;
        let target = list.target_kind();
        let pairs = tx
            .query(&stmt, &[&ids])
            .await
            .map_err(db)?
            .iter()
            .map(|r| Ok((r.try_get(0)?, Ref { kind: target, id: r.try_get(1)?, role: r.try_get(2)? })))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(db)?;
        record::attach(objects, list, pairs);
    }
    Ok(())
}

async fn check(tx: &Transaction<'_>, check: &Check) -> CwomResult<()> {
    match check {
        Check::Exists { field, target } => {
            let sql = format!("SELECT 1 FROM {} WHERE id = $1", record::table(target.kind).name);
            let stmt = tx.prepare_cached(&sql).await.map_err(db)?;
            if tx.query_opt(&stmt, &[&target.id]).await.map_err(db)?.is_none() {
                return Err(CwomError::missing_ref(field, target));
            }
        }
        Check::Matches { kind, id, column, value, message } => {
            let sql = format!("SELECT {column} FROM {} WHERE id = $1", record::table(*kind).name);
            let stmt = tx.prepare_cached(&sql).await.map_err(db)?;
            let row = tx.query_opt(&stmt, &[id]).await.map_err(db)?;
            let stored: Option<String> = row.map(|r| r.try_get(0)).transpose().map_err(db)?;
            if stored.as_deref() != Some(value.as_str()) {
                return Err(CwomError::InvalidRef(message.clone()));
            }
        }
    }
    Ok(())
}

/// Runs a plan's checks, then its writes, on an open transaction.
async fn exec(tx: &Transaction<'_>, plan: &WritePlan) -> CwomResult<()> {
    for c in &plan.checks {
        check(tx, c).await?;
    }
    for op in &plan.ops {
        match op {
            Op::Insert { table, row, on_duplicate } => {
                let columns: Vec<&str> = row.iter().map(|(c, _)| *c).collect();
                let holders: Vec<String> = (1..=row.len()).map(|i| format!("${i}")).collect();
                let sql = format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), holders.join(", "));
                let stmt = tx.prepare_cached(&sql).await.map_err(db)?;
                let params: Vec<Param> = row.iter().map(|(_, v)| param(v)).collect();
                match (tx.execute(&stmt, &params).await, on_duplicate) {
                    (Ok(_), _) => {}
                    (Err(e), Some(message)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        return Err(CwomError::AlreadyExists(message.clone()))
                    }
                    (Err(e), _) => return Err(db(e)),
                }
            }
            Op::Update { table, id, row } => {
                // `id` is never rewritten: the update takes no key lock (see the module doc).
                let sets: Vec<(&str, &Val)> = row.iter().filter(|(c, _)| *c != "id").map(|(c, v)| (*c, v)).collect();
                let assignments: Vec<String> =
                    sets.iter().enumerate().map(|(i, (c, _))| format!("{c} = ${}", i + 2)).collect();
                let sql = format!("UPDATE {table} SET {} WHERE id = $1", assignments.join(", "));
                let stmt = tx.prepare_cached(&sql).await.map_err(db)?;
                let mut params: Vec<Param> = vec![id];
                params.extend(sets.iter().map(|(_, v)| param(v)));
                let n = tx.execute(&stmt, &params).await.map_err(db)?;
                if n != 1 {
                    return Err(StoreError::internal(format!("update of {table} {id} touched {n} rows")).into());
                }
            }
            Op::ReplaceList { list, owner, refs } => {
                let s = list.source();
                let delete = tx.prepare_cached(&format!("DELETE FROM {} WHERE {} = $1", s.table, s.owner)).await;
                tx.execute(&delete.map_err(db)?, &[owner]).await.map_err(db)?;
                if !refs.is_empty() {
                    let targets: Vec<&str> = refs.iter().map(|r| r.id.as_str()).collect();
                    let roles: Vec<Option<&str>> = refs.iter().map(|r| r.role.as_deref()).collect();
                    let insert = tx
                        .prepare_cached(&format!(
                            "INSERT INTO {} ({}, {}, role, position) \
                             SELECT $1, u.target, u.role, (u.n - 1)::int \
                             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(target, role, n)",
                            s.table, s.owner, s.target
                        ))
                        .await
                        .map_err(db)?;
                    tx.execute(&insert, &[owner, &targets, &roles]).await.map_err(db)?;
                }
            }
            Op::Append { list, owner, target } => {
                let s = list.source();
                let lock =
                    format!("SELECT 1 FROM {} WHERE id = $1 FOR NO KEY UPDATE", record::table(list.owner_kind()).name);
                let lock = tx.prepare_cached(&lock).await.map_err(db)?;
                tx.execute(&lock, &[owner]).await.map_err(db)?;
                let append = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {t} ({o}, {g}, role, position) \
                         SELECT $1::text, $2::text, $3::text, coalesce(max(position) + 1, 0) FROM {t} WHERE {o} = $1 \
                         ON CONFLICT DO NOTHING",
                        t = s.table,
                        o = s.owner,
                        g = s.target,
                    ))
                    .await
                    .map_err(db)?;
                tx.execute(&append, &[owner, &target.id, &target.role]).await.map_err(db)?;
            }
        }
    }
    Ok(())
}

/// A read-only transaction on one snapshot, so an object and its lists agree.
async fn snapshot(client: &mut deadpool_postgres::Object) -> CwomResult<Transaction<'_>> {
    client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await.map_err(db)
}

async fn stored(tx: &Transaction<'_>, kind: ObjectKind, id: &str) -> CwomResult<Object> {
    get(tx, kind, id, false)
        .await?
        .ok_or_else(|| StoreError::internal(format!("{kind} {id} vanished after its write")).into())
}

#[async_trait::async_trait]
impl CwomStore for PgCwom {
    async fn create(&self, object: Object) -> CwomResult<Object> {
        let mut client = self.store.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        exec(&tx, &record::create_plan(&object)).await?;
        let out = stored(&tx, object.kind(), object.id()).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn get(&self, kind: ObjectKind, id: &str) -> CwomResult<Option<Object>> {
        let mut client = self.store.client().await?;
        let tx = snapshot(&mut client).await?;
        let out = get(&tx, kind, id, false).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn exists(&self, kind: ObjectKind, id: &str) -> CwomResult<bool> {
        let client = self.store.client().await?;
        let sql = format!("SELECT 1 FROM {} WHERE id = $1", record::table(kind).name);
        let stmt = client.prepare_cached(&sql).await.map_err(db)?;
        Ok(client.query_opt(&stmt, &[&id]).await.map_err(db)?.is_some())
    }

    async fn list(&self, query: &ListQuery) -> CwomResult<Vec<Object>> {
        let filters = record::filter_columns(&query.filter);
        let mut conditions: Vec<String> =
            filters.iter().enumerate().map(|(i, (c, _))| format!("{c} = ${}", i + 1)).collect();
        if conditions.is_empty() {
            conditions.push("true".into());
        }
        let n = filters.len();
        let where_sql =
            format!("WHERE {} ORDER BY id DESC LIMIT ${} OFFSET ${}", conditions.join(" AND "), n + 1, n + 2);
        let (limit, offset) = (query.limit as i64, query.offset as i64);
        let mut params: Vec<Param> = filters.iter().map(|(_, v)| param(v)).collect();
        params.push(&limit);
        params.push(&offset);
        let mut client = self.store.client().await?;
        let tx = snapshot(&mut client).await?;
        let out = select(&tx, query.filter.kind(), &where_sql, &params).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn update(&self, kind: ObjectKind, id: &str, change: Change) -> CwomResult<Object> {
        let mut client = self.store.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut object = get(&tx, kind, id, true).await?.ok_or(CwomError::NotFound { kind, id: id.to_string() })?;
        change(&mut object)?;
        exec(&tx, &record::update_plan(&object)).await?;
        let out = stored(&tx, kind, id).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }
}
