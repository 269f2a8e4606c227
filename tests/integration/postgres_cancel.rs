//! A cancel's update and its notification commit together: a client never hears an error
//! about a cancel that took effect.
//!
//! The database is made to refuse the notification (the daemon's role may not call
//! `pg_notify`), so the cancel of a running task fails after its UPDATE ran. The client
//! gets an error, and then the task must still be running, not cancelled behind its back.

use std::time::Duration;

use crate::support::PgDb;
use devops_control_tower::store::{AttemptStore, ClaimParams, IntakeStore, OperatorStore, PgStore, TaskReads};
use devops_control_tower::task::{NewTask, TaskStatus, WorkerId};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_cannot_notify_changes_nothing() {
    let db = PgDb::new().await;
    let role = format!("jct_cancel_{}", uuid::Uuid::new_v4().simple());
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}; \
             REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC;"
        ))
        .await
        .unwrap();
    // The task is enqueued and claimed by a role that may notify.
    let owner = PgStore::connect(&db.url, 4).await.unwrap();
    let id = owner.enqueue(NewTask::new("echo", json!({}))).await.unwrap().id;
    let claim = ClaimParams {
        worker: WorkerId("w".into()),
        limit: 1,
        lease: Duration::from_secs(60),
        types: vec!["echo".into()],
        queues: None,
    };
    assert_eq!(owner.claim(&claim).await.unwrap().len(), 1);

    let limited_url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(limited_url, db.url, "the test URL names its user: {}", db.url);
    let limited = PgStore::connect_no_migrate(&limited_url, 4).unwrap();
    let result = limited.cancel(id).await;
    let after = owner.get(id).await.unwrap().unwrap();
    assert!(result.is_err(), "the notification was refused, so the cancel must fail: {result:?}");
    assert_eq!(after.status, TaskStatus::Running, "a cancel that answered an error took no effect");

    // With the right restored, the same cancel goes through whole.
    admin.batch_execute(&format!("GRANT EXECUTE ON FUNCTION pg_notify(text, text) TO {role}")).await.unwrap();
    let cancelled = limited.cancel(id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    drop(limited);
    drop(owner);
    let _ = admin.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}")).await;
}
