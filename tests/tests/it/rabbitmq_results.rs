//! Results, pipelines and group callbacks end to end on the RabbitMQ broker, results and
//! barriers on Redis beside it (as Dramatiq users run them). The actors' queue,
//! `rabbit_results_q`, is this test's alone; it is flushed first and deleted at the end.

use std::sync::Arc;
use std::time::Duration;

use actor_runtime::broker::RedisConfig;
use actor_runtime::composition::{Group, GroupCallbacks, TypedPipeline};
use actor_runtime::rate_limits::RedisRateLimiterBackend;
use actor_runtime::results::{RedisResultBackend, ResultError, Results};
use actor_runtime::{actor, Broker, Worker};
use serde_json::json;

use crate::support::rabbitmq::{broker, cleanup, config};
use crate::support::results::{delete_keys, key, record, recorded};
use crate::support::{namespace, redis_url};

const Q: &str = "rabbit_results_q";
const WAIT: Duration = Duration::from_secs(20);

#[actor(queue_name = "rabbit_results_q", store_results = true)]
async fn rq_mul(x: i64, y: i64) -> i64 {
    x * y
}

#[actor(queue_name = "rabbit_results_q", store_results = true, max_retries = 0)]
async fn rq_refuse(reason: String) -> Result<(), String> {
    Err(reason)
}

#[actor(queue_name = "rabbit_results_q")]
async fn rq_done(key: String) {
    record(&key, json!("done"));
}

fn setup(ns: &str) -> Broker {
    let broker = broker(config());
    let redis = RedisConfig::new(redis_url()).namespace(ns);
    let results = RedisResultBackend::from_config(&redis)
        .unwrap()
        .namespace(format!("{ns}-results"))
        .plain_keys(true);
    broker.middleware().add(Arc::new(Results::new(results)));
    let barriers = RedisRateLimiterBackend::from_config(&redis).unwrap();
    broker.middleware().add(Arc::new(
        GroupCallbacks::new(Arc::new(barriers)).with_barrier_ttl(Duration::from_secs(60)),
    ));
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_pipelines_and_groups_on_the_rabbitmq_broker() {
    let ns = namespace();
    let broker = setup(&ns);
    broker.declare_queue(Q).await.unwrap();
    broker.flush(Q).await.unwrap();
    let worker = Worker::new(broker.clone())
        .threads(4)
        .queues([Q])
        .start()
        .await
        .unwrap();

    let product = rq_mul::message(6, 7)
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(product.get_result(true, WAIT).await.unwrap(), 42);
    let refused = rq_refuse::message("no".into())
        .broker(broker.clone())
        .send()
        .await
        .unwrap();
    assert!(matches!(
        refused.get_result(true, WAIT).await,
        Err(ResultError::Failed { ref message, .. }) if message == "no"
    ));

    // 2 * 3 = 6 -> 10 * 6 = 60 -> 0.5 s later (through .DQ), 2 * 60 = 120
    let chain = TypedPipeline::new(rq_mul::message(2, 3))
        .then(rq_mul::pipe(10))
        .then(rq_mul::pipe(2).delay(Duration::from_millis(500)))
        .broker(broker.clone());
    chain.run().await.unwrap();
    assert_eq!(chain.get_result(true, WAIT).await.unwrap(), 120);

    let k = key();
    let members = Group::new()
        .member(rq_mul::message(1, 1))
        .member(rq_mul::message(2, 2))
        .member(TypedPipeline::new(rq_mul::message(3, 3)).then(rq_mul::pipe(3)))
        .add_completion_callback(rq_done::message(k.clone()))
        .broker(broker.clone());
    members.run().await.unwrap();
    let values: Vec<i64> = members.get_results_as(true, WAIT).await.unwrap();
    assert_eq!(values, [1, 4, 27]);
    crate::support::eventually(WAIT, "the group's completion callback", || async {
        recorded(&k) == vec![json!("done")]
    })
    .await;

    worker.stop().await.unwrap();
    cleanup(&broker, Q).await;
    delete_keys(&format!("{ns}-results")).await;
}
