//! Queue declarations equivalent to Python Dramatiq's, argument for argument and type for
//! type (RabbitMQ refuses a redeclaration whose arguments differ): `q` and `q.DQ` durable,
//! dead-lettering to `q.XQ` through the default exchange, with `x-max-priority` when
//! configured; `q.XQ` durable with `x-message-ttl`.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use super::config::{QueueType, RabbitmqConfig};
use super::Shared;
use crate::error::{Error, Result};

/// `q.DQ`.
pub(crate) fn dq(queue: &str) -> String {
    format!("{queue}.DQ")
}

/// `q.XQ`.
pub(crate) fn xq(queue: &str) -> String {
    format!("{queue}.XQ")
}

fn queue_type(config: &RabbitmqConfig, args: &mut FieldTable) {
    if config.queue_type == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
}

/// The arguments of `q` and `q.DQ`. Integers go as signed 32-bit (`I`), strings as long
/// strings (`S`), as pika encodes Python's.
pub(crate) fn queue_arguments(config: &RabbitmqConfig, queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(xq(queue).into()),
    );
    if let Some(max) = config.max_priority {
        args.insert("x-max-priority".into(), AMQPValue::LongInt(i32::from(max)));
    }
    queue_type(config, &mut args);
    args
}

/// The arguments of `q.XQ`.
pub(crate) fn dead_queue_arguments(config: &RabbitmqConfig) -> FieldTable {
    let mut args = FieldTable::default();
    let ttl = i32::try_from(config.dead_message_ttl.as_millis()).unwrap_or(i32::MAX);
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
    queue_type(config, &mut args);
    args
}

/// Declares `queue`, `queue.DQ` and `queue.XQ` on a channel of their own (a refused
/// declaration closes its channel).
pub(crate) async fn declare(shared: &Shared, queue: &str) -> Result<()> {
    let (channel, generation) = shared.conn.channel().await?;
    let result = declare_on(shared, &channel, queue).await;
    let _ = channel.close(200, "declared".into()).await;
    if let Err(Error::Connection { .. }) = &result {
        shared.conn.lost(generation).await;
    }
    result
}

async fn declare_on(shared: &Shared, channel: &Channel, queue: &str) -> Result<()> {
    let config = &shared.config;
    let durable = QueueDeclareOptions::durable();
    let args = queue_arguments(config, queue);
    for name in [queue.to_owned(), dq(queue)] {
        channel
            .queue_declare(name.as_str().into(), durable, args.clone())
            .await
            .map_err(|err| shared.conn.error(&format!("declaring queue `{name}`"), err))?;
    }
    let name = xq(queue);
    channel
        .queue_declare(name.as_str().into(), durable, dead_queue_arguments(config))
        .await
        .map_err(|err| shared.conn.error(&format!("declaring queue `{name}`"), err))?;
    Ok(())
}

/// Ready messages in `name`, 0 when it does not exist (a passive declaration, on a
/// channel of its own: a missing queue closes it).
pub(crate) async fn message_count(shared: &Shared, name: &str) -> Result<u64> {
    let (channel, generation) = shared.conn.channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let result = channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await;
    match result {
        Ok(queue) => {
            let _ = channel.close(200, "counted".into()).await;
            Ok(u64::from(queue.message_count()))
        }
        Err(err) if err.is_amqp_soft_error() => Ok(0),
        Err(err) => {
            shared.conn.lost(generation).await;
            Err(shared.conn.error(&format!("counting queue `{name}`"), err))
        }
    }
}
