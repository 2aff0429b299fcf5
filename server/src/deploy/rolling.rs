//! Rolling (N+1): start one new instance, wait until it is ready, route to it,
//! take one old instance out of the route table (the node drains it, then
//! stops it), and repeat. Never more than N+1 instances alive, never fewer
//! than N routed once N were.

use super::model::Instance;
use super::reconcile::{not_ready_reason, Action, Ctx, Outcome};

pub(super) fn step(ctx: &Ctx<'_>) -> (Vec<Action>, Outcome) {
    let n = ctx.config.replicas as usize;
    let hash = &ctx.target.spec_hash;
    let mut actions = Vec::new();
    let running: Vec<&Instance> = ctx.instances.iter().filter(|i| i.running()).collect();
    let alive = ctx.instances.iter().filter(|i| i.alive(ctx.now)).count();
    let (matching, others): (Vec<&Instance>, Vec<&Instance>) =
        running.into_iter().partition(|i| &i.spec_hash == hash);

    // Wait: each new instance has `deadline` to be ready; action: fail.
    for (k, i) in matching.iter().enumerate() {
        if ctx.times_out(i) {
            return (actions, Outcome::Failed(not_ready_reason(ctx, i, k + 1, n)));
        }
    }
    // Ready new instances join the table.
    for i in matching.iter().filter(|i| i.ready() && i.routed != "live") {
        actions.push(Action::Route(i.id, "live"));
    }
    let ready_new = matching.iter().filter(|i| i.ready()).count();
    let live_old = others.iter().filter(|i| i.routed == "live").count();
    // One old instance leaves once the table holds more than N.
    if ready_new + live_old > n {
        if let Some(old) = others.iter().find(|i| i.routed == "live") {
            actions.push(Action::Stop(old.id));
        }
    }
    // Old instances out of the table (never routed, or kept warm by an
    // earlier blue/green) go.
    for old in others.iter().filter(|i| i.routed != "live") {
        actions.push(Action::Stop(old.id));
    }
    // Too many new ones (a scale-down): the unready first.
    if matching.len() > n {
        let mut extra: Vec<_> = matching.clone();
        extra.sort_by_key(|i| (i.ready(), std::cmp::Reverse(i.id)));
        for i in extra.iter().take(matching.len() - n) {
            actions.push(Action::Stop(i.id));
        }
    }
    let starting = matching.iter().filter(|i| !i.ready()).count();
    if matching.len() < n {
        if others.is_empty() {
            // Nothing serves yet: start them all at once.
            for _ in matching.len()..n {
                actions.push(Action::Start("none"));
            }
        } else if starting == 0 && alive < n + 1 {
            actions.push(Action::Start("none"));
        }
    }
    let done = ready_new >= n && others.is_empty() && matching.len() == n;
    let outcome = if done {
        Outcome::Done(format!("{n}/{n} instances ready"))
    } else {
        Outcome::Progress(format!(
            "{ready_new}/{n} new instances ready, {} old still serving",
            live_old
        ))
    };
    (actions, outcome)
}
