//! Schedules as data: a cron pattern in an IANA time zone, the task or workflow each tick
//! starts ([`Target`]), and the policies for missed ticks ([`CatchUp`]) and for a previous fire still going
//! ([`Overlap`]).
//!
//! Parsing is `croner`'s (5 fields, 6 with seconds first, `@hourly`, `@daily`, `@weekly`,
//! `@monthly`); time zones are `chrono-tz`'s. The DST rules are applied here, on top of a
//! search over local wall times ([`Timing::next_after`]):
//! - a tick whose local time does not exist (the spring gap) fires once, at the first
//!   instant after the gap: several ticks inside one gap are one fire;
//! - an ambiguous local time (the autumn repeat) fires once, at its first occurrence: the
//!   repeated wall times do not fire again.
//!
//! [`ScheduleSpec::from_body`] is the one validation of a schedule (the API, the schedules
//! file and the MCP tools all reach it); its errors name the field.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration as TimeDelta, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::task::{InvalidField, NewTask, TaskId};
use crate::workflow::{NewStep, NewWorkflow, OnParentFailure, StepKey, WorkflowId};

/// Limits on what a schedule may carry.
pub mod limits {
    pub const NAME_MAX: usize = 128;
    /// The longest catch-up window: a year.
    pub const CATCH_UP_WINDOW_MAX_S: u32 = 366 * 24 * 3600;
    /// How many fire times `upcoming` lists.
    pub const UPCOMING: usize = 5;
    /// The most missed ticks one catch-up looks at (an every-second schedule with the
    /// default window of an hour has 3,600).
    pub const CATCH_UP_MAX_TICKS: usize = 100_000;
}

/// Defaults of the optional fields.
pub mod defaults {
    pub const TIMEZONE: &str = "UTC";
    pub const CATCH_UP_WINDOW_S: u32 = 3600;
}

/// What happens to ticks missed while no daemon ran (or the schedule's daemon was late by
/// more than [`crate::tunables::SCHEDULE_LATE_GRACE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed ticks fire nothing.
    Skip,
    /// The last missed tick inside the window fires once.
    #[default]
    Latest,
    /// Every missed tick inside the window fires, each once, oldest first.
    All,
}

/// What a tick does while a previous fire of its schedule is still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Fires anyway.
    Allow,
    /// Fires nothing (the tick is recorded as skipped).
    #[default]
    Skip,
    /// Keeps at most one tick waiting; it fires when the previous fires are over.
    BufferOne,
    /// Cancels the previous fires, then fires.
    CancelOther,
}

macro_rules! str_enum {
    ($ty:ident { $($variant:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $ty::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                    format!("{s:?} is not one of {}", all.join(", "))
                })
            }
        }
    };
}

str_enum!(CatchUp { Skip => "skip", Latest => "latest", All => "all" });
str_enum!(Overlap { Allow => "allow", Skip => "skip", BufferOne => "buffer_one", CancelOther => "cancel_other" });

/// Why a fire happened: a tick of the cron pattern, or an operator's trigger. Each has its
/// own key space: a trigger never uses up a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FireKind {
    Tick,
    Trigger,
}

str_enum!(FireKind { Tick => "tick", Trigger => "trigger" });

/// Who owns a schedule: the API (and MCP, dashboard), or `JCT_SCHEDULES_FILE`, which
/// removes the ones it named before and no longer names, and never touches the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "ScheduleSource")]
pub enum Source {
    #[default]
    Api,
    File,
}

str_enum!(Source { Api => "api", File => "file" });

/// A parsed cron pattern.
#[derive(Debug, Clone)]
pub struct CronSpec {
    text: String,
    cron: croner::Cron,
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronSpec {
    /// 5 fields (minute first), 6 (second first), or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`.
    pub fn parse(text: &str) -> Result<CronSpec, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('@') {
            const SHORT: [&str; 4] = ["@hourly", "@daily", "@weekly", "@monthly"];
            if !SHORT.iter().any(|s| s.eq_ignore_ascii_case(trimmed)) {
                return Err(format!("{trimmed:?}: the shorthands are {}", SHORT.join(", ")));
            }
        } else {
            let fields = trimmed.split_whitespace().count();
            if !(5..=6).contains(&fields) {
                return Err(format!("{trimmed:?} has {fields} fields; expected 5 (minute first) or 6 (second first)"));
            }
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser.parse(trimmed).map_err(|e| format!("{trimmed:?}: {e}"))?;
        Ok(CronSpec { text: trimmed.to_string(), cron })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern in English words, for the dashboard.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The first wall time matching the pattern strictly after `wall`.
    fn next_wall(&self, wall: &NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(wall, false).ok()
    }
}

/// When a schedule fires: its pattern read in its time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub cron: CronSpec,
    pub zone: Tz,
}

/// Parses an IANA time zone name.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| format!("{name:?} is not an IANA time zone (for example \"Europe/Berlin\")"))
}

impl Timing {
    /// The first tick strictly after `after`, with the DST rules of this module applied.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = after.with_timezone(&self.zone).naive_local();
        // Bounded: a wall time of the repeated hour may need up to an hour of every-second
        // wall ticks before one lands after `after`.
        for _ in 0..10_000 {
            let next = self.cron.next_wall(&wall)?;
            let instant = match self.zone.from_local_datetime(&next) {
                LocalResult::Single(t) => t,
                // The first occurrence; the second is never a tick of its own.
                LocalResult::Ambiguous(first, _) => first,
                LocalResult::None => self.after_gap(next)?,
            };
            let instant = instant.with_timezone(&Utc);
            if instant > after {
                return Some(instant);
            }
            wall = next;
        }
        None
    }

    /// The first instant after the gap that swallowed the wall time `missing`: the first
    /// wall minute after it that exists, read at its earliest.
    fn after_gap(&self, missing: NaiveDateTime) -> Option<DateTime<Tz>> {
        let mut probe = missing.with_second(0)?.with_nanosecond(0)?;
        for _ in 0..(48 * 60) {
            probe += TimeDelta::minutes(1);
            match self.zone.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return Some(t),
                LocalResult::None => {}
            }
        }
        None
    }

    /// The next `n` ticks after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(t) => {
                    out.push(t);
                    at = t;
                }
                None => break,
            }
        }
        out
    }

    /// What is due at `now` when every tick up to `cursor` has been dealt with: the ticks to
    /// fire (oldest first) and the last tick at or before `now` (the new cursor), by the
    /// catch-up rules. A tick no later than `grace` ago is on time and fires whatever
    /// the policy; older ones are missed. Never a tick after `now`.
    pub fn due(
        &self,
        cursor: DateTime<Utc>,
        now: DateTime<Utc>,
        catch_up: CatchUp,
        window: std::time::Duration,
        grace: std::time::Duration,
    ) -> Due {
        let window = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
        let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::zero());
        let horizon = match catch_up {
            CatchUp::Skip => grace,
            CatchUp::Latest | CatchUp::All => window.max(grace),
        };
        // Ticks older than the horizon are dropped unseen; `start` is exclusive.
        let start = match now.checked_sub_signed(horizon) {
            Some(h) if h > cursor => h - TimeDelta::microseconds(1),
            _ => cursor,
        };
        let mut ticks = Vec::new();
        let mut at = start;
        while let Some(t) = self.next_after(at) {
            if t > now || ticks.len() >= limits::CATCH_UP_MAX_TICKS {
                break;
            }
            ticks.push(t);
            at = t;
        }
        // The cursor passes every tick up to now, including those dropped unseen.
        let through = ticks.last().copied().or_else(|| (start > cursor).then_some(start)).filter(|t| *t > cursor);
        let on_time = |t: &DateTime<Utc>| now - *t <= grace;
        let fire = match catch_up {
            CatchUp::All => ticks,
            CatchUp::Latest => ticks.last().copied().into_iter().collect(),
            CatchUp::Skip => ticks.into_iter().filter(on_time).collect(),
        };
        Due { fire, through }
    }
}

/// What one look at a schedule found due.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The ticks to fire, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Where the cursor moves once they are dealt with (`None`: it stays).
    pub through: Option<DateTime<Utc>>,
}

/// The task a schedule enqueues: an enqueue body without `run_at` (a fire runs now) and
/// without `idempotency_key` (every fire has its own key, the schedule's and the tick's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ScheduleTask")]
pub struct TaskTemplate {
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwom_issue_id: Option<String>,
    /// Run at most the queue's `key_concurrency` tasks of this key at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

impl TaskTemplate {
    /// The validated task one fire enqueues.
    pub fn new_task(
        &self,
        schedule: &str,
        scheduled_for: DateTime<Utc>,
        trace_id: String,
    ) -> Result<NewTask, InvalidField> {
        let mut task = NewTask::new(self.task_type.clone(), self.payload.clone().unwrap_or_else(|| json!({})));
        if let Some(q) = &self.queue {
            task.queue = q.clone();
        }
        if let Some(p) = self.priority {
            task.priority = p;
        }
        if let Some(m) = self.max_attempts {
            task.max_attempts = m;
        }
        if let Some(t) = self.timeout_seconds {
            task.timeout_seconds = t;
        }
        task.cwom_issue_id = self.cwom_issue_id.clone();
        task.concurrency_key = self.concurrency_key.clone();
        task.trace_id = Some(trace_id);
        task.schedule_name = Some(schedule.to_string());
        task.scheduled_for = Some(scheduled_for);
        task.checked()
    }
}

/// What each fire of a schedule starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Task(TaskTemplate),
    Workflow(WorkflowTemplate),
}

impl Target {
    /// The body field it comes from (`task` or `workflow`, also the stores' `target`
    /// column) and its template as stored.
    pub fn stored(&self) -> (&'static str, Value) {
        match self {
            Target::Task(t) => ("task", serde_json::to_value(t).unwrap_or_default()),
            Target::Workflow(w) => ("workflow", serde_json::to_value(w).unwrap_or_default()),
        }
    }

    /// The validated work one fire starts: every task and step carries `schedule_name`
    /// and `scheduled_for`.
    pub fn fire(&self, schedule: &str, scheduled_for: DateTime<Utc>, trace_id: String) -> Result<Work, InvalidField> {
        match self {
            Target::Task(t) => Ok(Work::Task(t.new_task(schedule, scheduled_for, trace_id)?)),
            Target::Workflow(w) => Ok(Work::Workflow(w.new_workflow(schedule, scheduled_for, trace_id)?)),
        }
    }

    /// Refuses what no fire could start, naming the field under `task.` or `workflow.`.
    fn check(&self, schedule: &str) -> Result<(), InvalidField> {
        let (field, _) = self.stored();
        self.fire(schedule, Utc::now(), "0".repeat(32)).map(drop).map_err(|e| {
            let name =
                if e.field.starts_with('/') { format!("/{field}{}", e.field) } else { format!("{field}.{}", e.field) };
            InvalidField::new(name, e.reason)
        })
    }
}

/// One fire's work, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Task(NewTask),
    Workflow(NewWorkflow),
}

impl Work {
    /// Every task it holds (one, or a workflow's steps).
    pub fn tasks(&self) -> Vec<&NewTask> {
        match self {
            Work::Task(t) => vec![t],
            Work::Workflow(w) => w.steps.iter().map(|s| &s.task).collect(),
        }
    }

    /// With `scheduled_for` moved to `at` (a tick `buffer_one` held back).
    pub fn at(mut self, at: DateTime<Utc>) -> Work {
        match &mut self {
            Work::Task(t) => t.scheduled_for = Some(at),
            Work::Workflow(w) => w.steps.iter_mut().for_each(|s| s.task.scheduled_for = Some(at)),
        }
        self
    }
}

/// The workflow a schedule starts: a `POST /workflows` body without `idempotency_key`
/// (every fire has its own key). Each fire is a new workflow, its steps new tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ScheduleWorkflow")]
pub struct WorkflowTemplate {
    pub name: String,
    pub steps: Vec<StepTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwom_issue_id: Option<String>,
}

/// One step of a [`WorkflowTemplate`]: a [`TaskTemplate`]'s fields plus the step's key,
/// dependencies and failure mode (the fields of a `POST /workflows` step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ScheduleWorkflowStep")]
pub struct StepTemplate {
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_parent_failure: Option<OnParentFailure>,
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwom_issue_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

impl StepTemplate {
    fn task(&self) -> TaskTemplate {
        TaskTemplate {
            task_type: self.task_type.clone(),
            payload: self.payload.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout_seconds: self.timeout_seconds,
            cwom_issue_id: self.cwom_issue_id.clone(),
            concurrency_key: self.concurrency_key.clone(),
        }
    }
}

impl WorkflowTemplate {
    /// The validated workflow one fire starts (its graph checked as `POST /workflows`
    /// checks it; a step's error names `steps[i].field`).
    pub fn new_workflow(
        &self,
        schedule: &str,
        scheduled_for: DateTime<Utc>,
        trace_id: String,
    ) -> Result<NewWorkflow, InvalidField> {
        if self.name.is_empty() || self.name.chars().count() > crate::workflow::limits::NAME_MAX {
            return Err(InvalidField::new(
                "name",
                format!("must be 1 to {} characters", crate::workflow::limits::NAME_MAX),
            ));
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let at = |field: &str, reason: String| InvalidField::new(format!("steps[{i}].{field}"), reason);
            let key = StepKey::parse(&step.key).map_err(|r| at("key", r))?;
            let depends_on = step
                .depends_on
                .iter()
                .map(|d| StepKey::parse(d).map_err(|r| at("depends_on", r)))
                .collect::<Result<_, _>>()?;
            let mut template = step.task();
            if template.cwom_issue_id.is_none() {
                template.cwom_issue_id = self.cwom_issue_id.clone();
            }
            let task =
                template.new_task(schedule, scheduled_for, trace_id.clone()).map_err(|e| at(&e.field, e.reason))?;
            steps.push(NewStep {
                key,
                task,
                depends_on,
                on_parent_failure: step.on_parent_failure.unwrap_or_default(),
            });
        }
        NewWorkflow {
            id: WorkflowId::new(),
            name: self.name.clone(),
            idempotency_key: None,
            cwom_issue_id: self.cwom_issue_id.clone(),
            steps,
        }
        .checked()
        .map_err(|e| InvalidField::new("steps", e.to_string()))
    }
}

fn parse_workflow_template(workflow: Value) -> Result<WorkflowTemplate, InvalidField> {
    let Value::Object(map) = workflow else {
        return Err(InvalidField::new("workflow", "must be a JSON object (a workflow body)"));
    };
    if map.contains_key("idempotency_key") {
        return Err(InvalidField::new(
            "workflow.idempotency_key",
            "every fire has its own key (the schedule and the tick); leave idempotency_key out",
        ));
    }
    serde_json::from_value(Value::Object(map.clone())).map_err(|e| {
        let inner = name_serde_error(&map, e);
        InvalidField::new(format!("workflow.{}", inner.field), inner.reason)
    })
}

/// A validated schedule, as created or replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub timing: Timing,
    pub target: Target,
    pub catch_up: CatchUp,
    pub catch_up_window_s: u32,
    pub overlap: Overlap,
    pub paused: bool,
}

/// The body of `POST /schedules` (and `PUT`, where the name may be left out), before
/// validation: each field is read loosely so that a bad one is refused naming it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ScheduleBody")]
pub struct Body {
    /// `[A-Za-z0-9_.-]{1,128}`.
    name: Option<String>,
    /// 5 fields, 6 with seconds first, or `@hourly`, `@daily`, `@weekly`, `@monthly`.
    cron: Option<String>,
    /// An IANA time zone; `UTC` when left out.
    timezone: Option<String>,
    /// The task each tick enqueues.
    #[schemars(with = "Option<TaskTemplate>")]
    task: Option<Value>,
    /// The workflow each tick starts (a workflow body without `idempotency_key`).
    #[schemars(with = "Option<WorkflowTemplate>")]
    workflow: Option<Value>,
    /// `latest` when left out.
    #[schemars(with = "Option<CatchUp>")]
    catch_up: Option<String>,
    /// How far back missed ticks are caught up; 3600 when left out.
    catch_up_window_s: Option<i64>,
    /// `skip` when left out.
    #[schemars(with = "Option<Overlap>")]
    overlap: Option<String>,
    paused: Option<bool>,
}

/// Checks a schedule name: `[A-Za-z0-9_.-]{1,128}`.
pub fn check_name(name: &str) -> Result<(), InvalidField> {
    let ok = !name.is_empty()
        && name.len() <= limits::NAME_MAX
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new("name", format!("must match [A-Za-z0-9_.-]{{1,{}}}", limits::NAME_MAX)))
    }
}

impl ScheduleSpec {
    /// Validates a body. `path_name` is the name in a `PUT /schedules/{name}` path: the body
    /// may repeat it, never name another. Errors name the field.
    pub fn from_body(body: Value, path_name: Option<&str>) -> Result<ScheduleSpec, InvalidField> {
        let Value::Object(map) = body else {
            return Err(InvalidField::new("body", "must be a JSON object"));
        };
        let body: Body = serde_json::from_value(Value::Object(map.clone())).map_err(|e| name_serde_error(&map, e))?;
        let name = match (body.name, path_name) {
            (Some(n), Some(p)) if n != p => {
                return Err(InvalidField::new("name", format!("{n:?} differs from the name in the path ({p:?})")))
            }
            (Some(n), _) => n,
            (None, Some(p)) => p.to_string(),
            (None, None) => return Err(InvalidField::new("name", "is required")),
        };
        check_name(&name)?;
        let cron = body.cron.ok_or_else(|| InvalidField::new("cron", "is required"))?;
        let cron = CronSpec::parse(&cron).map_err(|r| InvalidField::new("cron", r))?;
        let zone = parse_zone(body.timezone.as_deref().unwrap_or(defaults::TIMEZONE))
            .map_err(|r| InvalidField::new("timezone", r))?;
        let target = match (body.task, body.workflow) {
            (Some(_), Some(_)) => return Err(InvalidField::new("task", "give either task or workflow, not both")),
            (None, Some(workflow)) => Target::Workflow(parse_workflow_template(workflow)?),
            (None, None) => return Err(InvalidField::new("task", "is required (an enqueue body), or workflow")),
            (Some(task), None) => Target::Task(parse_template(task)?),
        };
        target.check(&name)?;
        let catch_up = match body.catch_up {
            None => CatchUp::default(),
            Some(s) => s.parse().map_err(|r| InvalidField::new("catch_up", r))?,
        };
        let overlap = match body.overlap {
            None => Overlap::default(),
            Some(s) => s.parse().map_err(|r| InvalidField::new("overlap", r))?,
        };
        let catch_up_window_s = match body.catch_up_window_s {
            None => defaults::CATCH_UP_WINDOW_S,
            Some(w) if (0..=i64::from(limits::CATCH_UP_WINDOW_MAX_S)).contains(&w) => w as u32,
            Some(_) => {
                return Err(InvalidField::new(
                    "catch_up_window_s",
                    format!("must be from 0 to {}", limits::CATCH_UP_WINDOW_MAX_S),
                ))
            }
        };
        let timing = Timing { cron, zone };
        if timing.next_after(Utc::now()).is_none() {
            return Err(InvalidField::new("cron", "never fires after now"));
        }
        Ok(ScheduleSpec {
            name,
            timing,
            target,
            catch_up,
            catch_up_window_s,
            overlap,
            paused: body.paused.unwrap_or(false),
        })
    }

    /// The body this spec is made from (what a GET shows, what `from_body` reads back).
    pub fn body(&self) -> Value {
        let (field, template) = self.target.stored();
        json!({
            "name": self.name,
            "cron": self.timing.cron.as_str(),
            "timezone": self.timing.zone.name(),
            field: template,
            "catch_up": self.catch_up,
            "catch_up_window_s": self.catch_up_window_s,
            "overlap": self.overlap,
            "paused": self.paused,
        })
    }

    /// A spec as a store holds it, read back without the checks a new one passes (a
    /// stored schedule stays readable whatever changes around it).
    #[allow(clippy::too_many_arguments)]
    pub fn stored(
        name: String,
        cron: &str,
        timezone: &str,
        target: &str,
        template: Value,
        catch_up: &str,
        catch_up_window_s: i64,
        overlap: &str,
        paused: bool,
    ) -> Result<ScheduleSpec, String> {
        let timing = Timing { cron: CronSpec::parse(cron)?, zone: parse_zone(timezone)? };
        let target = match target {
            "task" => Target::Task(serde_json::from_value(template).map_err(|e| format!("task: {e}"))?),
            "workflow" => Target::Workflow(serde_json::from_value(template).map_err(|e| format!("workflow: {e}"))?),
            other => return Err(format!("target: {other:?} is neither task nor workflow")),
        };
        Ok(ScheduleSpec {
            name,
            timing,
            target,
            catch_up: catch_up.parse()?,
            catch_up_window_s: u32::try_from(catch_up_window_s).map_err(|e| e.to_string())?,
            overlap: overlap.parse()?,
            paused,
        })
    }

    pub fn window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.catch_up_window_s))
    }
}

fn parse_template(task: Value) -> Result<TaskTemplate, InvalidField> {
    let Value::Object(map) = task else {
        return Err(InvalidField::new("task", "must be a JSON object (an enqueue body)"));
    };
    for (key, why) in [
        ("run_at", "a schedule's task runs at its tick; leave run_at out"),
        ("idempotency_key", "every fire has its own key (the schedule and the tick); leave idempotency_key out"),
    ] {
        if map.contains_key(key) {
            return Err(InvalidField::new(format!("task.{key}"), why));
        }
    }
    serde_json::from_value(Value::Object(map.clone())).map_err(|e| {
        let inner = name_serde_error(&map, e);
        InvalidField::new(format!("task.{}", inner.field), inner.reason)
    })
}

/// Names the field a serde error is about: the unknown or missing one it quotes, else the
/// first whose value has the wrong JSON type.
fn name_serde_error(map: &Map<String, Value>, e: serde_json::Error) -> InvalidField {
    let message = e.to_string();
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        let quoted = message.split('`').nth(1).unwrap_or("body").to_string();
        return InvalidField::new(quoted, message);
    }
    match map.iter().find(|(k, v)| !type_fits(k, v)) {
        Some((key, _)) => InvalidField::new(key.clone(), message),
        None => InvalidField::new("body", message),
    }
}

/// Whether a value has the JSON type its schedule or template field takes.
fn type_fits(key: &str, v: &Value) -> bool {
    match key {
        "name" | "cron" | "timezone" | "catch_up" | "overlap" | "type" | "queue" | "cwom_issue_id"
        | "concurrency_key" => v.is_string(),
        "catch_up_window_s" | "priority" | "max_attempts" | "timeout_seconds" => v.is_i64() || v.is_u64(),
        "paused" => v.is_boolean(),
        _ => true,
    }
}

/// Reads the schedules file (`JCT_SCHEDULES_FILE`): TOML with one `[[schedule]]` table per
/// schedule, each holding the fields of a `POST /schedules` body (`task` as a sub-table).
/// The error names the schedule (by index and name) and the field.
pub fn parse_file(text: &str) -> Result<Vec<ScheduleSpec>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        schedule: Vec<toml::Table>,
    }
    let file: File = toml::from_str(text).map_err(|e| format!("not a schedules file: {}", e.message()))?;
    let mut specs: Vec<ScheduleSpec> = Vec::with_capacity(file.schedule.len());
    for (index, table) in file.schedule.into_iter().enumerate() {
        let name = table.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_string();
        let body = serde_json::to_value(&table).map_err(|e| format!("schedule [{index}] ({name}): {e}"))?;
        let spec = ScheduleSpec::from_body(body, None).map_err(|e| format!("schedule [{index}] ({name}): {e}"))?;
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(format!("schedule [{index}]: the name {:?} is used twice", spec.name));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// A stored schedule: the spec and what its fires did.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    pub source: Source,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every tick up to here has been dealt with (fired, skipped, buffered or missed):
    /// the catch-up rules start after it. Set to now on create, on `PUT` (a changed
    /// pattern takes effect from its next tick) and on resume.
    pub fired_through: DateTime<Utc>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_task_id: Option<TaskId>,
    pub last_workflow_id: Option<WorkflowId>,
    /// A tick held back by `buffer_one`, fired when the previous fires are over.
    pub buffered_for: Option<DateTime<Utc>>,
}

impl Schedule {
    /// Notes what the last fire started, as the store did.
    pub fn started(&mut self, started: Started) {
        (self.last_task_id, self.last_workflow_id) = match started {
            Started::Task(t) => (Some(t), None),
            Started::Workflow(w) => (None, Some(w)),
        };
    }

    /// The next tick that will fire (`None` while paused).
    pub fn next_fire_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.spec.paused {
            return None;
        }
        self.spec.timing.next_after(now.max(self.fired_through))
    }

    /// The API's view: the body, `next_fire_at`, `upcoming`, the last fire, who owns it.
    pub fn view(&self, now: DateTime<Utc>) -> ScheduleView {
        let from = now.max(self.fired_through);
        let upcoming = self.spec.timing.upcoming(from, limits::UPCOMING);
        ScheduleView {
            name: self.spec.name.clone(),
            cron: self.spec.timing.cron.as_str().to_string(),
            timezone: self.spec.timing.zone.name().to_string(),
            task: match &self.spec.target {
                Target::Task(t) => Some(t.clone()),
                Target::Workflow(_) => None,
            },
            workflow: match &self.spec.target {
                Target::Workflow(w) => Some(w.clone()),
                Target::Task(_) => None,
            },
            catch_up: self.spec.catch_up,
            catch_up_window_s: self.spec.catch_up_window_s,
            overlap: self.spec.overlap,
            paused: self.spec.paused,
            next_fire_at: if self.spec.paused { None } else { upcoming.first().copied() },
            upcoming,
            cron_description: self.spec.timing.cron.describe(),
            last_fired_at: self.last_fired_at,
            last_task_id: self.last_task_id,
            last_workflow_id: self.last_workflow_id,
            buffered_for: self.buffered_for,
            source: self.source,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A schedule as the API shows it: its body, what comes next, its last fire, who owns it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Schedule")]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The task each tick enqueues (absent for a workflow schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskTemplate>,
    /// The workflow each tick starts (absent for a task schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowTemplate>,
    pub catch_up: CatchUp,
    pub catch_up_window_s: u32,
    pub overlap: Overlap,
    pub paused: bool,
    /// Null while paused.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The next fire times (5).
    pub upcoming: Vec<DateTime<Utc>>,
    /// The pattern in words.
    pub cron_description: String,
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The last fire's task (a task schedule).
    pub last_task_id: Option<TaskId>,
    /// The last fire's workflow (a workflow schedule).
    pub last_workflow_id: Option<WorkflowId>,
    /// A tick `buffer_one` holds back.
    pub buffered_for: Option<DateTime<Utc>>,
    /// `file`: managed by `JCT_SCHEDULES_FILE`.
    pub source: Source,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What one fire did.
#[derive(Debug, Clone, PartialEq)]
pub enum FireOutcome {
    /// A task was enqueued or a workflow started (after cancelling `cancelled`, under
    /// `cancel_other`).
    Fired { started: Started, cancelled: Vec<TaskId> },
    /// The previous fire is still going: nothing fired (`overlap: skip`, or `buffer_one`
    /// with one already waiting).
    Skipped,
    /// Held back by `buffer_one` until the previous fires are over.
    Buffered,
    /// This tick was dealt with before (by this daemon or another).
    AlreadyDone,
    /// The schedule is paused: ticks do not fire.
    Paused,
}

/// What a fire started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    Task(TaskId),
    Workflow(WorkflowId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn timing(cron: &str, zone: &str) -> Timing {
        Timing { cron: CronSpec::parse(cron).unwrap(), zone: parse_zone(zone).unwrap() }
    }

    #[test]
    fn patterns_of_five_and_six_fields_and_the_shorthands() {
        let t = timing("*/15 * * * *", "UTC");
        assert_eq!(
            t.upcoming(utc("2026-12-03T10:07:00Z"), 3),
            vec![utc("2026-12-03T10:15:00Z"), utc("2026-12-03T10:30:00Z"), utc("2026-12-03T10:45:00Z")]
        );
        let t = timing("*/2 * * * * *", "UTC");
        assert_eq!(t.next_after(utc("2026-12-03T10:07:00.5Z")), Some(utc("2026-12-03T10:07:02Z")));
        assert_eq!(timing("@hourly", "UTC").next_after(utc("2026-12-03T10:07:00Z")), Some(utc("2026-12-03T11:00:00Z")));
        assert_eq!(timing("@daily", "UTC").next_after(utc("2026-12-03T10:07:00Z")), Some(utc("2026-12-04T00:00:00Z")));
        // 2026-12-03 is a Thursday; @weekly is Sunday midnight.
        assert_eq!(timing("@weekly", "UTC").next_after(utc("2026-12-03T10:07:00Z")), Some(utc("2026-12-06T00:00:00Z")));
        assert_eq!(
            timing("@monthly", "UTC").next_after(utc("2026-12-03T10:07:00Z")),
            Some(utc("2027-01-01T00:00:00Z"))
        );
        // Day of week 1 is Monday, as in Unix cron.
        assert_eq!(
            timing("0 9 * * 1", "UTC").next_after(utc("2026-12-03T10:07:00Z")),
            Some(utc("2026-12-07T09:00:00Z"))
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_refused() {
        for bad in ["", "* * * *", "* * * * * * *", "61 * * * *", "@reboot", "@yearly", "a b c d e"] {
            assert!(CronSpec::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_zone("Mars/Olympus").is_err());
        assert!(parse_zone("Europe/Berlin").is_ok());
    }

    #[test]
    fn a_zone_moves_the_tick() {
        let t = timing("0 9 * * *", "America/New_York");
        // 09:00 EST is 14:00 UTC.
        assert_eq!(t.next_after(utc("2026-12-03T10:00:00Z")), Some(utc("2026-12-03T14:00:00Z")));
    }

    #[test]
    fn berlin_spring_gap_fires_once_after_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let t = timing("30 2 * * *", "Europe/Berlin");
        let ticks = t.upcoming(utc("2026-03-28T12:00:00Z"), 3);
        assert_eq!(ticks, vec![utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z"), utc("2026-03-31T00:30:00Z")]);
        // Every minute of the missing hour is one fire, at 03:00 CEST, then 03:01.
        let t = timing("* 2,3 * * *", "Europe/Berlin");
        let ticks = t.upcoming(utc("2026-03-29T00:58:30Z"), 3);
        assert_eq!(ticks, vec![utc("2026-03-29T01:00:00Z"), utc("2026-03-29T01:01:00Z"), utc("2026-03-29T01:02:00Z")]);
    }

    #[test]
    fn berlin_autumn_repeat_fires_once_at_the_first_occurrence() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
        let t = timing("30 2 * * *", "Europe/Berlin");
        let ticks = t.upcoming(utc("2026-10-24T12:00:00Z"), 2);
        assert_eq!(ticks, vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]);
        // From inside the second pass, the repeated wall time is not a tick again.
        assert_eq!(t.next_after(utc("2026-10-25T01:10:00Z")), Some(utc("2026-10-26T01:30:00Z")));
        // Hourly: 02:00 local fires once (00:00 UTC), then 03:00 CET (02:00 UTC).
        let t = timing("0 * * * *", "Europe/Berlin");
        let ticks = t.upcoming(utc("2026-10-24T23:30:00Z"), 3);
        assert_eq!(ticks, vec![utc("2026-10-25T00:00:00Z"), utc("2026-10-25T02:00:00Z"), utc("2026-10-25T03:00:00Z")]);
    }

    #[test]
    fn new_york_spring_gap_and_autumn_repeat() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        let t = timing("30 2 * * *", "America/New_York");
        assert_eq!(
            t.upcoming(utc("2026-03-07T12:00:00Z"), 2),
            vec![utc("2026-03-08T07:00:00Z"), utc("2026-03-09T06:30:00Z")]
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens at 05:30 and 06:30 UTC.
        let t = timing("30 1 * * *", "America/New_York");
        assert_eq!(
            t.upcoming(utc("2026-10-31T12:00:00Z"), 2),
            vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
        );
        // Every second through the repeat: never a tick twice, never out of order.
        let t = timing("* * * * * *", "America/New_York");
        let ticks = t.upcoming(utc("2026-11-01T05:59:58Z"), 3);
        assert_eq!(ticks, vec![utc("2026-11-01T05:59:59Z"), utc("2026-11-01T07:00:00Z"), utc("2026-11-01T07:00:01Z")]);
    }

    #[test]
    fn every_second_has_no_drift() {
        let t = timing("* * * * * *", "UTC");
        let start = utc("2026-12-03T10:00:00Z");
        let ticks = t.upcoming(start, 120);
        for (i, tick) in ticks.iter().enumerate() {
            assert_eq!(*tick, start + TimeDelta::seconds(i as i64 + 1));
        }
    }

    #[test]
    fn catch_up_rules() {
        let t = timing("* * * * *", "UTC");
        let cursor = utc("2026-12-03T10:00:00Z");
        let now = utc("2026-12-03T10:05:30Z");
        let hour = Duration::from_secs(3600);
        let grace = Duration::from_secs(1);
        let all = t.due(cursor, now, CatchUp::All, hour, grace);
        assert_eq!(
            all.fire,
            (1..=5).map(|m| cursor + TimeDelta::minutes(m)).collect::<Vec<_>>(),
            "all: every missed tick, oldest first"
        );
        assert_eq!(all.through, Some(utc("2026-12-03T10:05:00Z")));
        let latest = t.due(cursor, now, CatchUp::Latest, hour, grace);
        assert_eq!(latest.fire, vec![utc("2026-12-03T10:05:00Z")]);
        let skip = t.due(cursor, now, CatchUp::Skip, hour, grace);
        assert!(skip.fire.is_empty());
        let through = skip.through.expect("the cursor moves past the missed ticks");
        assert!(through >= utc("2026-12-03T10:05:00Z") && through < utc("2026-12-03T10:06:00Z"), "{through}");
        // A window of two minutes keeps only the ticks inside it.
        let windowed = t.due(cursor, now, CatchUp::All, Duration::from_secs(120), grace);
        assert_eq!(windowed.fire, vec![utc("2026-12-03T10:04:00Z"), utc("2026-12-03T10:05:00Z")]);
        // On time: the tick that just came fires under every policy; nothing early.
        let now = utc("2026-12-03T10:01:00.200Z");
        for c in CatchUp::ALL {
            assert_eq!(t.due(cursor, now, *c, hour, grace).fire, vec![utc("2026-12-03T10:01:00Z")], "{c}");
        }
        let before = t.due(cursor, utc("2026-12-03T10:00:59.999Z"), CatchUp::All, hour, grace);
        assert!(before.fire.is_empty() && before.through.is_none());
        // Nothing older than the window moves the cursor backwards or fires.
        let late = t.due(cursor, utc("2026-12-03T12:00:30Z"), CatchUp::Latest, hour, grace);
        assert_eq!(late.fire, vec![utc("2026-12-03T12:00:00Z")]);
    }

    #[test]
    fn bodies_are_validated_naming_the_field() {
        let ok = json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "task": {"type": "echo"}});
        let spec = ScheduleSpec::from_body(ok.clone(), None).unwrap();
        assert_eq!((spec.catch_up, spec.overlap, spec.catch_up_window_s), (CatchUp::Latest, Overlap::Skip, 3600));
        assert_eq!(ScheduleSpec::from_body(spec.body(), None).unwrap(), spec, "the body reads back");
        let field = |patch: Value| {
            let mut b = ok.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    b.as_object_mut().unwrap().remove(k);
                } else {
                    b[k] = v.clone();
                }
            }
            ScheduleSpec::from_body(b, None).unwrap_err().field
        };
        assert_eq!(field(json!({"cron": "not cron"})), "cron");
        assert_eq!(field(json!({"cron": 5})), "cron");
        assert_eq!(field(json!({"timezone": "Mars/Olympus"})), "timezone");
        assert_eq!(field(json!({"task": null})), "task");
        assert_eq!(field(json!({"workflow": {"name": "w", "steps": []}})), "task");
        let wf = |workflow: Value| field(json!({"task": null, "workflow": workflow}));
        assert_eq!(wf(json!({"name": "w", "steps": []})), "workflow.steps");
        assert_eq!(wf(json!([1])), "workflow");
        assert_eq!(
            wf(json!({"name": "w", "steps": [{"key": "a", "type": "echo"}], "idempotency_key": "k"})),
            "workflow.idempotency_key"
        );
        assert_eq!(wf(json!({"name": "w", "steps": [{"key": "a bad key", "type": "echo"}]})), "workflow.steps[0].key");
        assert_eq!(
            wf(json!({"name": "w", "steps": [{"key": "a", "type": "echo", "max_attempts": 0}]})),
            "workflow.steps[0].max_attempts"
        );
        assert_eq!(
            wf(json!({"name": "w", "steps": [{"key": "a", "type": "echo", "depends_on": ["b"]}]})),
            "workflow.steps"
        );
        assert_eq!(wf(json!({"name": "", "steps": [{"key": "a", "type": "echo"}]})), "workflow.name");
        let good = json!({"name": "w", "steps": [{"key": "a", "type": "echo"}, {"key": "b", "type": "echo", "depends_on": ["a"], "on_parent_failure": "run"}]});
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove("task");
        body["workflow"] = good;
        let spec = ScheduleSpec::from_body(body, None).unwrap();
        assert!(matches!(&spec.target, Target::Workflow(w) if w.steps.len() == 2));
        assert_eq!(ScheduleSpec::from_body(spec.body(), None).unwrap(), spec, "a workflow schedule's body reads back");
        let Work::Workflow(w) = spec.target.fire("nightly", utc("2026-12-03T03:00:00Z"), "t".into()).unwrap() else {
            panic!("a workflow schedule fires a workflow")
        };
        assert!(w.steps.iter().all(|s| s.task.schedule_name.as_deref() == Some("nightly")
            && s.task.scheduled_for == Some(utc("2026-12-03T03:00:00Z"))));
        assert_eq!(w.steps[1].on_parent_failure, OnParentFailure::Run);
        assert_eq!(field(json!({"name": "no spaces"})), "name");
        assert_eq!(field(json!({"catch_up": "sometimes"})), "catch_up");
        assert_eq!(field(json!({"overlap": "never"})), "overlap");
        assert_eq!(field(json!({"catch_up_window_s": -1})), "catch_up_window_s");
        assert_eq!(field(json!({"task": {"type": "echo", "run_at": "2026-01-01T00:00:00Z"}})), "task.run_at");
        assert_eq!(field(json!({"task": {"type": "echo", "max_attempts": 0}})), "task.max_attempts");
        assert_eq!(field(json!({"task": {"type": "echo", "colour": 1}})), "task.colour");
        assert_eq!(field(json!({"task": {"payload": {}}})), "task.type");
        assert_eq!(field(json!({"extra": 1})), "extra");
        assert_eq!(ScheduleSpec::from_body(ok.clone(), Some("other")).unwrap_err().field, "name");
    }
}
