//! Phase one of a request: pick the instance. The least requests in flight
//! wins; among equals, where the search starts turns round (round robin).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::upstream::Upstream;

/// Instances already tried for this request (the first 64 of a table).
#[derive(Clone, Copy, Default)]
pub(super) struct Tried(u64);

impl Tried {
    pub fn add(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    fn has(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
}

/// The index of the instance to try next, if any is left: not tried yet for
/// this request, not retired by a drain.
pub(super) fn pick(backends: &[Arc<Upstream>], next: &AtomicUsize, tried: Tried) -> Option<usize> {
    let n = backends.len();
    if n == 1 {
        return (!tried.has(0) && !backends[0].is_retired()).then_some(0);
    }
    let start = next.fetch_add(1, Ordering::Relaxed) % n.max(1);
    let mut best: Option<(usize, u64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let upstream = &backends[i];
        if tried.has(i) || upstream.is_retired() {
            continue;
        }
        let load = upstream.in_flight();
        if best.is_none_or(|(_, least)| load < least) {
            best = Some((i, load));
        }
    }
    best.map(|(i, _)| i)
}
