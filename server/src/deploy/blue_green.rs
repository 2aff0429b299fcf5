//! Blue/green (2N): start N new instances on the preview address; when all N
//! are ready, one atomic swap of the route table; the old set stays running,
//! out of the table, for `keep` (a rollback inside that window finds it by
//! its spec hash and is a swap back, with no new container); then the old set
//! is drained and stopped.

use std::time::Duration;

use super::model::Instance;
use super::reconcile::{not_ready_reason, Action, Ctx, Outcome};

/// How long the whole new set serves on the preview address before the swap
/// (a rollback to a warm set swaps at once): the preview is seen working,
/// by smoke checks and people, before it takes traffic.
pub(super) const PREVIEW_DWELL: Duration = Duration::from_secs(1);

pub(super) fn step(ctx: &Ctx<'_>) -> (Vec<Action>, Outcome) {
    let n = ctx.config.replicas as usize;
    let hash = &ctx.target.spec_hash;
    let mut actions = Vec::new();
    let running: Vec<&Instance> = ctx.instances.iter().filter(|i| i.running()).collect();
    let (matching, others): (Vec<&Instance>, Vec<&Instance>) =
        running.into_iter().partition(|i| &i.spec_hash == hash);
    let live_matching = matching.iter().filter(|i| i.routed == "live").count();
    let live_others = others.iter().filter(|i| i.routed == "live").count();

    // Already swapped: the new set serves alone; done once the node's router
    // serves it (the wait is the rollout's deadline; action: fail, and the
    // warm old set is swapped back).
    if live_matching >= n && live_others == 0 {
        // A scale-down, or spare ready copies: stop what exceeds N.
        for i in matching.iter().filter(|i| i.routed != "live") {
            actions.push(Action::Stop(i.id));
        }
        for i in matching.iter().filter(|i| i.routed == "live").skip(n) {
            actions.push(Action::Stop(i.id));
        }
        let served = matching
            .iter()
            .filter(|i| i.routed == "live" && i.node_route == "live")
            .count();
        if served < n {
            return (
                actions,
                Outcome::Progress(format!(
                    "swapped; the node's router serves {served}/{n} new instances"
                )),
            );
        }
        return (actions, Outcome::Done(format!("{n}/{n} instances serving")));
    }

    // The green set: prefer ready (warm) instances, then the oldest.
    let mut green: Vec<_> = matching.clone();
    green.sort_by_key(|i| (!i.ready(), i.id));
    let green: Vec<_> = green.into_iter().take(n).collect();
    // Wait: each green instance has `deadline` to be ready; action: fail.
    // A warm instance kept from an earlier deployment counts from when it
    // was made ready, so only new ones can time out.
    for (k, i) in green.iter().enumerate() {
        if ctx.times_out(i) {
            return (actions, Outcome::Failed(not_ready_reason(ctx, i, k + 1, n)));
        }
    }
    for _ in green.len()..n {
        actions.push(Action::Start("preview"));
    }
    for i in green.iter().filter(|i| i.routed == "none") {
        actions.push(Action::Route(i.id, "preview"));
    }
    let ready = green.iter().filter(|i| i.ready()).count();
    // The swap waits until the node's preview router serves every green
    // instance (a warm set kept from a swap is already known good).
    let previewed = green
        .iter()
        .filter(|i| i.ready() && (i.node_route == "preview" || i.warm_until.is_some()))
        .count();
    let warm_set = green.iter().all(|i| i.warm_until.is_some());
    let shown = ctx
        .target
        .preview_since
        .is_some_and(|t| ctx.now - t >= PREVIEW_DWELL.as_millis() as i64);
    if green.len() == n && previewed == n && !warm_set && ctx.target.preview_since.is_none() {
        actions.push(Action::Previewed);
    }
    if green.len() == n && previewed == n && (warm_set || shown) {
        // The swap: one transaction, one route table on the node.
        actions.retain(|a| !matches!(a, Action::Route(..)));
        actions.push(Action::Swap {
            live: green.iter().map(|i| i.id).collect(),
            warm: others
                .iter()
                .filter(|i| i.routed == "live")
                .map(|i| i.id)
                .collect(),
        });
        return (
            actions,
            Outcome::Progress(format!(
                "swapped to {n} new instances; waiting for the node's router"
            )),
        );
    }
    (
        actions,
        Outcome::Progress(format!(
            "{ready}/{n} new instances ready on the preview address"
        )),
    )
}
