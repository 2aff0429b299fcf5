//! The `needs` graph: every needed job exists, and there is no cycle.

use std::collections::HashMap;

use super::model::PipelineSpec;
use super::read::nearest;
use super::yaml::Span;
use super::SpecError;

/// Check `needs` (given as (job, needed, where) triples) against the jobs.
pub fn check(spec: &PipelineSpec, needs: &[(String, String, Span)], errors: &mut Vec<SpecError>) {
    let names: Vec<&str> = spec.jobs.iter().map(|j| j.name.as_str()).collect();
    let known: std::collections::HashSet<&str> = names.iter().copied().collect();
    for (job, needed, span) in needs {
        if !known.contains(needed.as_str()) {
            let hint = match nearest(needed, names.iter().copied().filter(|n| n != job)) {
                Some(near) => format!("; did you mean {near:?}?"),
                None => String::new(),
            };
            errors.push(SpecError {
                span: *span,
                message: format!("job {job:?} needs unknown job {needed:?}{hint}"),
            });
        }
    }
    if let Some(cycle) = find_cycle(spec) {
        let first = &cycle[0];
        let span = needs
            .iter()
            .find(|(job, needed, _)| job == first && *needed == cycle[1])
            .map(|(_, _, s)| *s)
            .unwrap_or_default();
        errors.push(SpecError {
            span,
            message: format!("needs form a cycle: {}", cycle.join(" -> ")),
        });
    }
}

/// A cycle as job names, the first repeated at the end; the one found from the
/// earliest declared job.
fn find_cycle(spec: &PipelineSpec) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = spec
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = spec
        .jobs
        .iter()
        .map(|j| {
            j.needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; spec.jobs.len()];
    let mut path = Vec::new();
    fn visit(
        v: usize,
        edges: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[v] = 1;
        path.push(v);
        for &w in &edges[v] {
            if state[w] == 1 {
                let start = path.iter().position(|&p| p == w).expect("on path");
                let mut cycle = path[start..].to_vec();
                cycle.push(w);
                return Some(cycle);
            }
            if state[w] == 0 {
                if let Some(c) = visit(w, edges, state, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        state[v] = 2;
        None
    }
    (0..spec.jobs.len()).find_map(|v| {
        if state[v] != 0 {
            return None;
        }
        visit(v, &edges, &mut state, &mut path)
            .map(|c| c.into_iter().map(|i| spec.jobs[i].name.clone()).collect())
    })
}
