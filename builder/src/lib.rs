//! Slipway's builder: Containerfile parser, build graph, layer diffs to OCI layers,
//! build cache, image assembly. Not built yet (issue 5); the crate exists now so the
//! workspace layout in `DESIGN.md` is fixed from the start.
