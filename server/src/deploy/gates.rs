//! Release governance, enforced by the server (an admin sets it; nothing in
//! a commit can): an environment's protection policy, approvals bound to
//! the exact digest, and freeze windows.
//!
//! - Who may deploy: `deployers` (a role, named users, or by default anyone
//!   who may deploy at all). A pipeline deploying to the chain's first
//!   environment is the server acting on the default branch.
//! - Approvals: a deployment to an environment that requires N approvals
//!   waits in `awaiting_approval` (the reconciler does not see it) until N
//!   distinct approvers admitted by `approvers` approved its digest for that
//!   environment, each approval valid for `approval_ttl_s`; with separation
//!   of duties (the default) the person who asked does not count. A
//!   rejection (with a comment) ends the request. The wait's deadline is the
//!   approval lifetime from the request; action: `expired`.
//! - Freeze windows: cron start + duration + time zone. A deploy or
//!   promotion asked for during one is refused with the window's end; an
//!   admin may override with a reason (audited).
//! - Rollbacks skip approvals and freezes (they only go back to what ran
//!   there), and are audited with who and why.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{SqliteConnection, SqlitePool};

use super::audit::{self, Entry};
use super::events;
use super::model::{short_digest, Deployment};
use super::DeployError;
use crate::auth::users::{Role, User};
use crate::db::{format_utc, now_ms};

/// Bounds of a policy (untrusted input from the API).
pub const MAX_APPROVALS: u32 = 10;
pub const MAX_NAMED: usize = 50;
pub const MAX_FREEZES: usize = 20;
/// One minute to 30 days: approvals' lifetime and a freeze's duration.
pub const MIN_SECONDS: u64 = 60;
pub const MAX_SECONDS: u64 = 30 * 24 * 3600;
const DAY_S: u64 = 24 * 3600;

/// Who may do something: a role (`admin`, or `user`: developers and admins)
/// or named users; nobody named means the default of the place it is used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Who {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

impl Who {
    fn is_default(&self) -> bool {
        self.role.is_none() && self.users.is_empty()
    }

    /// `user` (an admin when `admin`: the role and, for a token, its admin
    /// scope) is admitted; `default` answers when nobody is named.
    fn admits(&self, user: &User, admin: bool, default: impl Fn(&User, bool) -> bool) -> bool {
        if self.is_default() {
            return default(user, admin);
        }
        self.users.iter().any(|u| *u == user.username)
            || match self.role.as_deref() {
                Some("admin") => admin,
                // Developers and admins (the route asked for the push scope).
                Some("user") => matches!(user.role, Role::Admin | Role::User),
                _ => false,
            }
    }

    fn describe(&self, default: &str) -> String {
        if self.is_default() {
            return default.to_owned();
        }
        let mut parts = Vec::new();
        match self.role.as_deref() {
            Some("admin") => parts.push("admins".to_owned()),
            Some("user") => parts.push("developers and admins".to_owned()),
            _ => {}
        }
        if !self.users.is_empty() {
            parts.push(self.users.join(", "));
        }
        parts.join(" or ")
    }
}

/// A freeze window: starts at each `cron` time in `timezone`, lasts
/// `duration_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    pub cron: String,
    pub duration_s: u64,
    pub timezone: String,
}

/// An environment's protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub required_approvals: u32,
    /// Default: admins.
    #[serde(default)]
    pub approvers: Who,
    /// The person who asked for a deployment cannot approve it.
    #[serde(default = "yes")]
    pub separation_of_duties: bool,
    #[serde(default = "day")]
    pub approval_ttl_s: u64,
    /// Who may deploy or promote here. Default: anyone who may deploy at all
    /// (the push scope the routes ask for).
    #[serde(default)]
    pub deployers: Who,
    #[serde(default)]
    pub freezes: Vec<Freeze>,
}

fn yes() -> bool {
    true
}

fn day() -> u64 {
    DAY_S
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            required_approvals: 0,
            approvers: Who::default(),
            separation_of_duties: true,
            approval_ttl_s: DAY_S,
            deployers: Who::default(),
            freezes: Vec::new(),
        }
    }
}

/// The first problem of a policy, as (field, message).
pub fn validate(p: &Policy) -> Result<(), (String, String)> {
    let err = |field: &str, message: String| Err((field.to_owned(), message));
    if p.required_approvals > MAX_APPROVALS {
        return err(
            "required_approvals",
            format!(
                "at most {MAX_APPROVALS} approvals, not {}",
                p.required_approvals
            ),
        );
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&p.approval_ttl_s) {
        return err(
            "approval_ttl_s",
            format!(
                "an approval lasts from {MIN_SECONDS} s to {MAX_SECONDS} s (30 days), not {}",
                p.approval_ttl_s
            ),
        );
    }
    for (name, who) in [("approvers", &p.approvers), ("deployers", &p.deployers)] {
        if let Some(role) = &who.role {
            if role != "admin" && role != "user" {
                return err(
                    &format!("{name}.role"),
                    format!("role {role:?} is not one of admin, user"),
                );
            }
        }
        if who.users.len() > MAX_NAMED {
            return err(
                &format!("{name}.users"),
                format!("at most {MAX_NAMED} users, not {}", who.users.len()),
            );
        }
        for (i, u) in who.users.iter().enumerate() {
            if !crate::auth::users::valid_username(u) {
                return err(
                    &format!("{name}.users[{i}]"),
                    format!("{u:?} is not a username"),
                );
            }
        }
    }
    if p.freezes.len() > MAX_FREEZES {
        return err(
            "freezes",
            format!(
                "at most {MAX_FREEZES} freeze windows, not {}",
                p.freezes.len()
            ),
        );
    }
    for (i, f) in p.freezes.iter().enumerate() {
        if !(9..=200).contains(&f.cron.len()) {
            return err(
                &format!("freezes[{i}].cron"),
                format!("a cron schedule is 9 to 200 bytes, not {}", f.cron.len()),
            );
        }
        if f.timezone.is_empty() || f.timezone.len() > 64 {
            return err(
                &format!("freezes[{i}].timezone"),
                format!(
                    "a time zone name is 1 to 64 bytes, not {}",
                    f.timezone.len()
                ),
            );
        }
        let cron = match schedule(&f.cron) {
            Ok(c) => c,
            Err(e) => {
                return err(
                    &format!("freezes[{i}].cron"),
                    format!(
                        "{:?} is not a five-field cron schedule such as \"0 16 * * FRI\" ({e})",
                        f.cron
                    ),
                )
            }
        };
        // At most MAX_STARTS starts in one window's length (from a fixed
        // day: a schedule's density does not depend much on when).
        let from = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("a date");
        let until = from + chrono::Duration::seconds(f.duration_s as i64);
        let starts = cron
            .iter_after(from)
            .take(MAX_STARTS + 1)
            .take_while(|t| *t < until)
            .count();
        if starts > MAX_STARTS {
            return err(
                &format!("freezes[{i}].cron"),
                format!(
                    "{:?} starts a window more than {MAX_STARTS} times in {} s: use a longer duration with fewer starts",
                    f.cron, f.duration_s
                ),
            );
        }
        if chrono_tz::Tz::from_str(&f.timezone).is_err() {
            return err(
                &format!("freezes[{i}].timezone"),
                format!(
                    "{:?} is not a time zone such as \"Europe/Paris\" or \"UTC\"",
                    f.timezone
                ),
            );
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&f.duration_s) {
            return err(
                &format!("freezes[{i}].duration_s"),
                format!(
                    "a freeze lasts from {MIN_SECONDS} s to {MAX_SECONDS} s (30 days), not {}",
                    f.duration_s
                ),
            );
        }
    }
    Ok(())
}

/// A freeze's schedule: five fields, minute resolution (no seconds field,
/// so a window cannot start every second).
fn schedule(text: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(text)
}

/// Most window starts one duration may hold (bounds the work of checking a
/// freeze).
const MAX_STARTS: usize = 1000;

impl Freeze {
    /// When the window that holds `now` ends (overlapping windows joined),
    /// or `None` when `now` is outside every window.
    pub fn active_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = schedule(&self.cron).ok()?;
        let tz = chrono_tz::Tz::from_str(&self.timezone).ok()?;
        let length = chrono::Duration::seconds(self.duration_s as i64);
        // Every start in (now - length, now] opens a window holding now.
        let mut from = (now - length).with_timezone(&tz);
        let mut end: Option<DateTime<Utc>> = None;
        // Bounded: `validate` refuses a schedule that starts more often.
        for _ in 0..=MAX_STARTS {
            let Ok(start) = cron.find_next_occurrence(&from, false) else {
                break;
            };
            let start = start.with_timezone(&Utc);
            if start > now {
                break;
            }
            end = Some(end.map_or(start + length, |e| e.max(start + length)));
            from = start.with_timezone(&tz);
        }
        end
    }
}

impl Policy {
    /// The end of the freeze that holds `now`, and the window's words.
    pub fn frozen(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, String)> {
        let mut longest: Option<(DateTime<Utc>, String)> = None;
        for f in &self.freezes {
            let (Some(end), Ok(tz)) = (f.active_until(now), chrono_tz::Tz::from_str(&f.timezone))
            else {
                continue;
            };
            if longest.as_ref().is_some_and(|(e, _)| *e >= end) {
                continue;
            }
            let words = format!(
                "until {} ({}; window \"{}\" for {} in {})",
                format_utc(end.timestamp_millis()),
                end.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
                f.cron,
                humantime::format_duration(std::time::Duration::from_secs(f.duration_s)),
                f.timezone
            );
            longest = Some((end, words));
        }
        longest
    }
}

/// An environment's policy; the default (unprotected) when none is set.
pub async fn policy(conn: &mut SqliteConnection, env_id: i64) -> Result<Policy, sqlx::Error> {
    let text: Option<String> =
        sqlx::query_scalar("SELECT policy FROM environment_protection WHERE environment_id = ?")
            .bind(env_id)
            .fetch_optional(conn)
            .await?;
    match text {
        None => Ok(Policy::default()),
        // Fail closed: an unreadable policy (a downgrade, a hand edit)
        // refuses every gated deploy rather than protecting nothing.
        Some(t) => serde_json::from_str(&t).map_err(|e| {
            tracing::error!(environment = env_id, error = %e, "unreadable protection policy");
            sqlx::Error::Protocol(format!(
                "the protection policy of environment {env_id} cannot be read ({e}): \
                 an admin sets it again with `slipway env protect`"
            ))
        }),
    }
}

pub async fn policy_of(db: &SqlitePool, env_id: i64) -> Result<Policy, sqlx::Error> {
    let mut conn = db.acquire().await?;
    policy(&mut conn, env_id).await
}

/// Replace an environment's policy (the caller checked the admin), audited
/// with the policy before and after.
pub async fn set_policy(
    db: &SqlitePool,
    repo: &str,
    env: (i64, &str),
    new: &Policy,
    by: &str,
) -> Result<Policy, DeployError> {
    validate(new).map_err(|(f, m)| DeployError::Invalid(format!("{f}: {m}")))?;
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let before = policy(&mut tx, env.0).await?;
    sqlx::query(
        "INSERT INTO environment_protection (environment_id, policy, updated_by, updated_at)
         VALUES (?, ?, ?, ?)
         ON CONFLICT (environment_id) DO UPDATE SET policy = excluded.policy,
             updated_by = excluded.updated_by, updated_at = excluded.updated_at",
    )
    .bind(env.0)
    .bind(serde_json::to_string(new).expect("policy serialises"))
    .bind(by)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        Entry {
            actor: by,
            action: "protect",
            repo: Some(repo),
            environment: Some(env.1),
            before: Some(serde_json::to_value(&before).expect("policy serialises")),
            after: Some(serde_json::to_value(new).expect("policy serialises")),
            ..Default::default()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(before)
}

/// Who asks for a deployment.
#[derive(Debug, Clone)]
pub enum Requester {
    /// A person (or their token).
    User {
        user: User,
        /// The credential acts as an admin (the role and the admin scope).
        admin: bool,
        /// Why (a rollback's or an override's reason).
        reason: Option<String>,
        /// Break glass: deploy through a freeze (admins only), with `reason`.
        override_freeze: bool,
    },
    /// A pipeline on the default branch deploying to the chain's first
    /// environment.
    Pipeline(i64),
    /// The deploy controller acting by itself (an auto-promotion, a
    /// rollback after a failed verification), and why.
    Controller(String),
}

impl Requester {
    pub fn name(&self) -> String {
        match self {
            Requester::User { user, .. } => user.username.clone(),
            Requester::Pipeline(n) => format!("pipeline #{n}"),
            Requester::Controller(_) => "slipway".to_owned(),
        }
    }

    pub fn reason_text(&self) -> Option<&str> {
        self.reason()
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Requester::User { reason, .. } => reason.as_deref(),
            Requester::Pipeline(_) => None,
            Requester::Controller(why) => Some(why),
        }
    }
}

/// What the gates decided for a new deployment of kind `kind`.
pub struct Admission {
    /// `pending`, or `awaiting_approval`.
    pub state: &'static str,
    /// A freeze was overridden (its words), for the audit.
    pub overrode: Option<String>,
}

/// Check a new deployment against the environment's policy, in the
/// transaction that creates it.
pub async fn admit(
    conn: &mut SqliteConnection,
    env: (i64, &str),
    kind: &str,
    requester: &Requester,
) -> Result<Result<Admission, Refusal>, sqlx::Error> {
    let p = policy(conn, env.0).await?;
    if let Requester::User { user, admin, .. } = requester {
        let may = p.deployers.admits(user, *admin, |_, _| true);
        if !may {
            return Ok(Err(Refusal::Forbidden(format!(
                "{} may not deploy to {}: its deployers are {}",
                user.username,
                env.1,
                p.deployers.describe("developers and admins")
            ))));
        }
    }
    if kind == "rollback" {
        // Rollbacks go only where something ran, need no approval and
        // work during a freeze.
        return Ok(Ok(Admission {
            state: "pending",
            overrode: None,
        }));
    }
    let mut overrode = None;
    if let Some((_, words)) = p.frozen(Utc::now()) {
        match requester {
            Requester::User {
                admin,
                reason,
                override_freeze: true,
                ..
            } => {
                if !*admin {
                    return Ok(Err(Refusal::Forbidden(format!(
                        "{} is frozen {words}; only an admin may override a freeze",
                        env.1
                    ))));
                }
                if reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                    return Ok(Err(Refusal::Invalid(
                        "overriding a freeze needs a reason (--reason)".into(),
                    )));
                }
                overrode = Some(words);
            }
            _ => {
                return Ok(Err(Refusal::Frozen(format!(
                    "{} is frozen {words}: deploys and promotions wait until it ends \
                     (an admin may override with --override-freeze --reason \"…\"; \
                     rollbacks are allowed)",
                    env.1
                ))));
            }
        }
    }
    Ok(Ok(Admission {
        state: if p.required_approvals > 0 {
            "awaiting_approval"
        } else {
            "pending"
        },
        overrode,
    }))
}

/// Why the gates refused a deployment (the caller audits it as `refused`).
#[derive(Debug)]
pub enum Refusal {
    Forbidden(String),
    Frozen(String),
    Invalid(String),
}

impl From<Refusal> for DeployError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Forbidden(m) => DeployError::Forbidden(m),
            Refusal::Frozen(m) => DeployError::Refused(m),
            Refusal::Invalid(m) => DeployError::Invalid(m),
        }
    }
}

/// Record a deployment's request in the audit (in its transaction).
pub async fn audit_request(
    conn: &mut SqliteConnection,
    repo: &str,
    env: &str,
    d: (i64, &str, &str),
    requester: &Requester,
    admission: &Admission,
) -> Result<(), sqlx::Error> {
    let (id, kind, digest) = d;
    let actor = requester.name();
    if let Some(words) = &admission.overrode {
        audit::record(
            conn,
            Entry {
                actor: &actor,
                action: "freeze_override",
                repo: Some(repo),
                environment: Some(env),
                digest: Some(digest),
                deployment_id: Some(id),
                reason: requester.reason(),
                after: Some(serde_json::json!({ "freeze": words })),
                ..Default::default()
            },
        )
        .await?;
    }
    audit::record(
        conn,
        Entry {
            actor: &actor,
            action: kind,
            repo: Some(repo),
            environment: Some(env),
            digest: Some(digest),
            deployment_id: Some(id),
            reason: requester.reason(),
            after: Some(serde_json::json!({ "state": admission.state })),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// Audit a refused request (nothing else changed: its own statement).
pub async fn audit_refusal(
    db: &SqlitePool,
    repo: &str,
    env: &str,
    kind: &str,
    requester: &Requester,
    why: &str,
) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let actor = requester.name();
    audit::record(
        &mut conn,
        Entry {
            actor: &actor,
            action: "refused",
            repo: Some(repo),
            environment: Some(env),
            reason: Some(why),
            after: Some(serde_json::json!({ "asked": kind, "reason": requester.reason() })),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// Approvals that count now for `digest` in `env_id`, by the current
/// policy: distinct users who still exist and whom the policy's approvers
/// admit now (by their role), given within the current approval lifetime
/// and not expired, after the digest's last rejection there, and not the
/// requester's when separation of duties holds.
async fn counted(
    conn: &mut SqliteConnection,
    env_id: i64,
    d: &Deployment,
    p: &Policy,
    now: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT a.username, u.id, u.role FROM approvals a JOIN users u ON u.username = a.username
         WHERE a.environment_id = ? AND a.digest = ? AND a.decision = 'approve'
           AND a.expires_at > ? AND a.created_at > ?
           AND a.id > COALESCE((SELECT MAX(r.id) FROM approvals r
                WHERE r.environment_id = a.environment_id AND r.digest = a.digest
                  AND r.decision = 'reject'), 0)
         ORDER BY a.username",
    )
    .bind(env_id)
    .bind(&d.digest)
    .bind(now)
    .bind(now - (p.approval_ttl_s * 1000) as i64)
    .fetch_all(conn)
    .await?;
    let mut names: Vec<String> = Vec::new();
    for (username, id, role) in rows {
        let Some(role) = Role::parse(&role) else {
            continue;
        };
        let user = User { id, username, role };
        let admin = role == Role::Admin;
        if p.approvers.admits(&user, admin, |_, admin| admin)
            && !(p.separation_of_duties && user.username == d.requested_by)
            && !names.contains(&user.username)
        {
            names.push(user.username);
        }
    }
    Ok(names)
}

/// Move an awaiting deployment on once its approvals count; true if it moved.
pub async fn settle(
    conn: &mut SqliteConnection,
    d: &Deployment,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let p = policy(conn, d.environment_id).await?;
    let have = counted(conn, d.environment_id, d, &p, now).await?;
    if (have.len() as u32) < p.required_approvals {
        return Ok(false);
    }
    let moved = sqlx::query(
        "UPDATE deployments SET state = 'pending', reason = ?, approved_by = ?
         WHERE id = ? AND state = 'awaiting_approval'",
    )
    .bind(format!("approved by {}", have.join(", ")))
    .bind(serde_json::to_string(&have).expect("names serialise"))
    .bind(d.id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if moved {
        let what = format!("approved by {}: it may start", have.join(", "));
        events::record(conn, d.id, "approved", &what).await?;
    }
    Ok(moved)
}

/// Whether deployment `d` (pending) may start now by its environment's
/// policy as it is now, which may have changed since the request: `None` to
/// start; otherwise it is held, and why. A freeze holds it (pending) until
/// the window ends, unless an admin overrode it; approvals required now and
/// missing send it back to `awaiting_approval`. Rollbacks are never held.
pub async fn hold(
    conn: &mut SqliteConnection,
    d: &Deployment,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    if d.kind == "rollback" {
        return Ok(None);
    }
    let p = policy(conn, d.environment_id).await?;
    if d.freeze_override.is_none() {
        let at = DateTime::from_timestamp_millis(now).unwrap_or_else(Utc::now);
        if let Some((_, words)) = p.frozen(at) {
            return Ok(Some(format!("held by a freeze {words}")));
        }
    }
    if p.required_approvals > 0 {
        let have = counted(conn, d.environment_id, d, &p, now).await?;
        if (have.len() as u32) < p.required_approvals {
            sqlx::query(
                "UPDATE deployments SET state = 'awaiting_approval', progress = NULL, created_at = ?
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(now)
            .bind(d.id)
            .execute(conn)
            .await?;
            return Ok(Some(format!(
                "the environment now requires {} approvals ({} count)",
                p.required_approvals,
                have.len()
            )));
        }
    }
    Ok(None)
}

/// Whether `user` (by role: an admin is an admin here) could approve or
/// reject `d` under `p` (what the page offers; `decide` checks again).
pub fn may_decide(p: &Policy, d: &Deployment, user: &User) -> bool {
    let admin = user.role == Role::Admin;
    user.role != Role::Viewer
        && p.approvers.admits(user, admin, |_, admin| admin)
        && !(p.separation_of_duties && user.username == d.requested_by)
}

/// Whether `user` (by role) may deploy, promote, roll back or abort under
/// `p` (what the page offers; `admit` and `request::abort` check again).
pub fn may_deploy(p: &Policy, user: &User) -> bool {
    let admin = user.role == Role::Admin;
    user.role != Role::Viewer && deployer(p, user, admin)
}

/// Whether `p`'s deployers admit `user` (`admin`: the credential acts as one).
pub fn deployer(p: &Policy, user: &User, admin: bool) -> bool {
    p.deployers.admits(user, admin, |_, _| true)
}

/// What an approver decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    fn past(self) -> &'static str {
        match self {
            Decision::Approve => "approval",
            Decision::Reject => "rejected",
        }
    }
}

/// Approve or reject deployment `d` (awaiting approval) as `user`. Returns
/// the deployment's state after.
pub async fn decide(
    db: &SqlitePool,
    repo: &str,
    d: &Deployment,
    (user, admin): (&User, bool),
    decision: Decision,
    comment: Option<&str>,
) -> Result<String, DeployError> {
    let now = now_ms();
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let env: String = sqlx::query_scalar("SELECT name FROM environments WHERE id = ?")
        .bind(d.environment_id)
        .fetch_one(&mut *tx)
        .await?;
    let state: String = sqlx::query_scalar("SELECT state FROM deployments WHERE id = ?")
        .bind(d.id)
        .fetch_one(&mut *tx)
        .await?;
    if state != "awaiting_approval" {
        return Err(DeployError::Refused(format!(
            "deployment {} is {state}, not awaiting approval",
            d.id
        )));
    }
    let p = policy(&mut tx, d.environment_id).await?;
    if !p.approvers.admits(user, admin, |_, admin| admin) {
        return Err(DeployError::Forbidden(format!(
            "{} may not approve deployments to {env}: its approvers are {}",
            user.username,
            p.approvers.describe("admins")
        )));
    }
    if p.separation_of_duties && user.username == d.requested_by {
        return Err(DeployError::Forbidden(format!(
            "{} asked for deployment {}: separation of duties needs someone else to {}",
            user.username,
            d.id,
            if decision == Decision::Approve {
                "approve it"
            } else {
                "reject it"
            }
        )));
    }
    let comment = comment.map(str::trim).filter(|c| !c.is_empty());
    if decision == Decision::Reject && comment.is_none() {
        return Err(DeployError::Invalid(
            "a rejection needs a comment saying why".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO approvals (environment_id, deployment_id, digest, username, decision, comment, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(d.environment_id)
    .bind(d.id)
    .bind(&d.digest)
    .bind(&user.username)
    .bind(match decision {
        Decision::Approve => "approve",
        Decision::Reject => "reject",
    })
    .bind(comment)
    .bind(now)
    .bind(now + (p.approval_ttl_s * 1000) as i64)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        Entry {
            actor: &user.username,
            action: match decision {
                Decision::Approve => "approve",
                Decision::Reject => "reject",
            },
            repo: Some(repo),
            environment: Some(&env),
            digest: Some(&d.digest),
            deployment_id: Some(d.id),
            reason: comment,
            ..Default::default()
        },
    )
    .await?;
    let what = match comment {
        Some(c) => format!("{} by {}: {c}", decision.past(), user.username),
        None => format!("{} by {}", decision.past(), user.username),
    };
    events::record(&mut tx, d.id, decision.past(), &what).await?;
    let after = match decision {
        Decision::Reject => {
            sqlx::query(
                "UPDATE deployments SET state = 'rejected', reason = ?, finished_at = ? WHERE id = ?",
            )
            .bind(format!(
                "rejected by {}: {}",
                user.username,
                comment.unwrap_or_default()
            ))
            .bind(now)
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
            "rejected"
        }
        Decision::Approve => {
            if settle(&mut tx, d, now).await? {
                "pending"
            } else {
                "awaiting_approval"
            }
        }
    };
    tx.commit().await?;
    Ok(after.to_owned())
}

/// How many approvals count now for an awaiting deployment, of how many.
pub async fn tally(db: &SqlitePool, d: &Deployment) -> Result<(Vec<String>, u32), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let p = policy(&mut conn, d.environment_id).await?;
    let have = counted(&mut conn, d.environment_id, d, &p, now_ms()).await?;
    Ok((have, p.required_approvals))
}

/// Requests that waited longer than their environment's approval lifetime
/// expire (the approval wait's deadline and action); those whose policy no
/// longer asks for as many approvals move on. Returns true if any moved to
/// pending.
pub async fn expire_and_settle(db: &SqlitePool) -> Result<bool, sqlx::Error> {
    let waiting: Vec<Deployment> =
        sqlx::query_as("SELECT * FROM deployments WHERE state = 'awaiting_approval'")
            .fetch_all(db)
            .await?;
    let mut moved = false;
    for d in waiting {
        let now = now_ms();
        let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
        let p = policy(&mut tx, d.environment_id).await?;
        if settle(&mut tx, &d, now).await? {
            moved = true;
        } else if now - d.created_at > (p.approval_ttl_s * 1000) as i64 {
            let have = counted(&mut tx, d.environment_id, &d, &p, now).await?;
            let reason = format!(
                "not approved within {}: {} of {} approvals",
                humantime::format_duration(std::time::Duration::from_secs(p.approval_ttl_s)),
                have.len(),
                p.required_approvals
            );
            let done = sqlx::query(
                "UPDATE deployments SET state = 'expired', reason = ?, finished_at = ?
                 WHERE id = ? AND state = 'awaiting_approval'",
            )
            .bind(&reason)
            .bind(now)
            .bind(d.id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if done {
                events::record(&mut tx, d.id, "expired", &reason).await?;
                let (repo, env): (String, String) = sqlx::query_as(
                    "SELECT r.name, e.name FROM environments e JOIN git_repos r ON r.id = e.repo_id WHERE e.id = ?",
                )
                .bind(d.environment_id)
                .fetch_one(&mut *tx)
                .await?;
                audit::record(
                    &mut tx,
                    Entry {
                        actor: "slipway",
                        action: "expire",
                        repo: Some(&repo),
                        environment: Some(&env),
                        digest: Some(&d.digest),
                        deployment_id: Some(d.id),
                        reason: Some(&reason),
                        ..Default::default()
                    },
                )
                .await?;
                tracing::info!(deployment = d.id, image = %format!("{}@{}", d.repository, short_digest(&d.digest)), "{reason}");
            }
        }
        tx.commit().await?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn freeze(cron: &str, hours: u64, tz: &str) -> Freeze {
        Freeze {
            cron: cron.into(),
            duration_s: hours * 3600,
            timezone: tz.into(),
        }
    }

    #[test]
    fn a_friday_freeze_in_paris_holds_through_the_weekend() {
        let f = freeze("0 16 * * FRI", 64, "Europe/Paris");
        // Friday 2026-12-04 16:00 in Paris is 15:00 UTC (CET, UTC+1).
        let before = Utc.with_ymd_and_hms(2026, 12, 4, 14, 59, 0).unwrap();
        assert_eq!(f.active_until(before), None);
        let start = Utc.with_ymd_and_hms(2026, 12, 4, 15, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 12, 7, 7, 0, 0).unwrap();
        assert_eq!(f.active_until(start), Some(end));
        let sunday = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        assert_eq!(f.active_until(sunday), Some(end));
        assert_eq!(f.active_until(end), None, "the end is outside");
    }

    #[test]
    fn overlapping_windows_join() {
        // A start every hour, each lasting 90 minutes: always frozen, and
        // the end is the last start's.
        let f = freeze("0 * * * *", 0, "UTC");
        let f = Freeze {
            duration_s: 5400,
            ..f
        };
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 10, 30, 0).unwrap();
        assert_eq!(
            f.active_until(now),
            Some(Utc.with_ymd_and_hms(2026, 12, 3, 11, 30, 0).unwrap())
        );
    }

    #[test]
    fn bad_policies_name_the_field() {
        let mut p = Policy {
            required_approvals: 11,
            ..Policy::default()
        };
        assert_eq!(validate(&p).unwrap_err().0, "required_approvals");
        p.required_approvals = 2;
        p.freezes = vec![freeze("0 16 * * FRI", 64, "Mars/Olympus")];
        let (field, message) = validate(&p).unwrap_err();
        assert_eq!(field, "freezes[0].timezone");
        assert!(message.contains("Mars/Olympus"), "{message}");
        p.freezes = vec![freeze("every friday", 64, "UTC")];
        assert_eq!(validate(&p).unwrap_err().0, "freezes[0].cron");
        p.freezes = vec![freeze("0 16 * * FRI", 24 * 31, "UTC")];
        assert_eq!(validate(&p).unwrap_err().0, "freezes[0].duration_s");
        p.freezes.clear();
        p.approvers.role = Some("root".into());
        assert_eq!(validate(&p).unwrap_err().0, "approvers.role");
        p.approvers.role = None;
        p.deployers.users = vec!["no spaces allowed".into()];
        assert_eq!(validate(&p).unwrap_err().0, "deployers.users[0]");
    }
}
