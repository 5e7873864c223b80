//! Uniqueness keys in Redis: `{ns}:__unique__.{key}` holds the holder's message id, with the
//! key's bound as its TTL; claimed together with the message's store by one script call
//! (`lua/unique_enqueue.lua`), released by compare-and-delete (`lua/unique_release.lua`).

use async_trait::async_trait;

use super::conn::evalsha;
use super::enqueue::prepare;
use super::{scripts, RedisBackend};
use crate::broker::{Claim, Unique, UniqueKeys};
use crate::error::Result;
use crate::message::Message;

#[async_trait]
impl UniqueKeys for RedisBackend {
    async fn enqueue_unique(
        &self,
        message: Message,
        unique: &Unique,
        renew: bool,
    ) -> Result<Claim> {
        let shared = &self.shared;
        shared.start()?;
        let (prepared, message) = prepare(shared, message)?;
        let key = shared.keys.unique(&unique.key);
        let list = shared.keys.list(&prepared.queue);
        let msgs = shared.keys.msgs(&prepared.queue);
        let mut cmd = evalsha(&scripts::UNIQUE_ENQUEUE, &[&key, &list, &msgs]);
        cmd.arg(&message.message_id)
            .arg(unique.ttl.as_millis() as u64)
            .arg(if renew { "1" } else { "0" })
            .arg(&prepared.id)
            .arg(&prepared.payload);
        let holder: Option<String> = shared
            .conn
            .eval("unique enqueue", &scripts::UNIQUE_ENQUEUE, &cmd)
            .await?;
        Ok(match holder {
            Some(holder) => Claim::Held { holder },
            None => Claim::Stored(message),
        })
    }

    async fn release(&self, key: &str, message_id: &str) -> Result<bool> {
        let shared = &self.shared;
        shared.start()?;
        let key = shared.keys.unique(key);
        let mut cmd = evalsha(&scripts::UNIQUE_RELEASE, &[&key]);
        cmd.arg(message_id);
        let released: i64 = shared
            .conn
            .eval("unique release", &scripts::UNIQUE_RELEASE, &cmd)
            .await?;
        Ok(released == 1)
    }

    async fn holder(&self, key: &str) -> Result<Option<String>> {
        let shared = &self.shared;
        shared.start()?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(shared.keys.unique(key));
        shared.conn.query("unique holder", &cmd).await
    }
}
