//! The one fence of an attempt: [`LeaseToken`], the holder that claimed it and the attempt
//! number, for local and remote attempts alike, and [`Held`], an attempt named by its task
//! and its token. Every write that belongs to an attempt (renew, finish, release, spawn)
//! carries one, and the store applies it only while the task is `running` under exactly
//! that holder and attempt.

use std::fmt;
use std::str::FromStr;

use crate::task::{TaskId, WorkerId};

/// The fence of one claimed attempt, handed to the worker as an opaque `lease_token`:
/// the holder and the attempt number. Every write for the attempt must carry it, and the
/// store applies a write only while the task is `running` under exactly this pair, so a
/// token from before a rescue, a cancel or a later claim is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    pub worker: WorkerId,
    pub attempt: i32,
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.attempt, self.worker)
    }
}

impl FromStr for LeaseToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (attempt, worker) = s.split_once('.').ok_or("lease_token: not a lease token")?;
        let attempt = attempt.parse().map_err(|_| "lease_token: not a lease token")?;
        if worker.is_empty() {
            return Err("lease_token: not a lease token".into());
        }
        Ok(LeaseToken { worker: WorkerId(worker.to_string()), attempt })
    }
}

/// One attempt: its task and the token that fences it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub id: TaskId,
    pub token: LeaseToken,
}

impl Held {
    pub fn new(id: TaskId, worker: WorkerId, attempt: i32) -> Self {
        Held { id, token: LeaseToken { worker, attempt } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_tokens_round_trip_and_refuse_garbage() {
        let t = LeaseToken { worker: WorkerId("w-1.x".into()), attempt: 3 };
        assert_eq!(t.to_string().parse::<LeaseToken>().unwrap(), t);
        for bad in ["", "3", "x.w", "3.", ".w"] {
            assert!(bad.parse::<LeaseToken>().is_err(), "{bad:?}");
        }
    }
}
