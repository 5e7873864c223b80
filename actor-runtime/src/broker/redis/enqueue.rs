//! Storing messages: each gets its `redis_message_id` and, when delayed, its `eta` and the
//! delay queue; then one script call (`lua/enqueue.lua`) stores up to [`PER_CALL`] of them,
//! whatever their queues. Single enqueues from concurrent tasks share those calls (see
//! [`coalesce`](super::coalesce)); a batch makes its own.

use std::collections::HashMap;
use std::sync::Arc;

use super::coalesce::Coalescer;
use super::conn::evalsha;
use super::{scripts, Shared};
use crate::error::{Error, Result};
use crate::message::{canonical_queue, new_message_id, Message};

/// Most messages in one script call: bounds the time Redis spends in it.
const PER_CALL: usize = 1000;

/// Script calls of single enqueues in flight at once: two, so one group of senders
/// prepares while the other's call runs (see [`coalesce`](super::coalesce)).
const CALLS_IN_FLIGHT: usize = 2;

/// A message ready to store: its list (a queue or a `.DQ`), id and payload.
pub(crate) struct Prepared {
    pub(crate) queue: String,
    pub(crate) id: String,
    pub(crate) payload: Vec<u8>,
}

/// The coalescer of a broker's single enqueues. Errors are shared by a call's messages.
pub(crate) type Enqueues = Coalescer<Prepared, Arc<Error>>;

pub(crate) fn coalescer() -> Enqueues {
    Coalescer::new(PER_CALL, CALLS_IN_FLIGHT, || {
        Arc::new(Error::Broker {
            context: "the enqueue was dropped unsent: its runtime shut down".into(),
            source: None,
        })
    })
}

/// Stores `messages`, each in the list its `queue_name` names (a queue, or a delay queue with
/// the message's `eta` set by the broker), and returns them as stored.
pub(crate) async fn enqueue(shared: &Arc<Shared>, messages: Vec<Message>) -> Result<Vec<Message>> {
    if messages.len() == 1 {
        let message = messages.into_iter().next().expect("one message");
        return Ok(vec![enqueue_one(shared, message).await?]);
    }
    shared.start()?;
    let mut prepared = Vec::with_capacity(messages.len());
    let mut stored = Vec::with_capacity(messages.len());
    for message in messages {
        let (p, message) = prepare(shared, message)?;
        prepared.push(p);
        stored.push(message);
    }
    for chunk in prepared.chunks(PER_CALL) {
        store(shared, chunk).await?;
    }
    Ok(stored)
}

/// Stores one message, in one script call shared with whatever other single enqueues are
/// waiting (see [`coalesce`](super::coalesce)).
pub(crate) async fn enqueue_one(shared: &Arc<Shared>, message: Message) -> Result<Message> {
    shared.start()?;
    let (prepared, message) = prepare(shared, message)?;
    let owner = shared.clone();
    let flush = move |batch: Arc<[Prepared]>| {
        let shared = owner.clone();
        async move { store(&shared, &batch).await.map_err(Arc::new) }
    };
    shared
        .enqueues
        .submit(prepared, flush)
        .await
        .map_err(unshare)?;
    Ok(message)
}

/// Declares the message's queue and gives it its id.
pub(crate) fn prepare(shared: &Shared, mut message: Message) -> Result<(Prepared, Message)> {
    shared.declare(canonical_queue(&message.queue_name))?;
    let id = new_message_id();
    message
        .options
        .insert("redis_message_id".into(), id.clone().into());
    let payload = message.encode();
    shared
        .config
        .limits
        .check_enqueue(&message, payload.len())?;
    let prepared = Prepared {
        queue: message.queue_name.clone(),
        id,
        payload,
    };
    Ok((prepared, message))
}

/// One script call storing `batch`, in order, whatever its queues. Safe to repeat: the
/// script skips ids already stored.
async fn store(shared: &Shared, batch: &[Prepared]) -> Result<()> {
    let mut numbers: HashMap<&str, usize> = HashMap::new();
    let mut keys = Vec::new();
    let mut queue_numbers = Vec::with_capacity(batch.len());
    for p in batch {
        let next = numbers.len() + 1;
        let number = *numbers.entry(&p.queue).or_insert_with(|| {
            keys.push(shared.keys.list(&p.queue));
            keys.push(shared.keys.msgs(&p.queue));
            next
        });
        queue_numbers.push(number);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut cmd = evalsha(&scripts::ENQUEUE, &keys);
    for (p, number) in batch.iter().zip(queue_numbers) {
        cmd.arg(number).arg(&p.id).arg(&p.payload);
    }
    let _: i64 = shared.conn.eval("enqueue", &scripts::ENQUEUE, &cmd).await?;
    Ok(())
}

/// A call's error, for one of its callers.
fn unshare(err: Arc<Error>) -> Error {
    Arc::try_unwrap(err).unwrap_or_else(|err| match &*err {
        Error::Connection { context, source } => Error::Connection {
            context: context.clone(),
            source: source.as_ref().map(|s| s.to_string().into()),
        },
        Error::OutOfMemory { context, source } => Error::OutOfMemory {
            context: context.clone(),
            source: source.as_ref().map(|s| s.to_string().into()),
        },
        Error::Closed => Error::Closed,
        other => Error::Broker {
            context: "enqueue".into(),
            source: Some(other.to_string().into()),
        },
    })
}
