//! The route table: what the caller sets (`RouteTable`, plain values) and the
//! resolved snapshot requests read (`Table`, shared upstream states).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::upstream::Upstream;

/// One instance the router may send requests to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Unique within the router (the instance id); metrics label `instance`.
    pub id: String,
    /// Metrics label `version` (e.g. a short digest).
    pub version: String,
    /// The instance's network namespace; `None` is the router's own (benches).
    pub netns: Option<PathBuf>,
    /// Port on `127.0.0.1` inside that namespace.
    pub port: u16,
}

/// What the router routes to: the live set (the main listener) and the
/// preview set (the preview listener). An immutable value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub live: Vec<Backend>,
    pub preview: Vec<Backend>,
}

/// The snapshot one request uses from start to end.
pub(super) struct Table {
    pub live: Vec<Arc<Upstream>>,
    pub preview: Vec<Arc<Upstream>>,
    /// Where the next pick starts looking (round robin among equals).
    pub next: AtomicUsize,
}

impl Table {
    pub fn empty() -> Table {
        Table {
            live: Vec::new(),
            preview: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.live.iter().chain(&self.preview).any(|u| u.id == id)
    }

    /// Resolve `table` against the upstreams known so far (`known`, keyed by
    /// id): an instance keeps its counters and its pooled connections across
    /// tables; a new one (or one whose address changed) gets a fresh state
    /// with `pools` connection pools (one per router thread).
    pub fn resolve(
        table: RouteTable,
        known: &mut HashMap<String, Arc<Upstream>>,
        pools: usize,
    ) -> Table {
        let mut resolve = |backends: Vec<Backend>| -> Vec<Arc<Upstream>> {
            backends
                .into_iter()
                .map(|backend| {
                    let upstream = match known.get(&backend.id) {
                        Some(upstream) if upstream.serves(&backend) => upstream.clone(),
                        _ => {
                            let upstream = Arc::new(Upstream::new(backend, pools));
                            known.insert(upstream.id.clone(), upstream.clone());
                            upstream
                        }
                    };
                    upstream.reinstate();
                    upstream
                })
                .collect()
        };
        Table {
            live: resolve(table.live),
            preview: resolve(table.preview),
            next: AtomicUsize::new(0),
        }
    }
}
