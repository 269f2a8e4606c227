//! Approvals as data: the built-in step type [`TYPE`], its payload ([`ApprovalPayload`]:
//! `prompt`, `expires_after_s`), a person's [`Decision`], the body of
//! `POST /tasks/{id}/decision` ([`DecisionRequest`]) and what the step's result records
//! ([`DecisionRecord`]: decision, comment, by, at).
//!
//! An approval step is a row of `tasks` like any step, but no handler runs it: the stores'
//! release (migration `V13__approvals.sql`) leaves it `waiting` with `pending_parents` 0
//! when its parents are done, and it ends by a decision
//! ([`crate::store::WorkflowStore::decide`]) or its expiry
//! ([`crate::store::WorkflowStore::expire_approvals`]), each one fenced UPDATE whose
//! end fires the release of its dependants like any other end.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The step type of an approval.
pub const TYPE: &str = "approval";

/// `last_error` of an approval that expired before a decision (DESIGN.md).
pub const EXPIRED: &str = "approval_expired";

/// The start of `last_error` of a rejected approval (who and why follow, when given).
pub const REJECTED: &str = "approval_rejected";

/// Limits on an approval's texts.
pub mod limits {
    pub const PROMPT_MAX: usize = 4096;
    pub const COMMENT_MAX: usize = 4096;
    pub const BY_MAX: usize = 256;
    /// About 68 years: any longer would be no expiry, and both stores' time arithmetic stays
    /// in range.
    pub const EXPIRES_AFTER_S_MAX: u64 = i32::MAX as u64;
}

/// An approval step's payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPayload {
    /// What the person deciding is asked.
    #[schemars(length(min = 1, max = limits::PROMPT_MAX))]
    pub prompt: String,
    /// Seconds it may wait for a decision once its parents are done; then it fails with
    /// `last_error` `approval_expired`. No expiry when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = limits::EXPIRES_AFTER_S_MAX))]
    pub expires_after_s: Option<u64>,
}

impl ApprovalPayload {
    /// Reads and checks an approval step's payload; the error starts with the field it
    /// concerns (`payload.prompt`, `payload.expires_after_s`, `payload`).
    pub fn parse(payload: &Value) -> Result<ApprovalPayload, String> {
        if !payload.is_object() {
            return Err("payload: an approval step's payload must be an object with \"prompt\"".into());
        }
        let parsed: ApprovalPayload = crate::fields::from_value(payload.clone()).map_err(|e| match e {
            crate::fields::FieldError::Data { field: Some(f), reason } => format!("payload.{f}: {reason}"),
            other => format!("payload: {other}"),
        })?;
        let chars = parsed.prompt.chars().count();
        if chars == 0 || chars > limits::PROMPT_MAX {
            return Err(format!("payload.prompt: must be 1 to {} characters", limits::PROMPT_MAX));
        }
        if let Some(s) = parsed.expires_after_s {
            if s == 0 || s > limits::EXPIRES_AFTER_S_MAX {
                return Err(format!("payload.expires_after_s: must be 1 to {} seconds", limits::EXPIRES_AFTER_S_MAX));
            }
        }
        Ok(parsed)
    }
}

/// A person's decision on an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The step completes with the decision as its result; its dependants run.
    Approve,
    /// The step fails; its `cancel` dependants are cancelled, its `run` ones run.
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// The body of `POST /tasks/{id}/decision` (and of the MCP tool and the dashboard's buttons).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
    /// Why, in the decider's words.
    #[serde(default)]
    #[schemars(length(max = limits::COMMENT_MAX))]
    pub comment: Option<String>,
    /// Who decided (a name or an id; the API does not check it).
    #[serde(default)]
    #[schemars(length(min = 1, max = limits::BY_MAX))]
    pub by: Option<String>,
}

impl DecisionRequest {
    /// Checks the texts' lengths and that both stores can hold them, and stamps the
    /// decision with `at` (cut to the microsecond both stores keep). The error names the field.
    pub fn checked(self, at: DateTime<Utc>) -> Result<DecisionRecord, crate::task::InvalidField> {
        use crate::task::InvalidField;
        if let Some(c) = &self.comment {
            if c.chars().count() > limits::COMMENT_MAX {
                return Err(InvalidField::new(
                    "comment",
                    format!("must be at most {} characters", limits::COMMENT_MAX),
                ));
            }
            crate::storable::check_text("comment", c).map_err(InvalidField::from)?;
        }
        if let Some(b) = &self.by {
            if b.is_empty() || b.chars().count() > limits::BY_MAX {
                return Err(InvalidField::new("by", format!("must be 1 to {} characters", limits::BY_MAX)));
            }
            crate::storable::check_text("by", b).map_err(InvalidField::from)?;
        }
        let at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
        Ok(DecisionRecord { decision: self.decision, comment: self.comment, by: self.by, at })
    }
}

/// A decision as the approval step's `result` records it (also on a rejected one), its
/// trace folder's `output.json` and, for a linked step, its CWOM Run's meta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecisionRecord {
    pub decision: Decision,
    pub comment: Option<String>,
    pub by: Option<String>,
    /// When the daemon took the decision.
    pub at: DateTime<Utc>,
}

impl DecisionRecord {
    /// The step's `result`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a decision record is plain JSON")
    }

    /// The step's `last_error` when rejected: [`REJECTED`], then who and why when given.
    pub fn rejection(&self) -> String {
        let mut s = REJECTED.to_string();
        if let Some(by) = &self.by {
            s.push_str(" by ");
            s.push_str(by);
        }
        if let Some(c) = self.comment.as_deref().filter(|c| !c.is_empty()) {
            s.push_str(": ");
            s.push_str(c);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_errors_name_the_field() {
        assert!(ApprovalPayload::parse(&json!({"prompt": "ship?"})).is_ok());
        let ok = ApprovalPayload::parse(&json!({"prompt": "ship?", "expires_after_s": 60})).unwrap();
        assert_eq!(ok.expires_after_s, Some(60));
        for (payload, field) in [
            (json!({}), "payload"),
            (json!({"prompt": 3}), "payload.prompt"),
            (json!({"prompt": ""}), "payload.prompt"),
            (json!({"prompt": "x", "expires_after_s": 0}), "payload.expires_after_s"),
            (json!({"prompt": "x", "expires_after_s": -1}), "payload.expires_after_s"),
            (json!({"prompt": "x", "expires_after_s": 1.5}), "payload.expires_after_s"),
            (json!({"prompt": "x", "expires_after_s": "1"}), "payload.expires_after_s"),
            (json!({"prompt": "x", "extra": 1}), "payload.extra"),
            (json!([1]), "payload"),
        ] {
            let e = ApprovalPayload::parse(&payload).unwrap_err();
            assert!(e.starts_with(&format!("{field}:")), "{payload}: {e}");
        }
    }

    #[test]
    fn rejection_says_who_and_why() {
        let at = Utc::now();
        let r = DecisionRecord {
            decision: Decision::Reject,
            comment: Some("too risky".into()),
            by: Some("ana".into()),
            at,
        };
        assert_eq!(r.rejection(), "approval_rejected by ana: too risky");
        let r = DecisionRecord { decision: Decision::Reject, comment: None, by: None, at };
        assert_eq!(r.rejection(), "approval_rejected");
    }
}
