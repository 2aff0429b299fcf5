//! Slipway's web UI: askama templates and view models. Not built yet (issue 6); the
//! crate exists now so the workspace layout in `DESIGN.md` is fixed from the start.
