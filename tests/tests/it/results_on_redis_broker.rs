//! Results, pipelines and group callbacks end to end on the Redis broker, with the Redis
//! results and barrier backends: everything in one Redis, as in production.

use std::sync::Arc;
use std::time::Duration;

use actor_runtime::broker::RedisConfig;
use actor_runtime::composition::{Group, GroupCallbacks, TypedPipeline};
use actor_runtime::rate_limits::RedisRateLimiterBackend;
use actor_runtime::results::{RedisResultBackend, ResultError, Results};
use actor_runtime::{actor, Broker, Worker};
use serde_json::json;

use crate::support::redis::cleanup;
use crate::support::results::{delete_keys, key, record, recorded};
use crate::support::{namespace, redis_url};

const Q: &str = "redis_results_q";
const WAIT: Duration = Duration::from_secs(20);

#[actor(queue_name = "redis_results_q", store_results = true)]
async fn rr_mul(x: i64, y: i64) -> i64 {
    x * y
}

#[actor(queue_name = "redis_results_q", store_results = true, max_retries = 0)]
async fn rr_refuse(reason: String) -> Result<(), String> {
    Err(reason)
}

#[actor(queue_name = "redis_results_q")]
async fn rr_done(key: String) {
    record(&key, json!("done"));
}

async fn setup(ns: &str) -> Broker {
    let config = RedisConfig::new(redis_url()).namespace(ns);
    let broker = Broker::redis(config.clone()).unwrap();
    // Both ride on the broker's connections.
    let results = RedisResultBackend::from_config(&config)
        .unwrap()
        .namespace(format!("{ns}-results"))
        .plain_keys(true);
    broker.middleware().add(Arc::new(Results::new(results)));
    let barriers = RedisRateLimiterBackend::from_config(&config).unwrap();
    broker.middleware().add(Arc::new(
        GroupCallbacks::new(Arc::new(barriers)).with_barrier_ttl(Duration::from_secs(60)),
    ));
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_pipelines_and_groups_on_the_redis_broker() {
    let ns = namespace();
    let broker = setup(&ns).await;
    let worker = Worker::new(broker.clone())
        .threads(4)
        .queues([Q])
        .start()
        .await
        .unwrap();

    let product = rr_mul::message(6, 7)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(product.get_result(true, WAIT).await.unwrap(), 42);
    let refused = rr_refuse::message("no".into())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert!(matches!(
        refused.get_result(true, WAIT).await,
        Err(ResultError::Failed { ref message, .. }) if message == "no"
    ));

    // 2 * 3 = 6 -> 10 * 6 = 60 -> 0.5 s later, 2 * 60 = 120
    let chain = TypedPipeline::new(rr_mul::message(2, 3))
        .then(rr_mul::pipe(10))
        .then(rr_mul::pipe(2).delay(Duration::from_millis(500)))
        .broker(broker.clone());
    chain.run().await.unwrap();
    assert_eq!(chain.get_result(true, WAIT).await.unwrap(), 120);

    let k = key();
    let members = Group::new()
        .member(rr_mul::message(1, 1))
        .member(rr_mul::message(2, 2))
        .member(TypedPipeline::new(rr_mul::message(3, 3)).then(rr_mul::pipe(3)))
        .add_completion_callback(rr_done::message(k.clone()))
        .broker(broker.clone());
    members.run().await.unwrap();
    let values: Vec<i64> = members.get_results_as(true, WAIT).await.unwrap();
    assert_eq!(values, [1, 4, 27]);
    broker.join(Q, Some(WAIT), false).await.unwrap();
    assert_eq!(recorded(&k), vec![json!("done")]);

    worker.stop().await.unwrap();
    cleanup(&broker, 0).await;
    delete_keys(&format!("{ns}-results")).await;
}
