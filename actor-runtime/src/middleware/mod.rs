//! Middleware: hooks around enqueueing and processing messages, as in Dramatiq.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::message::Message;

/// Hooks the broker and worker call around every message. Every hook defaults to doing
/// nothing, so a middleware implements only what it needs.
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::{Message, Middleware, Result};
///
/// struct Tag;
///
/// #[actor_runtime::async_trait]
/// impl Middleware for Tag {
///     async fn before_enqueue(&self, message: &mut Message, _delay: Option<Duration>) -> Result<()> {
///         message.options.insert("tenant".into(), "acme".into());
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Called before a message is stored; may change it or refuse it with an error.
    async fn before_enqueue(&self, message: &mut Message, delay: Option<Duration>) -> Result<()> {
        let _ = (message, delay);
        Ok(())
    }

    /// Called after a message was stored.
    async fn after_enqueue(&self, message: &Message, delay: Option<Duration>) {
        let _ = (message, delay);
    }
}

/// The ordered middleware of a broker.
#[derive(Default)]
pub struct Middlewares {
    stack: RwLock<Arc<Vec<Arc<dyn Middleware>>>>,
}

impl std::fmt::Debug for Middlewares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Middlewares({})", self.snapshot().len())
    }
}

impl Middlewares {
    /// Appends a middleware: it runs after those added before it.
    pub fn add(&self, middleware: Arc<dyn Middleware>) {
        let mut stack = self.stack.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::clone(&stack);
        next.push(middleware);
        *stack = Arc::new(next);
    }

    /// The current stack, cheap to clone and stable while hooks run.
    pub fn snapshot(&self) -> Arc<Vec<Arc<dyn Middleware>>> {
        self.stack.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
