//! Periodic maintenance on PostgreSQL runs on one daemon at a time, under a lease-based
//! leadership that survives its holder's death (issue 23, point 4): the row `maintenance`
//! of the table `leaders (name, holder, expires_at)` names a live daemon
//! (`<hostname>:<pid>:<8 hex>`) with a lease in the future; when that daemon is killed with
//! SIGKILL another live one takes it over within seconds, twice in a row; and after a
//! takeover the lease rescuer still gives a killed daemon's task back.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::{DaemonProcess, PgDb, Spawn};
use serde_json::json;

/// The leadership lease is 5 s, renewed every second: a takeover within 6 s, with room.
const TAKEOVER: Duration = Duration::from_secs(10);

fn serve(db: &PgDb) -> DaemonProcess {
    Spawn::new()
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        // A short task lease, for the rescue after the takeover.
        .env("JCT_LEASE_SECONDS", "2")
        .start()
}

/// The pid in a holder `<hostname>:<pid>:<8 hex chars>`, or why the holder is malformed.
fn holder_pid(holder: &str) -> Result<u32, String> {
    let mut parts = holder.rsplitn(3, ':');
    let (suffix, pid, host) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse().ok()), suffix) {
        (Some(host), Some(pid), Some(suffix))
            if !host.is_empty() && suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(pid)
        }
        _ => Err(format!("holder {holder:?} is not <hostname>:<pid>:<8 hex chars>")),
    }
}

/// The pid holding an unexpired `maintenance` leadership, or what the table says instead.
async fn leader(client: &tokio_postgres::Client) -> Result<u32, String> {
    let row = client
        .query_opt("SELECT holder, expires_at > now() FROM leaders WHERE name = 'maintenance'", &[])
        .await
        .map_err(|e| {
            format!(
                "reading the `leaders` table failed: {}",
                e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())
            )
        })?;
    let Some(row) = row else { return Err("the `leaders` table has no row named 'maintenance'".into()) };
    let (holder, live): (String, bool) = (row.get(0), row.get(1));
    let pid = holder_pid(&holder)?;
    if live {
        Ok(pid)
    } else {
        Err(format!("the 'maintenance' row names {holder:?} but its expires_at is past"))
    }
}

/// Waits up to [`TAKEOVER`] for a `maintenance` leader among `daemons` (other than
/// `not`), and returns its index.
async fn wait_leader(client: &tokio_postgres::Client, daemons: &[DaemonProcess], not: Option<u32>) -> usize {
    let start = Instant::now();
    loop {
        let last = match leader(client).await {
            Ok(pid) if Some(pid) != not => match daemons.iter().position(|d| d.pid() == pid) {
                Some(i) => {
                    eprintln!("daemon {i} (pid {pid}) leads maintenance after {:?}", start.elapsed());
                    return i;
                }
                None => format!("the 'maintenance' leader is pid {pid}, none of the live daemons"),
            },
            Ok(pid) => format!("the 'maintenance' row still names the killed daemon (pid {pid})"),
            Err(e) => e,
        };
        assert!(
            start.elapsed() < TAKEOVER,
            "no live daemon leads maintenance within {TAKEOVER:?} (expected a `leaders` row \
             name = 'maintenance' naming a live daemon, expires_at in the future): {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_the_rescuer_still_runs() {
    let db = PgDb::new().await;
    let client = db.client().await;
    let mut daemons: Vec<DaemonProcess> = (0..3).map(|_| serve(&db)).collect();

    // Two takeovers: each time the leader is killed, another live daemon takes over, and a
    // fresh daemon takes the dead one's place.
    let mut lead = wait_leader(&client, &daemons, None).await;
    for round in 0..2 {
        let killed = daemons[lead].pid();
        daemons[lead].signal("KILL");
        daemons[lead].wait_exit(Duration::from_secs(10));
        let dead = daemons.remove(lead);
        lead = wait_leader(&client, &daemons, Some(killed)).await;
        eprintln!("round {round}: pid {killed} killed, pid {} leads", daemons[lead].pid());
        drop(dead);
        daemons.push(serve(&db));
    }

    // After the takeovers the rescuer (a maintenance service) still gives back the task of
    // a daemon killed while running it.
    let base = daemons[0].url("");
    let id = support::enqueue(&base, json!({ "type": "sleep", "payload": { "ms": 60000 } })).await;
    let running = support::wait_status(&base, &id, "running", Duration::from_secs(10)).await;
    let holder = running["locked_by"].as_str().expect("a running task names its holder").to_string();
    let pid = holder_pid(&holder).unwrap();
    let at = daemons.iter().position(|d| d.pid() == pid).unwrap_or_else(|| panic!("{holder} is none of the daemons"));
    daemons[at].signal("KILL");
    daemons[at].wait_exit(Duration::from_secs(10));
    let dead = daemons.remove(at);
    let base = daemons[0].url("");
    // Rescued: queued again, or already running its second attempt on another daemon.
    let what = "the killed daemon's task to be queued again or running attempt 2 elsewhere";
    support::wait_for(what, Duration::from_secs(15), || async {
        let t = support::get_task(&base, &id).await;
        let elsewhere = t["locked_by"] != holder.as_str();
        let back = match t["status"].as_str() {
            Some("queued") => true,
            Some("running") => t["attempts"] == 2 && elsewhere,
            _ => false,
        };
        back.then_some(t)
    })
    .await;
    drop(dead);
    // And a leader is still there.
    wait_leader(&client, &daemons, None).await;
}
