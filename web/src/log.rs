//! The step log page's view model (the log viewer).
