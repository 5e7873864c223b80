//! Pipelines checked at compile time: each step's last parameter is the previous output.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Pipeline;
use crate::actor::Actor;
use crate::broker::Broker;
use crate::builder::MessageBuilder;
use crate::error::Result;
use crate::message::Message;
use crate::results::ResultError;

/// A step of a [`TypedPipeline`] for actor `A`, missing its last argument, which must be of
/// type `In`: the previous step's output. `#[actor]` generates `my_actor::pipe(..)` taking
/// every argument but the last.
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::actor;
/// use actor_runtime::composition::PipeStep;
///
/// #[actor]
/// async fn store_total(account: u64, total: i64) {}
///
/// // `account` now; `total` will be the previous step's result.
/// let step: PipeStep<store_total, i64> = store_total::pipe(42).delay(Duration::from_secs(1));
/// ```
pub struct PipeStep<A: Actor, In> {
    builder: MessageBuilder<A>,
    input: PhantomData<fn(In)>,
}

impl<A: Actor, In> std::fmt::Debug for PipeStep<A, In> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PipeStep").field(&self.builder).finish()
    }
}

impl<A: Actor, In> PipeStep<A, In> {
    /// The step from a message holding every argument but the last (generated code).
    #[doc(hidden)]
    pub fn new(builder: MessageBuilder<A>) -> Self {
        PipeStep {
            builder,
            input: PhantomData,
        }
    }

    /// Sets a per-message option on the step.
    pub fn option(self, key: &str, value: impl Into<Value>) -> Self {
        PipeStep::new(self.builder.option(key, value))
    }

    /// Waits `delay` before running the step, once the previous one finished.
    pub fn delay(self, delay: Duration) -> Self {
        PipeStep::new(self.builder.delay(delay))
    }
}

/// A pipeline whose steps are checked at compile time: [`then`](Self::then) takes a step
/// whose missing last argument has exactly the type the previous actor returns, so a
/// mismatch does not compile. `A` is the last step's actor; [`get_result`](Self::get_result)
/// returns its output.
///
/// ```
/// use actor_runtime::actor;
/// use actor_runtime::composition::TypedPipeline;
///
/// #[actor]
/// async fn fetch(url: String) -> String {
///     format!("<html>{url}</html>")
/// }
///
/// #[actor]
/// async fn count_words(min_len: usize, body: String) -> usize {
///     body.split_whitespace().filter(|w| w.len() >= min_len).count()
/// }
///
/// let chain = TypedPipeline::new(fetch::message("https://example.com".into()))
///     .then(count_words::pipe(3));
/// ```
///
/// A step expecting another type is a compile error:
///
/// ```compile_fail
/// use actor_runtime::actor;
/// use actor_runtime::composition::TypedPipeline;
///
/// #[actor]
/// async fn fetch(url: String) -> String {
///     url
/// }
///
/// #[actor]
/// async fn double(n: i64) -> i64 {
///     n * 2
/// }
///
/// let chain = TypedPipeline::new(fetch::message("x".into())).then(double::pipe());
/// ```
pub struct TypedPipeline<A: Actor> {
    inner: Pipeline,
    last: PhantomData<fn() -> A>,
}

impl<A: Actor> std::fmt::Debug for TypedPipeline<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<A: Actor> TypedPipeline<A> {
    /// A pipeline starting with this message.
    pub fn new(first: MessageBuilder<A>) -> Self {
        let (message, delay, broker) = first.into_parts();
        let mut inner = Pipeline::new().push(message.map(|mut message| {
            if let Some(delay) = delay {
                super::set_delay(&mut message, delay);
            }
            message
        }));
        if let Some(broker) = broker {
            inner = inner.broker(broker);
        }
        TypedPipeline {
            inner,
            last: PhantomData,
        }
    }

    /// Appends a step that receives this pipeline's output as its last argument.
    pub fn then<B: Actor>(self, step: PipeStep<B, A::Output>) -> TypedPipeline<B> {
        TypedPipeline {
            inner: self.inner.then(step.builder),
            last: PhantomData,
        }
    }

    /// Appends a step that does not receive the previous output (`pipe_ignore`).
    pub fn then_ignore<B: Actor>(self, step: MessageBuilder<B>) -> TypedPipeline<B> {
        TypedPipeline {
            inner: self.inner.then_ignore(step),
            last: PhantomData,
        }
    }

    /// Sends through `broker` instead of the global one.
    pub fn broker(self, broker: Broker) -> Self {
        TypedPipeline {
            inner: self.inner.broker(broker),
            last: PhantomData,
        }
    }

    /// The untyped pipeline.
    pub fn untyped(&self) -> &Pipeline {
        &self.inner
    }

    /// The messages as they go on the wire.
    pub fn messages(&self) -> Result<Vec<Message>> {
        self.inner.messages()
    }

    /// Enqueues the first step.
    pub async fn run(&self) -> Result<()> {
        self.inner.run().await
    }

    /// Every step's result, untyped, waiting at most `timeout` in all.
    pub async fn get_results(
        &self,
        block: bool,
        timeout: Duration,
    ) -> Result<Vec<Value>, ResultError> {
        self.inner.get_results(block, timeout).await
    }
}

impl<A: Actor> TypedPipeline<A>
where
    A::Output: DeserializeOwned,
{
    /// The last step's result.
    pub async fn get_result(
        &self,
        block: bool,
        timeout: Duration,
    ) -> Result<A::Output, ResultError> {
        let value = self.inner.get_result(block, timeout).await?;
        let last = self.inner.steps().last().ok_or(ResultError::NoBackend)?;
        crate::results::decode_value(last, value)
    }
}

impl<A: Actor> From<TypedPipeline<A>> for Pipeline {
    fn from(typed: TypedPipeline<A>) -> Pipeline {
        typed.inner
    }
}
