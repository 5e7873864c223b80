//! Pipelines and groups on the stub broker (group barriers in memory and on Redis).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actor_runtime::composition::{group, pipeline, Group, GroupCallbacks, Pipeline, TypedPipeline};
use actor_runtime::rate_limits::{
    RateLimiterBackend, RedisRateLimiterBackend, StubRateLimiterBackend,
};
use actor_runtime::results::{ResultError, Results, StubResultBackend};
use actor_runtime::{actor, Broker, Error, Message, Worker};
use serde_json::json;

use crate::support::redis_url;
use crate::support::results::{key, record, recorded};

const Q: &str = "compose_q";
const WAIT: Duration = Duration::from_secs(10);

#[actor(queue_name = "compose_q", store_results = true)]
async fn c_add(x: i64, y: i64) -> i64 {
    x + y
}

#[actor(queue_name = "compose_q", store_results = true)]
async fn c_describe(prefix: String, n: i64) -> String {
    format!("{prefix}{n}")
}

#[actor(queue_name = "compose_q", store_results = true)]
async fn c_constant(key: String) -> i64 {
    record(&key, json!("constant ran"));
    5
}

#[actor(queue_name = "compose_q", store_results = true)]
async fn c_slow(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

#[actor(queue_name = "compose_q", store_results = true, max_retries = 0)]
async fn c_fail(x: i64) -> Result<i64, String> {
    Err(format!("refusing {x}"))
}

#[actor(queue_name = "compose_q")]
async fn c_group_done(key: String) {
    record(&key, json!("group done"));
}

fn broker() -> Broker {
    let broker = Broker::stub();
    broker
        .middleware()
        .add(Arc::new(Results::new(StubResultBackend::new())));
    broker
}

fn with_group_callbacks(backend: Arc<dyn RateLimiterBackend>) -> Broker {
    let broker = broker();
    broker.middleware().add(Arc::new(
        GroupCallbacks::new(backend).with_barrier_ttl(Duration::from_secs(60)),
    ));
    broker
}

async fn worker(broker: &Broker) -> actor_runtime::worker::RunningWorker {
    Worker::new(broker.clone())
        .threads(4)
        .queues([Q])
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn typed_pipeline_feeds_each_result_to_the_next_step() {
    let broker = broker();
    let w = worker(&broker).await;
    // c_add(1, 2) = 3 -> c_add(10, 3) = 13 -> c_describe("n=", 13)
    let chain = TypedPipeline::new(c_add::message(1, 2))
        .then(c_add::pipe(10))
        .then(c_describe::pipe("n=".into()))
        .broker(broker.clone());
    chain.run().await.unwrap();
    let last: String = chain.get_result(true, WAIT).await.unwrap();
    assert_eq!(last, "n=13");
    assert_eq!(
        chain.get_results(true, WAIT).await.unwrap(),
        vec![json!(3), json!(13), json!("n=13")]
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn pipe_ignore_steps_do_not_receive_the_result() {
    let broker = broker();
    let w = worker(&broker).await;
    let k = key();
    let chain = Pipeline::new()
        .then(c_add::message(1, 2))
        .then_ignore(c_constant::message(k.clone()))
        .then(Message::new(Q, "c_add", vec![json!(100)]))
        .broker(broker.clone());
    assert_eq!(chain.messages().unwrap()[1].options["pipe_ignore"], true);
    chain.run().await.unwrap();
    assert_eq!(chain.get_result(true, WAIT).await.unwrap(), json!(105));
    assert_eq!(recorded(&k), vec![json!("constant ran")]);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn pipeline_steps_honour_their_delay() {
    let broker = broker();
    let w = worker(&broker).await;
    let chain = TypedPipeline::new(c_add::message(1, 1))
        .then(c_add::pipe(1).delay(Duration::from_millis(300)))
        .broker(broker.clone());
    let wire = chain.messages().unwrap();
    assert_eq!(wire[0].options["pipe_target"]["options"]["delay"], 300);
    let started = Instant::now();
    chain.run().await.unwrap();
    assert_eq!(chain.get_result(true, WAIT).await.unwrap(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn pipeline_nests_the_rest_of_the_chain_in_pipe_target() {
    let steps = pipeline([
        c_add::message(1, 2).build().unwrap(),
        Message::new(Q, "c_add", vec![json!(1)]),
        Message::new(Q, "c_describe", vec![json!("=")]),
    ]);
    let wire = steps.messages().unwrap();
    let ids = steps.message_ids();
    assert_eq!(wire[0].options["pipe_target"]["message_id"], ids[1]);
    assert_eq!(
        wire[0].options["pipe_target"]["options"]["pipe_target"]["message_id"],
        ids[2]
    );
    assert_eq!(
        wire[1].options["pipe_target"],
        serde_json::to_value(&wire[2]).unwrap()
    );
    assert!(wire[2].options.get("pipe_target").is_none());
    // Every id is fixed when the pipeline is built.
    assert_eq!(steps.messages().unwrap()[2].message_id, ids[2]);
    // Each nested message decodes as a plain Dramatiq message.
    let next: Message = serde_json::from_value(wire[0].options["pipe_target"].clone()).unwrap();
    assert_eq!(next.actor_name, "c_add");
}

#[tokio::test]
async fn untyped_pipeline_that_cannot_fit_is_refused_before_enqueue() {
    let broker = broker();
    broker.declare_queue(Q).await.unwrap();
    // c_add takes 2 arguments: 2 own + the previous result is one too many.
    let too_many = pipeline([c_add::message(1, 2), c_add::message(3, 4)]).broker(broker.clone());
    match too_many.run().await {
        Err(Error::InvalidPipeline {
            step,
            actor,
            reason,
        }) => {
            assert_eq!((step, actor.as_str()), (1, "c_add"));
            assert!(
                reason.contains("takes 2 argument(s) but would get 3"),
                "{reason}"
            );
            assert!(reason.contains("pipe_ignore"), "{reason}");
        }
        other => panic!("expected InvalidPipeline, got {other:?}"),
    }
    let wrong_type = Pipeline::new()
        .then(c_add::message(1, 2))
        .then(Message::new(Q, "c_describe", vec![json!(42)]))
        .broker(broker.clone());
    match wrong_type.run().await {
        Err(Error::InvalidPipeline {
            step: 1, reason, ..
        }) => {
            assert!(reason.contains("prefix"), "{reason}")
        }
        other => panic!("expected InvalidPipeline, got {other:?}"),
    }
    assert_eq!(broker.stats(Q).await.unwrap().ready, 0);
}

#[tokio::test]
async fn group_collects_results_with_one_deadline() {
    let broker = broker();
    let members = group([
        c_slow::message(200),
        c_slow::message(200),
        c_slow::message(200),
    ])
    .broker(broker.clone());
    members.run().await.unwrap();
    // No worker: the three reads share one 300 ms deadline.
    let started = Instant::now();
    assert!(matches!(
        members.get_results(true, Duration::from_millis(300)).await,
        Err(ResultError::Timeout { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(members.completed_count().await.unwrap(), 0);

    let w = worker(&broker).await;
    members.wait(WAIT).await.unwrap();
    let values: Vec<u64> = members.get_results_as(false, Duration::ZERO).await.unwrap();
    assert_eq!(values, [200, 200, 200]);
    assert_eq!(members.completed_count().await.unwrap(), 3);
    w.stop().await.unwrap();
}

async fn completion_callback_fires_exactly_once(backend: Arc<dyn RateLimiterBackend>) {
    let broker = with_group_callbacks(backend);
    let w = worker(&broker).await;
    let k = key();
    let chain = TypedPipeline::new(c_add::message(1, 1)).then(c_add::pipe(1));
    let members = group([c_add::message(1, 2), c_add::message(3, 4)])
        .member(Pipeline::from(chain))
        .add_completion_callback(c_group_done::message(k.clone()))
        .broker(broker.clone());
    members.run().await.unwrap();
    assert_eq!(
        members.get_results(true, WAIT).await.unwrap(),
        vec![json!(3), json!(7), json!(3)]
    );
    broker.join(Q, Some(WAIT), true).await.unwrap();
    assert_eq!(recorded(&k), vec![json!("group done")]);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn group_completion_callback_fires_once_with_an_in_memory_barrier() {
    completion_callback_fires_exactly_once(Arc::new(StubRateLimiterBackend::new())).await;
}

#[tokio::test]
async fn group_completion_callback_fires_once_with_a_redis_barrier() {
    let backend = RedisRateLimiterBackend::new(redis_url()).unwrap();
    completion_callback_fires_exactly_once(Arc::new(backend)).await;
}

#[tokio::test]
async fn group_completion_callback_does_not_fire_when_a_member_fails_for_good() {
    let broker = with_group_callbacks(Arc::new(StubRateLimiterBackend::new()));
    let w = worker(&broker).await;
    let k = key();
    // Members of different actors: one at a time (an array needs one type).
    let members = Group::new()
        .member(c_add::message(1, 2))
        .member(c_fail::message(9))
        .add_completion_callback(c_group_done::message(k.clone()))
        .broker(broker.clone());
    members.run().await.unwrap();
    match members.wait(WAIT).await {
        Err(ResultError::Failed { message, .. }) => assert_eq!(message, "refusing 9"),
        other => panic!("expected the member's failure, got {other:?}"),
    }
    broker.join(Q, Some(WAIT), false).await.unwrap();
    assert!(recorded(&k).is_empty());
    w.stop().await.unwrap();
}

#[tokio::test]
async fn completion_callbacks_need_the_group_callbacks_middleware() {
    let broker = broker();
    let members = group([c_add::message(1, 2)])
        .add_completion_callback(c_group_done::message(key()))
        .broker(broker.clone());
    match members.run().await {
        Err(err @ Error::MissingMiddleware { middleware, .. }) => {
            assert_eq!(middleware, "GroupCallbacks");
            assert!(err.to_string().contains("GroupCallbacks"), "{err}");
        }
        other => panic!("expected a missing-middleware error, got {other:?}"),
    }
    assert!(broker.queues().is_empty());
}
