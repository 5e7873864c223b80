//! Building and sending messages: `my_actor::message(..)` and `my_actor::send(..)`.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::actor::Actor;
use crate::broker::{get_broker, Broker};
use crate::error::{Error, Result};
use crate::message::Message;

/// A message to actor `A` being prepared: set per-message options, then [`send`](Self::send).
///
/// `#[actor]` generates `my_actor::message(args..)` returning this, and
/// `my_actor::send(args..)` as a shorthand for `message(args..).send()`.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use actor_runtime::{actor, Broker};
///
/// #[actor]
/// async fn greet(name: String) {
///     println!("hello {name}");
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
/// let sent = greet::message("Ada".into())
///     .delay(Duration::from_secs(60))
///     .priority(-1)
///     .broker(broker.clone())
///     .send()
///     .await
///     .unwrap();
/// assert_eq!(sent.queue_name, "default.DQ");
/// assert_eq!(broker.stats("default").await.unwrap().delayed, 1);
/// # });
/// ```
pub struct MessageBuilder<A: Actor> {
    args: std::result::Result<Vec<Value>, serde_json::Error>,
    kwargs: Map<String, Value>,
    options: Map<String, Value>,
    delay: Option<Duration>,
    broker: Option<Broker>,
    actor: PhantomData<fn() -> A>,
}

impl<A: Actor> fmt::Debug for MessageBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBuilder")
            .field("actor", &A::NAME)
            .field("args", &self.args)
            .field("options", &self.options)
            .field("delay", &self.delay)
            .finish()
    }
}

impl<A: Actor> MessageBuilder<A> {
    /// A message with these positional arguments (as encoded by the generated code).
    #[doc(hidden)]
    pub fn new(args: std::result::Result<Vec<Value>, serde_json::Error>) -> Self {
        MessageBuilder {
            args,
            kwargs: Map::new(),
            options: Map::new(),
            delay: None,
            broker: None,
            actor: PhantomData,
        }
    }

    /// Run no earlier than `delay` from now (through the delay queue, as Dramatiq does).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Order among the messages a worker has prefetched: lower runs first. Overrides the
    /// actor's `priority`.
    pub fn priority(self, priority: i32) -> Self {
        self.option("priority", priority)
    }

    /// Sets any option (`max_retries`, `time_limit`, `on_success`, ...); per-message options
    /// override the actor's.
    pub fn option(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.options.insert(key.to_owned(), value.into());
        self
    }

    /// At most one message with this key may wait or run at a time: while another holds it,
    /// [`send`](Self::send) stores nothing and returns the holder's id
    /// ([`Enqueued::is_duplicate`]). Overrides the actor's `unique_key`. See
    /// [`unique`](crate::unique).
    ///
    /// ```
    /// use actor_runtime::{actor, Broker};
    ///
    /// #[actor]
    /// async fn rebuild_index(tenant: u64) {}
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let broker = Broker::stub();
    /// let send = || rebuild_index::message(7).unique_key("index:7").broker(broker.clone()).send();
    /// let first = send().await.unwrap();
    /// let second = send().await.unwrap();
    /// assert!(second.is_duplicate());
    /// assert_eq!(second.message_id, first.message_id);
    /// # });
    /// ```
    pub fn unique_key(self, key: impl Into<String>) -> Self {
        self.option(crate::broker::UNIQUE_KEY, key.into())
    }

    /// How long the uniqueness key is held at most (so a crashed worker cannot lock it
    /// forever). Overrides the actor's `unique_ttl`; the default is
    /// [`DEFAULT_UNIQUE_TTL`](crate::unique::DEFAULT_UNIQUE_TTL).
    pub fn unique_ttl(self, ttl: Duration) -> Self {
        self.option(crate::broker::UNIQUE_TTL, ttl.as_millis() as u64)
    }

    /// The uniqueness key the actor's `unique_key` function computed (generated code).
    #[doc(hidden)]
    pub fn default_unique_key(mut self, key: impl fmt::Display) -> Self {
        self.options
            .entry(crate::broker::UNIQUE_KEY)
            .or_insert_with(|| key.to_string().into());
        self
    }

    /// Send through `broker` instead of the global one.
    pub fn broker(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The message, not yet enqueued.
    pub fn build(self) -> Result<Message> {
        let args = self.args.map_err(|source| Error::Encode {
            actor: A::NAME,
            source,
        })?;
        let mut message = Message::new(A::QUEUE, A::NAME, args);
        message.kwargs = self.kwargs;
        message.options = self.options;
        if let Some(ttl) = A::OPTIONS.unique_ttl {
            if message.options.contains_key(crate::broker::UNIQUE_KEY) {
                message
                    .options
                    .entry(crate::broker::UNIQUE_TTL)
                    .or_insert_with(|| ttl.into());
            }
        }
        Ok(message)
    }

    /// The message and its delay, for composition (pipelines carry the delay as the `delay`
    /// option, as Dramatiq does).
    pub(crate) fn into_parts(self) -> (Result<Message>, Option<Duration>, Option<Broker>) {
        let delay = self.delay;
        let broker = self.broker.clone();
        (self.build(), delay, broker)
    }

    /// Enqueues the message; returns it as stored, with its id.
    pub async fn send(mut self) -> Result<Enqueued<A>> {
        let broker = match self.broker.take() {
            Some(broker) => broker,
            None => get_broker()?,
        };
        let delay = self.delay;
        let message = self.build()?;
        let sent = broker.send_message(message, delay).await?;
        Ok(Enqueued {
            message: sent.message,
            broker,
            duplicate: sent.duplicate,
            actor: PhantomData,
        })
    }
}

/// A message that was enqueued for actor `A`; derefs to the [`Message`].
pub struct Enqueued<A: Actor> {
    message: Message,
    broker: Broker,
    duplicate: bool,
    actor: PhantomData<fn() -> A>,
}

impl<A: Actor> Enqueued<A> {
    pub(crate) fn from_parts(message: Message, broker: Broker) -> Self {
        Enqueued {
            message,
            broker,
            duplicate: false,
            actor: PhantomData,
        }
    }

    /// Whether another message held this one's uniqueness key, so nothing was enqueued and
    /// this is that message's id (see [`unique`](crate::unique)).
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    /// The message as stored.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message as stored, by value.
    pub fn into_message(self) -> Message {
        self.message
    }

    /// The broker it was sent to.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

impl<A: Actor> Deref for Enqueued<A> {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl<A: Actor> fmt::Debug for Enqueued<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Enqueued").field(&self.message).finish()
    }
}
