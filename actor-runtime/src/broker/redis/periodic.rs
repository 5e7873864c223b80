//! The periodic jobs' state in Redis: `{ns}:__periodic__` (HASH schedule name -> last fired
//! tick, ms since the epoch) and `{ns}:__periodic__.ids` (HASH name -> the id of the message
//! that tick sent); a tick is claimed and its message stored by one script call
//! (`lua/periodic_fire.lua`). Ticks and "now" are the Redis server's clock, so scheduler
//! replicas with skewed clocks agree.

use redis::Value;

use super::conn::evalsha;
use super::enqueue::prepare;
use super::{scripts, RedisBackend};
use crate::error::{Error, Result};
use crate::message::Message;

/// What claiming a tick did.
#[derive(Debug)]
pub(crate) enum Fire {
    /// This call claimed it and stored the message (as returned).
    Fired(Message),
    /// Another call claimed it (or a later tick) before.
    Already,
    /// The tick is later than the server's clock: try again at it.
    Early,
}

impl RedisBackend {
    fn periodic_keys(&self) -> (String, String) {
        let state = format!("{}:__periodic__", self.namespace());
        let ids = format!("{state}.ids");
        (state, ids)
    }

    /// The Redis server's clock, ms since the epoch.
    pub(crate) async fn server_time(&self) -> Result<u64> {
        self.shared.start()?;
        let (secs, micros): (u64, u64) =
            self.shared.conn.query("time", &redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// The last fired tick and its message id, per schedule name.
    pub(crate) async fn periodic_last(
        &self,
        names: &[&str],
    ) -> Result<Vec<(Option<u64>, Option<String>)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        self.shared.start()?;
        let (state, ids) = self.periodic_keys();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&state).arg(names);
        pipe.cmd("HMGET").arg(&ids).arg(names);
        let (ticks, messages): (Vec<Option<String>>, Vec<Option<String>>) =
            self.shared.conn.pipe("periodic state", &pipe).await?;
        Ok(ticks
            .into_iter()
            .zip(messages)
            .map(|(tick, id)| (tick.and_then(|t| t.parse().ok()), id))
            .collect())
    }

    /// Claims tick `tick` of schedule `name` and stores `message` (ready to store) if no
    /// replica claimed it or a later tick.
    pub(crate) async fn fire_tick(&self, name: &str, tick: u64, message: Message) -> Result<Fire> {
        let shared = &self.shared;
        shared.start()?;
        let (prepared, message) = prepare(shared, message)?;
        let (state, ids) = self.periodic_keys();
        let list = shared.keys.list(&prepared.queue);
        let msgs = shared.keys.msgs(&prepared.queue);
        let mut cmd = evalsha(&scripts::PERIODIC_FIRE, &[&state, &ids, &list, &msgs]);
        cmd.arg(name)
            .arg(tick)
            .arg(&message.message_id)
            .arg(&prepared.id)
            .arg(&prepared.payload);
        let reply: Vec<Value> = shared
            .conn
            .eval("periodic fire", &scripts::PERIODIC_FIRE, &cmd)
            .await?;
        match reply.first() {
            Some(Value::Int(1)) => Ok(Fire::Fired(message)),
            Some(Value::Int(0)) => Ok(Fire::Already),
            Some(Value::Int(-1)) => Ok(Fire::Early),
            other => Err(Error::Broker {
                context: format!("periodic fire: unexpected reply {other:?}"),
                source: None,
            }),
        }
    }
}
