//! The worker: consumes queues and runs actors.

/// Runs actors (placeholder while the worker lands).
#[derive(Debug)]
pub struct Worker;
