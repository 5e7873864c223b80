//! Pipelines: each message's result becomes the last argument of the next.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::{check, IntoMessage};
use crate::broker::{deadline_after, get_broker, Broker};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::results::{results_backend, ResultBackend, ResultError};

/// A chain of messages: when one succeeds, the [`Pipelines`](crate::middleware::Pipelines)
/// middleware enqueues the next with the result appended to its arguments (unless the next
/// message, or the finished actor, sets `pipe_ignore`). Built untyped, from any messages; see
/// [`TypedPipeline`](super::TypedPipeline) for compile-time checked steps.
///
/// On the wire each message carries the whole rest of the chain in `options.pipe_target`
/// (Dramatiq's nesting), and every message id is fixed when the pipeline is built, so the
/// results of every step can be read. Steps whose actor is registered in this process are
/// checked before anything is enqueued: a step that cannot take its arguments plus the
/// previous result is an [`Error::InvalidPipeline`].
///
/// ```
/// use actor_runtime::composition::pipeline;
/// use actor_runtime::Message;
///
/// let steps = pipeline([
///     Message::new("default", "fetch", vec!["https://example.com".into()]),
///     Message::new("default", "word_count", vec![]),
/// ]);
/// let encoded = steps.messages().unwrap();
/// assert_eq!(encoded[0].options["pipe_target"]["message_id"], encoded[1].message_id.as_str());
/// ```
#[derive(Default)]
pub struct Pipeline {
    steps: Vec<Message>,
    /// The first step that could not be built: its position and why.
    error: Option<(usize, Arc<Error>)>,
    broker: Option<Broker>,
}

/// A pipeline of these messages, in order (Dramatiq's `pipeline([...])`).
///
/// ```
/// use actor_runtime::composition::pipeline;
/// use actor_runtime::{actor, Message};
///
/// #[actor]
/// async fn word_count(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// // Steps of one actor fit in an array; mix actors with `Pipeline::new().then(..)`.
/// let steps = pipeline([
///     Message::new("default", "fetch_page", vec!["https://example.com".into()]),
///     Message::new("default", "word_count", vec![]),
/// ]);
/// assert_eq!(steps.steps().len(), 2);
/// ```
pub fn pipeline<I>(steps: I) -> Pipeline
where
    I: IntoIterator,
    I::Item: IntoMessage,
{
    steps.into_iter().fold(Pipeline::new(), Pipeline::then)
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("steps", &self.steps)
            .field("error", &self.error)
            .field("broker", &self.broker.as_ref().map(|b| b.kind()))
            .finish()
    }
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Appends a step. A step that cannot be built (an argument that fails to encode) makes
    /// [`run`](Self::run) fail.
    pub fn then(self, step: impl IntoMessage) -> Self {
        self.push(step.into_message())
    }

    pub(crate) fn push(mut self, step: Result<Message>) -> Self {
        match step {
            Ok(message) => self.steps.push(message),
            Err(err) => {
                let index = self.steps.len();
                self.error.get_or_insert_with(|| (index, Arc::new(err)));
            }
        }
        self
    }

    /// Appends a step whose actor does not receive the previous result (`pipe_ignore`).
    pub fn then_ignore(self, step: impl IntoMessage) -> Self {
        match step.into_message() {
            Ok(mut message) => {
                message.options.insert("pipe_ignore".into(), true.into());
                self.then(message)
            }
            Err(err) => self.push(Err(err)),
        }
    }

    /// Appends every step of `other` (Dramatiq flattens nested pipelines).
    pub fn append(mut self, other: Pipeline) -> Self {
        if let Some((index, err)) = other.error {
            let index = self.steps.len() + index;
            self.error.get_or_insert((index, err));
        }
        self.steps.extend(other.steps);
        self
    }

    /// Sends through `broker` instead of the global one.
    pub fn broker(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The steps as built, without the `pipe_target` chain.
    pub fn steps(&self) -> &[Message] {
        &self.steps
    }

    /// The ids of the steps' messages, in order.
    pub fn message_ids(&self) -> Vec<&str> {
        self.steps.iter().map(|m| m.message_id.as_str()).collect()
    }

    pub(crate) fn steps_mut(&mut self) -> &mut [Message] {
        &mut self.steps
    }

    /// The messages as they go on the wire: each with the rest of the chain nested in its
    /// `pipe_target`, after checking the steps fit together.
    pub fn messages(&self) -> Result<Vec<Message>> {
        if let Some((index, err)) = &self.error {
            return Err(Error::InvalidMember {
                composition: "pipeline step",
                index: *index,
                source: err.clone(),
            });
        }
        if self.steps.is_empty() {
            return Err(Error::EmptyComposition("pipeline"));
        }
        check::check_steps(&self.steps)?;
        let mut messages = self.steps.clone();
        for i in (0..messages.len() - 1).rev() {
            let next = serde_json::to_value(&messages[i + 1]).unwrap_or(Value::Null);
            messages[i].options.insert("pipe_target".into(), next);
        }
        Ok(messages)
    }

    fn target(&self) -> Result<Broker> {
        match &self.broker {
            Some(broker) => Ok(broker.clone()),
            None => get_broker(),
        }
    }

    /// Enqueues the first message (after its `delay` option, if any); the middleware sends
    /// the rest as each step succeeds.
    pub async fn run(&self) -> Result<()> {
        self.run_after(None).await
    }

    /// [`run`](Self::run), no earlier than `delay` from now (or the first message's own
    /// `delay`, whichever is longer).
    pub async fn run_after(&self, delay: Option<Duration>) -> Result<()> {
        let mut messages = self.messages()?;
        let first = messages.swap_remove(0);
        let own = first.option_u64("delay").map(Duration::from_millis);
        let delay = own.max(delay);
        self.target()?.enqueue(first, delay).await?;
        Ok(())
    }

    fn backend(&self) -> Result<Arc<dyn ResultBackend>, ResultError> {
        let broker = self
            .target()
            .map_err(|e| ResultError::Connection(e.to_string()))?;
        results_backend(&broker).ok_or(ResultError::NoBackend)
    }

    /// The last step's result (see [`Enqueued::get_result`](crate::Enqueued::get_result)).
    pub async fn get_result(&self, block: bool, timeout: Duration) -> Result<Value, ResultError> {
        let Some(last) = self.steps.last() else {
            return Err(ResultError::NoBackend);
        };
        self.backend()?.get(last, block, timeout).await
    }

    /// Every step's result, in order, waiting at most `timeout` in all.
    pub async fn get_results(
        &self,
        block: bool,
        timeout: Duration,
    ) -> Result<Vec<Value>, ResultError> {
        let backend = self.backend()?;
        get_all(backend.as_ref(), self.steps.iter(), block, timeout).await
    }

    /// How many steps have a result stored (finished, with `store_results`).
    pub async fn completed_count(&self) -> Result<usize, ResultError> {
        let backend = self.backend()?;
        let mut done = 0;
        for step in &self.steps {
            match backend.get(step, false, Duration::ZERO).await {
                Ok(_) | Err(ResultError::Failed { .. }) => done += 1,
                Err(ResultError::Missing { .. }) => break,
                Err(err) => return Err(err),
            }
        }
        Ok(done)
    }
}

/// Reads the results of `messages` in order with one deadline for all.
pub(crate) async fn get_all<'a>(
    backend: &dyn ResultBackend,
    messages: impl Iterator<Item = &'a Message>,
    block: bool,
    timeout: Duration,
) -> Result<Vec<Value>, ResultError> {
    let deadline = deadline_after(timeout);
    let mut results = Vec::new();
    for message in messages {
        let left = deadline.saturating_duration_since(Instant::now());
        let value = match backend.get(message, block, left).await {
            Err(ResultError::Timeout { message_id, .. }) => {
                return Err(ResultError::Timeout {
                    message_id,
                    timeout,
                })
            }
            other => other?,
        };
        results.push(value);
    }
    Ok(results)
}
