//! Storing messages: each gets its `redis_message_id` and, when delayed, its `eta` and the
//! delay queue; then one script call (`lua/enqueue.lua`) stores up to [`PER_CALL`] of them,
//! whatever their queues. Single enqueues from concurrent tasks share those calls (see
//! [`coalesce`](super::coalesce)); a batch makes its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::coalesce::Coalescer;
use super::conn::evalsha;
use super::{checked_queue, scripts, Shared};
use crate::broker::eta_for;
use crate::error::{Error, Result};
use crate::message::{delay_queue, new_message_id, Message};

/// Most messages in one script call: bounds the time Redis spends in it.
const PER_CALL: usize = 1000;

/// A message ready to store: its list (a queue or a `.DQ`), id and payload.
pub(crate) struct Prepared {
    queue: String,
    id: String,
    payload: Vec<u8>,
}

/// The coalescer of a broker's single enqueues. Errors are shared by a call's messages.
pub(crate) type Enqueues = Coalescer<Prepared, Arc<Error>>;

pub(crate) fn coalescer() -> Enqueues {
    Coalescer::new(PER_CALL, || {
        Arc::new(Error::Broker(
            "the enqueue was dropped unsent: its runtime shut down".into(),
        ))
    })
}

/// Stores `messages` (with `delay`, in the delay queue) and returns them as stored.
pub(crate) async fn enqueue(
    shared: &Arc<Shared>,
    messages: Vec<Message>,
    delay: Option<Duration>,
) -> Result<Vec<Message>> {
    shared.start()?;
    let eta = match (delay, messages.first()) {
        (Some(delay), Some(first)) => Some(eta_for(first, delay)?),
        _ => None,
    };
    let mut prepared = Vec::with_capacity(messages.len());
    let mut stored = Vec::with_capacity(messages.len());
    for message in messages {
        let (p, message) = prepare(shared, message, eta)?;
        prepared.push(p);
        stored.push(message);
    }
    if prepared.len() == 1 {
        let owner = shared.clone();
        let flush = move |batch: Arc<[Prepared]>| {
            let shared = owner.clone();
            async move { store(&shared, &batch).await.map_err(Arc::new) }
        };
        let item = prepared.pop().expect("one message");
        shared.enqueues.submit(item, flush).await.map_err(unshare)?;
    } else {
        for chunk in prepared.chunks(PER_CALL) {
            store(shared, chunk).await?;
        }
    }
    Ok(stored)
}

/// Declares the message's queue and gives it its id (and eta and delay queue).
fn prepare(shared: &Shared, mut message: Message, eta: Option<u64>) -> Result<(Prepared, Message)> {
    let queue = checked_queue(&message.queue_name)?.to_owned();
    shared.declare(&queue)?;
    let id = new_message_id();
    message
        .options
        .insert("redis_message_id".into(), id.clone().into());
    message.queue_name = match eta {
        Some(eta) => {
            message.options.insert("eta".into(), eta.into());
            delay_queue(&queue)
        }
        None => queue,
    };
    let prepared = Prepared {
        queue: message.queue_name.clone(),
        id,
        payload: message.encode(),
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
        Error::Connection(text) => Error::Connection(text.clone()),
        Error::OutOfMemory(text) => Error::OutOfMemory(text.clone()),
        Error::Closed => Error::Closed,
        other => Error::Broker(other.to_string()),
    })
}
