//! What an operator's view of a broker needs beyond counts: paging through a queue's
//! messages ([`Inspect`]), pausing consumption ([`Pause`]) and the recent activity of the
//! workers ([`Activity`]). A backend offers each where it can; the dashboard says what a
//! broker cannot show instead of faking it.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::error::Result;
use crate::message::Message;

/// Which of a queue's messages to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Waiting to be fetched, next first.
    Ready,
    /// Waiting for their eta in the delay queue (including those a worker holds until due).
    Delayed,
    /// Dead-lettered, oldest first.
    Dead,
}

impl MessageState {
    /// `"ready"`, `"delayed"` or `"dead"`.
    ///
    /// ```
    /// use actor_runtime::broker::MessageState;
    /// assert_eq!(MessageState::Dead.as_str(), "dead");
    /// assert_eq!("delayed".parse::<MessageState>(), Ok(MessageState::Delayed));
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Ready => "ready",
            MessageState::Delayed => "delayed",
            MessageState::Dead => "dead",
        }
    }
}

impl std::str::FromStr for MessageState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "ready" => Ok(MessageState::Ready),
            "delayed" => Ok(MessageState::Delayed),
            "dead" => Ok(MessageState::Dead),
            other => Err(format!(
                "unknown message state `{other}` (ready, delayed, dead)"
            )),
        }
    }
}

/// One message as [`Inspect::messages`] lists it.
#[derive(Clone, Debug)]
pub struct ListedMessage {
    /// The broker's id for this copy (what [`Inspect::delete`] and
    /// [`DeadLetters::requeue`](super::DeadLetters::requeue) take).
    pub id: String,
    /// The message, or why it could not be read.
    pub message: std::result::Result<Message, String>,
    /// When it is due (delayed messages), ms since the epoch.
    pub due_at: Option<u64>,
    /// When it was dead-lettered (dead letters), ms since the epoch.
    pub dead_at: Option<u64>,
    /// Why it was dead-lettered, where the broker keeps it.
    pub reason: Option<String>,
}

/// A page of [`Inspect::messages`]: the messages, and where the next page starts.
#[derive(Clone, Debug, Default)]
pub struct MessagePage {
    /// At most the page size asked for.
    pub items: Vec<ListedMessage>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

/// A backend whose queues can be read without consuming them ([`Backend::inspect`]).
///
/// Pages cost the page, never the queue: on Redis a page of ready messages is one `LRANGE`
/// and one `HMGET`, of dead letters a `ZRANGE` and `HMGET`s, of delayed ones an `HSCAN`
/// step.
///
/// [`Backend::inspect`]: super::Backend::inspect
///
/// ```
/// use actor_runtime::broker::{MessageState, StubBackend, Backend};
/// use actor_runtime::Message;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let backend = StubBackend::new();
/// backend.enqueue(vec![Message::new("default", "noop", vec![]); 3]).await.unwrap();
/// let inspect = backend.inspect().unwrap();
/// let page = inspect.messages("default", MessageState::Ready, None, 2).await.unwrap();
/// assert_eq!(page.items.len(), 2);
/// let rest = inspect.messages("default", MessageState::Ready, page.next.as_deref(), 2).await.unwrap();
/// assert_eq!((rest.items.len(), rest.next), (1, None));
/// # });
/// ```
#[async_trait]
pub trait Inspect: Send + Sync {
    /// Up to `limit` messages of `queue` in `state`, from `cursor` (`None`: the first page).
    /// A cursor is opaque; one the backend did not make is refused with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument). Delayed messages come in
    /// storage order, not by due time.
    async fn messages(
        &self,
        queue: &str,
        state: MessageState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MessagePage>;

    /// Every queue that holds messages (ready, delayed or dead) or was declared, canonical
    /// names, sorted: also those of producers and workers in other processes.
    async fn queue_names(&self) -> Result<Vec<String>>;

    /// Deletes the messages of `queue` in `state` with these broker ids, if they are still
    /// there (a ready message a worker fetched meanwhile is left alone); returns how many.
    async fn delete(&self, queue: &str, state: MessageState, ids: &[String]) -> Result<usize>;

    /// The recent per-minute counts the workers reported, oldest first, for the minutes
    /// since `since_ms` (ms since the epoch).
    async fn activity(&self, since_ms: u64) -> Result<Vec<ActivityMinute>>;
}

/// A backend that stores which queues are paused ([`Backend::pause`]): our workers stop
/// fetching from a paused queue within about a second (messages already fetched finish).
/// Python Dramatiq workers do not know the flag and keep consuming.
///
/// [`Backend::pause`]: super::Backend::pause
///
/// ```
/// use actor_runtime::broker::{Backend, StubBackend};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let backend = StubBackend::new();
/// let pause = backend.pause().unwrap();
/// pause.set_paused("emails", true).await.unwrap();
/// assert_eq!(pause.paused().await.unwrap(), vec!["emails".to_owned()]);
/// # });
/// ```
#[async_trait]
pub trait Pause: Send + Sync {
    /// The paused queues, sorted.
    async fn paused(&self) -> Result<Vec<String>>;

    /// Pauses (`true`) or resumes `queue`.
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()>;
}

/// What the workers of a broker did in one minute ([`Inspect::activity`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivityMinute {
    /// The minute's start, ms since the epoch.
    pub minute_ms: u64,
    /// Messages processed (acked or dead-lettered).
    pub processed: u64,
    /// Of those, failures (the actor failed: retried or dead-lettered, or never ran).
    pub failed: u64,
}

/// A process's counts of processed and failed messages since they were last reported:
/// workers add to it (one relaxed atomic add per message, no I/O), and the backend reports
/// and resets it with its heartbeat ([`Backend::activity_counter`]).
///
/// [`Backend::activity_counter`]: super::Backend::activity_counter
///
/// ```
/// let counter = actor_runtime::broker::ActivityCounter::default();
/// counter.count(true);
/// counter.count(false);
/// assert_eq!(counter.take(), (2, 1));
/// assert_eq!(counter.take(), (0, 0));
/// ```
#[derive(Debug, Default)]
pub struct ActivityCounter {
    processed: AtomicU64,
    failed: AtomicU64,
}

impl ActivityCounter {
    /// Counts one processed message, and a failure unless `ok`.
    pub fn count(&self, ok: bool) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far, `(processed, failed)`, reset to zero.
    pub fn take(&self) -> (u64, u64) {
        (
            self.processed.swap(0, Ordering::Relaxed),
            self.failed.swap(0, Ordering::Relaxed),
        )
    }

    /// Puts counts back that could not be reported.
    pub fn restore(&self, processed: u64, failed: u64) {
        self.processed.fetch_add(processed, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
    }
}

/// The start of the minute of `ms`.
pub(crate) fn minute_of(ms: u64) -> u64 {
    ms - ms % 60_000
}

/// An offset cursor (`"120"`), or [`Error::InvalidArgument`](crate::Error::InvalidArgument).
pub(crate) fn offset_cursor(cursor: Option<&str>) -> Result<usize> {
    match cursor {
        None | Some("") => Ok(0),
        Some(text) => text.parse().map_err(|_| {
            crate::Error::InvalidArgument(format!("`{text}` is not a page cursor of this queue"))
        }),
    }
}
