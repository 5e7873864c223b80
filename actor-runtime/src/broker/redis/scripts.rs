//! Our Lua scripts, one per operation (see `lua/`), each loaded once per server and called by
//! SHA (redis-rs' `Script` reloads it on `NOSCRIPT`), and how many ids one call takes.

use std::sync::LazyLock;

use redis::Script;

/// Most ids one fetch script call pops.
pub(super) const FETCH_CHUNK: usize = 1000;
/// Most ids per ack, requeue or promote call.
pub(super) const SCRIPT_CHUNK: usize = 1000;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("lua/", $file))));
    };
}

script!(ENQUEUE, "enqueue.lua");
script!(FETCH, "fetch.lua");
script!(ACK, "ack.lua");
script!(NACK, "nack.lua");
script!(REQUEUE, "requeue.lua");
script!(CLAIM_DELAYED, "claim_delayed.lua");
script!(PROMOTE, "promote.lua");
script!(RECOVER, "recover.lua");
script!(FORGET, "forget.lua");
script!(PURGE_DEAD, "purge_dead.lua");
script!(SWEEP_REASONS, "sweep_reasons.lua");
script!(HEARTBEAT, "heartbeat.lua");
script!(REQUEUE_DEAD, "requeue_dead.lua");
script!(UNIQUE_ENQUEUE, "unique_enqueue.lua");
script!(UNIQUE_RELEASE, "unique_release.lua");
#[cfg(feature = "periodic")]
script!(PERIODIC_FIRE, "periodic_fire.lua");
script!(DELETE_LISTED, "delete_listed.lua");
