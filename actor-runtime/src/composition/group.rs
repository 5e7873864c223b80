//! Groups: messages (and pipelines) run in parallel, with optional completion callbacks.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::pipeline::get_all;
use super::{GroupCallbacks, IntoMessage, Pipeline};
use crate::broker::{get_broker, Broker};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::rate_limits::Barrier;
use crate::results::{decode_value, results_backend, ResultError};

/// One member of a [`Group`]: a message or a whole pipeline (whose result is its last
/// step's).
///
/// ```
/// use actor_runtime::composition::{pipeline, Group, GroupMember};
/// use actor_runtime::Message;
///
/// let members = Group::new()
///     .member(Message::new("default", "a", vec![]))
///     .member(pipeline([Message::new("default", "b", vec![]), Message::new("default", "c", vec![])]));
/// assert!(matches!(members.members()[1], GroupMember::Pipeline(_)));
/// ```
#[derive(Debug)]
pub enum GroupMember {
    /// A single message.
    Message(Message),
    /// A pipeline, run as a unit.
    Pipeline(Pipeline),
}

impl GroupMember {
    /// The message whose result is the member's: the message, or the pipeline's last step.
    fn last(&self) -> Option<&Message> {
        match self {
            GroupMember::Message(message) => Some(message),
            GroupMember::Pipeline(pipeline) => pipeline.steps().last(),
        }
    }
}

/// Something that can be a member of a group: any message ([`IntoMessage`]) or a pipeline
/// (untyped or typed); see [`GroupMember`].
pub trait IntoGroupMember {
    /// The member.
    fn into_member(self) -> Result<GroupMember>;
}

impl<T: IntoMessage> IntoGroupMember for T {
    fn into_member(self) -> Result<GroupMember> {
        self.into_message().map(GroupMember::Message)
    }
}

impl IntoGroupMember for Pipeline {
    fn into_member(self) -> Result<GroupMember> {
        Ok(GroupMember::Pipeline(self))
    }
}

impl<A: crate::actor::Actor> IntoGroupMember for super::TypedPipeline<A> {
    fn into_member(self) -> Result<GroupMember> {
        Ok(GroupMember::Pipeline(self.into()))
    }
}

/// Messages that run in parallel (Dramatiq's `group`), whose results can be collected with
/// one deadline, and which can enqueue callbacks once every member succeeded.
///
/// Completion callbacks count on a Redis-side [`Barrier`] exactly as Dramatiq does: on `run`
/// a barrier `<uuid>` is created for the number of members, and each member's (for a
/// pipeline, its last step's) message carries `group_completion_uuid` and
/// `group_completion_callbacks`; the [`GroupCallbacks`](super::GroupCallbacks) middleware
/// arrives at the barrier when a member succeeds, and the member that clears it enqueues the
/// callbacks. A member that fails for good means the callbacks never run.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use actor_runtime::composition::{group, GroupCallbacks};
/// use actor_runtime::rate_limits::StubRateLimiterBackend;
/// use actor_runtime::results::{Results, StubResultBackend};
/// use actor_runtime::{actor, Broker, Worker};
///
/// #[actor(store_results = true)]
/// async fn resize(image: String) -> String {
///     format!("{image}.small")
/// }
///
/// #[actor]
/// async fn notify_done(album: u64) {
///     println!("album {album} resized");
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
/// broker.middleware().add(Arc::new(Results::new(StubResultBackend::new())));
/// broker.middleware().add(Arc::new(GroupCallbacks::new(Arc::new(StubRateLimiterBackend::new()))));
/// let worker = Worker::new(broker.clone()).start().await.unwrap();
///
/// let resizes = group([resize::message("a.png".into()), resize::message("b.png".into())])
///     .add_completion_callback(notify_done::message(7))
///     .broker(broker.clone());
/// resizes.run().await.unwrap();
/// let names: Vec<String> = resizes.get_results_as(true, Duration::from_secs(5)).await.unwrap();
/// assert_eq!(names, ["a.png.small", "b.png.small"]);
/// worker.stop().await.unwrap();
/// # });
/// ```
#[derive(Default)]
pub struct Group {
    members: Vec<GroupMember>,
    callbacks: Vec<Message>,
    /// The first member or callback that could not be built: its position and why.
    error: Option<(&'static str, usize, Arc<Error>)>,
    broker: Option<Broker>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("members", &self.members)
            .field("callbacks", &self.callbacks)
            .field("error", &self.error)
            .finish()
    }
}

/// A group of these members (Dramatiq's `group([...])`).
///
/// ```
/// use actor_runtime::composition::group;
/// use actor_runtime::actor;
///
/// #[actor(store_results = true)]
/// async fn resize(image: String) -> String {
///     format!("{image}.small")
/// }
///
/// let images = ["a.png", "b.png", "c.png"];
/// let resizes = group(images.iter().map(|i| resize::message(i.to_string())));
/// assert_eq!(resizes.members().len(), 3);
/// ```
pub fn group<I>(members: I) -> Group
where
    I: IntoIterator,
    I::Item: IntoGroupMember,
{
    members.into_iter().fold(Group::default(), Group::member)
}

impl Group {
    /// An empty group.
    pub fn new() -> Self {
        Group::default()
    }

    /// Adds a member.
    pub fn member(mut self, member: impl IntoGroupMember) -> Self {
        match member.into_member() {
            Ok(member) => self.members.push(member),
            Err(err) => {
                let index = self.members.len();
                self.error
                    .get_or_insert_with(|| ("group member", index, Arc::new(err)));
            }
        }
        self
    }

    /// Enqueues `callback` once every member has succeeded (needs the
    /// [`GroupCallbacks`](super::GroupCallbacks) middleware on the broker).
    pub fn add_completion_callback(mut self, callback: impl IntoMessage) -> Self {
        match callback.into_message() {
            Ok(message) => self.callbacks.push(message),
            Err(err) => {
                let index = self.callbacks.len();
                let what = "group completion callback";
                self.error
                    .get_or_insert_with(|| (what, index, Arc::new(err)));
            }
        }
        self
    }

    /// Sends through `broker` instead of the global one.
    pub fn broker(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The members.
    pub fn members(&self) -> &[GroupMember] {
        &self.members
    }

    fn target(&self) -> Result<Broker> {
        match &self.broker {
            Some(broker) => Ok(broker.clone()),
            None => get_broker(),
        }
    }

    /// Enqueues every member (the first step of each pipeline).
    pub async fn run(&self) -> Result<()> {
        self.run_after(None).await
    }

    /// [`run`](Self::run), no earlier than `delay` from now.
    pub async fn run_after(&self, delay: Option<Duration>) -> Result<()> {
        if let Some((composition, index, err)) = &self.error {
            return Err(Error::InvalidMember {
                composition,
                index: *index,
                source: err.clone(),
            });
        }
        let broker = self.target()?;
        let mut members: Vec<Pipeline> = self
            .members
            .iter()
            .map(|member| match member {
                GroupMember::Message(message) => Pipeline::new().then(message.clone()),
                GroupMember::Pipeline(pipeline) => pipeline
                    .steps()
                    .iter()
                    .cloned()
                    .fold(Pipeline::new(), Pipeline::then),
            })
            .collect();
        if !self.callbacks.is_empty() {
            self.arm_barrier(&broker, &mut members).await?;
        }
        // Check every member before enqueueing any.
        let mut firsts = Vec::with_capacity(members.len());
        for member in &members {
            let mut messages = member.messages()?;
            firsts.push(messages.swap_remove(0));
        }
        for first in firsts {
            let own = first.option_u64("delay").map(Duration::from_millis);
            broker.enqueue(first, own.max(delay)).await?;
        }
        Ok(())
    }

    /// Creates the barrier and marks each member's last message with it.
    async fn arm_barrier(&self, broker: &Broker, members: &mut [Pipeline]) -> Result<()> {
        let Some(callbacks) = broker.find::<GroupCallbacks>() else {
            return Err(Error::MissingMiddleware {
                middleware: "GroupCallbacks",
                needed_for: "group completion callbacks",
            });
        };
        let uuid = uuid::Uuid::new_v4().to_string();
        Barrier::new(callbacks.backend().clone(), uuid.as_str())
            .ttl(callbacks.barrier_ttl())
            .create(members.len() as u32)
            .await
            .map_err(|err| Error::Barrier(Box::new(err)))?;
        let encoded: Vec<Value> = self
            .callbacks
            .iter()
            .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
            .collect();
        for member in members {
            if let Some(last) = member.steps_mut().last_mut() {
                last.options
                    .insert("group_completion_uuid".into(), uuid.clone().into());
                last.options.insert(
                    "group_completion_callbacks".into(),
                    Value::Array(encoded.clone()),
                );
            }
        }
        Ok(())
    }

    /// Every member's result, in order, waiting at most `timeout` in all.
    pub async fn get_results(
        &self,
        block: bool,
        timeout: Duration,
    ) -> Result<Vec<Value>, ResultError> {
        let broker = self
            .target()
            .map_err(|e| ResultError::Connection(e.to_string()))?;
        let backend = results_backend(&broker).ok_or(ResultError::NoBackend)?;
        get_all(
            backend.as_ref(),
            self.members.iter().filter_map(GroupMember::last),
            block,
            timeout,
        )
        .await
    }

    /// [`get_results`](Self::get_results), each read as `T`.
    pub async fn get_results_as<T: DeserializeOwned>(
        &self,
        block: bool,
        timeout: Duration,
    ) -> Result<Vec<T>, ResultError> {
        let values = self.get_results(block, timeout).await?;
        self.members
            .iter()
            .filter_map(GroupMember::last)
            .zip(values)
            .map(|(message, value)| decode_value(message, value))
            .collect()
    }

    /// Waits until every member has a result (or one failed for good: its error), at most
    /// `timeout` in all.
    pub async fn wait(&self, timeout: Duration) -> Result<(), ResultError> {
        self.get_results(true, timeout).await.map(drop)
    }

    /// How many members have finished (with a stored result or failure).
    pub async fn completed_count(&self) -> Result<usize, ResultError> {
        let broker = self
            .target()
            .map_err(|e| ResultError::Connection(e.to_string()))?;
        let backend = results_backend(&broker).ok_or(ResultError::NoBackend)?;
        let mut done = 0;
        for message in self.members.iter().filter_map(GroupMember::last) {
            match backend.get(message, false, Duration::ZERO).await {
                Ok(_) | Err(ResultError::Failed { .. }) => done += 1,
                Err(ResultError::Missing { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(done)
    }
}
