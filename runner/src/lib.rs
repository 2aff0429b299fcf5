//! Slipway's runner: leases jobs, pulls step images into a layer cache, and runs
//! each step in a runc container. Not built yet: the execution engine is issue 3 and
//! the runner protocol issue 4. The crate exists now so the workspace layout
//! in `DESIGN.md` is fixed from the start.
