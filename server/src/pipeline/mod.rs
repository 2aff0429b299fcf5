//! Pipelines: the `.slipway.yml` spec (more to come: triggers, the scheduler,
//! the runner protocol).

// The scheduler (issue 4, in progress) is what reads most of the model; until it
// lands, `slipway lint` is the only user.
#[allow(dead_code, unused_imports)]
pub mod spec;
