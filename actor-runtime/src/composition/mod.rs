//! Composing messages: [`pipeline`]s (each step gets the previous step's result) and
//! [`group`]s (run in parallel, optionally with completion callbacks), encoded on the wire
//! exactly as Dramatiq encodes them, so Python workers can run either end.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use actor_runtime::composition::{group, Pipeline};
//! use actor_runtime::results::{Results, StubResultBackend};
//! use actor_runtime::{actor, Broker, Message, Worker};
//!
//! #[actor(store_results = true)]
//! async fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let broker = Broker::stub();
//! broker.middleware().add(Arc::new(Results::new(StubResultBackend::new())));
//! let worker = Worker::new(broker.clone()).start().await.unwrap();
//!
//! // add(1, 2) -> add(10, 3) -> add(100, 13): each step's result is appended to its args.
//! let sum = Pipeline::new()
//!     .then(add::message(1, 2))
//!     .then(Message::new("default", "add", vec![10.into()]))
//!     .then(Message::new("default", "add", vec![100.into()]))
//!     .broker(broker.clone());
//! sum.run().await.unwrap();
//! assert_eq!(sum.get_result(true, Duration::from_secs(5)).await.unwrap(), 113);
//!
//! let fan_out = group([add::message(1, 1), add::message(2, 2)]).broker(broker.clone());
//! fan_out.run().await.unwrap();
//! let sums = fan_out.get_results(true, Duration::from_secs(5)).await.unwrap();
//! assert_eq!(sums, vec![2, 4]);
//! worker.stop().await.unwrap();
//! # });
//! ```

mod check;
mod group;
mod group_callbacks;
mod pipeline;
mod typed;

use std::time::Duration;

use crate::actor::Actor;
use crate::builder::MessageBuilder;
use crate::error::Result;
use crate::message::Message;

pub use group::{group, Group, GroupMember};
pub use group_callbacks::GroupCallbacks;
pub use pipeline::{pipeline, Pipeline};
pub use typed::{PipeStep, TypedPipeline};

/// Something that becomes one message of a pipeline or group: a [`Message`] or a
/// [`MessageBuilder`] (whose delay becomes the `delay` option, as Dramatiq reads it).
///
/// ```
/// use std::time::Duration;
/// use actor_runtime::composition::IntoMessage;
/// use actor_runtime::actor;
///
/// #[actor]
/// async fn remind(user: u64) {}
///
/// let message = remind::message(7).delay(Duration::from_secs(60)).into_message().unwrap();
/// assert_eq!(message.options["delay"], 60_000);
/// ```
pub trait IntoMessage {
    /// The message.
    fn into_message(self) -> Result<Message>;
}

impl IntoMessage for Message {
    fn into_message(self) -> Result<Message> {
        Ok(self)
    }
}

impl<A: Actor> IntoMessage for MessageBuilder<A> {
    fn into_message(self) -> Result<Message> {
        let (message, delay, _) = self.into_parts();
        let mut message = message?;
        if let Some(delay) = delay {
            set_delay(&mut message, delay);
        }
        Ok(message)
    }
}

pub(crate) fn set_delay(message: &mut Message, delay: Duration) {
    // Saturating, not wrapping: a delay too long for ms in a u64 stays too long, and is
    // refused when the message is enqueued.
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    message.options.insert("delay".into(), ms.into());
}
