//! The job pages, over records a real worker wrote to PostgreSQL (a schema per test).

use actor_runtime::composition::Pipeline;
use actor_runtime::dashboard::Dashboard;
use actor_runtime::records::JobState;
use actor_runtime::{actor, current_message, Broker, Worker};

use super::{csrf, serve};
use crate::records::wait_state;
use crate::support::http::{encode, get, post};
use crate::support::namespace;
use crate::support::postgres::{builder, cleanup, database_url, schema_name};
use crate::support::redis::{broker, cleanup as cleanup_redis, config};

#[actor(queue_name = "dash_jobs")]
async fn dash_job_step(n: i64) -> i64 {
    n + 1
}

#[actor(
    queue_name = "dash_jobs",
    max_retries = 2,
    min_backoff = 10,
    max_backoff = 20
)]
async fn dash_job_flaky(_secret: String) -> Result<(), String> {
    match current_message().map(|m| m.retries()) {
        Some(0) => Err("first try fails <script>alert(1)</script>".into()),
        _ => Ok(()),
    }
}

#[actor(queue_name = "dash_jobs", max_retries = 0)]
async fn dash_job_dies(_secret: String) -> Result<(), String> {
    Err("always broken".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_searched_and_a_jobs_history_is_shown_with_its_links() {
    let broker: Broker = broker(config(&namespace()));
    let records = builder(&database_url(), &schema_name())
        .record_args_of(["dash_job_step", "dash_job_flaky"])
        .build()
        .await
        .unwrap();
    broker.add_middleware(records.recorder());
    let worker = Worker::new(broker.clone())
        .queues(["dash_jobs"])
        .threads(2)
        .start()
        .await
        .unwrap();
    let chain = Pipeline::new()
        .then(dash_job_step::message(1))
        .then_ignore(dash_job_step::message(0))
        .broker(broker.clone());
    let steps: Vec<String> = chain.message_ids().iter().map(|s| s.to_string()).collect();
    chain.run().await.unwrap();
    let flaky = dash_job_flaky::message("<b>hunter2</b>".into())
        .broker(broker.clone())
        .send()
        .await
        .unwrap()
        .message_id
        .clone();
    let dead = dash_job_dies::message("do not show".into())
        .broker(broker.clone())
        .send()
        .await
        .unwrap()
        .message_id
        .clone();
    for id in &steps {
        wait_state(&records, id, JobState::Succeeded).await;
    }
    wait_state(&records, &flaky, JobState::Succeeded).await;
    wait_state(&records, &dead, JobState::Dead).await;
    worker.stop().await.unwrap();

    let addr = serve(Dashboard::new(broker.clone()).records(records.clone())).await;
    let overview = get(addr, "/", &[]).await;
    assert!(
        overview.body.contains("href=\"/jobs\""),
        "the Jobs link: {}",
        overview.body
    );

    // By message id: straight to the job's page.
    let found = get(addr, &format!("/jobs?id={flaky}"), &[]).await;
    assert_eq!(found.status, 303);
    assert_eq!(
        found.header("location"),
        Some(format!("/jobs/{flaky}").as_str())
    );
    let job = get(addr, &format!("/jobs/{flaky}"), &[]).await;
    assert_eq!(job.status, 200, "{}", job.body);
    assert!(job.body.contains("succeeded"), "{}", job.body);
    // Its failed attempt, escaped; its arguments as recorded, escaped.
    assert!(
        job.body
            .contains("first try fails &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        job.body
    );
    assert!(!job.body.contains("<script>alert"), "{}", job.body);
    assert!(
        job.body.contains("&lt;b&gt;hunter2&lt;/b&gt;"),
        "{}",
        job.body
    );
    assert!(job.body.contains("<dt>Worker</dt>"), "{}", job.body);
    assert!(job.body.contains("<dt>Duration</dt>"), "{}", job.body);

    // A job whose arguments are not recorded says so.
    let page = get(addr, &format!("/jobs/{dead}"), &[]).await;
    assert!(page.body.contains("Not recorded"), "{}", page.body);
    assert!(!page.body.contains("do not show"));
    assert!(page.body.contains("always broken"));

    // Along the pipeline, both ways.
    let first = get(addr, &format!("/jobs/{}", steps[0]), &[]).await;
    assert!(first.body.contains("Jobs it enqueued"), "{}", first.body);
    assert!(
        first.body.contains(&format!("href=\"/jobs/{}\"", steps[1])),
        "{}",
        first.body
    );
    let second = get(addr, &format!("/jobs/{}", steps[1]), &[]).await;
    assert!(
        second.body.contains("<dt>Enqueued by</dt>"),
        "{}",
        second.body
    );
    assert!(
        second
            .body
            .contains(&format!("href=\"/jobs/{}\"", steps[0])),
        "{}",
        second.body
    );

    // Search by actor, state, error text and time.
    let by_actor = get(addr, "/jobs?actor=dash_job_step", &[]).await;
    assert_eq!(
        by_actor.body.matches("<tr><td><a href=\"/jobs/").count(),
        2,
        "{}",
        by_actor.body
    );
    let by_state = get(addr, "/jobs?state=dead", &[]).await;
    assert!(
        by_state.body.contains(&dead) && !by_state.body.contains(&flaky),
        "{}",
        by_state.body
    );
    let by_error = get(
        addr,
        &format!("/jobs?error={}", encode("ALWAYS broken")),
        &[],
    )
    .await;
    assert!(by_error.body.contains(&dead) && !by_error.body.contains(&steps[0]));
    let future = get(addr, "/jobs?since=2999-01-01T00:00", &[]).await;
    assert!(future.body.contains("No job matches"), "{}", future.body);
    let past = get(
        addr,
        "/jobs?since=2000-01-01T00:00&until=2999-01-01T00:00",
        &[],
    )
    .await;
    assert!(past.body.contains(&dead), "{}", past.body);
    let bad = get(addr, "/jobs?since=yesterday", &[]).await;
    assert!(bad.body.contains("is not a time for since"), "{}", bad.body);
    let bad = get(addr, "/jobs?state=sleepy", &[]).await;
    assert!(bad.body.contains("role=\"alert\""), "{}", bad.body);
    assert_eq!(get(addr, "/jobs/no-such-message", &[]).await.status, 404);

    // Requeueing its dead letter from the queue page marks the record enqueued.
    let queue = get(addr, "/queues/dash_jobs?state=dead", &[]).await;
    let token = csrf(&queue.body);
    let done = post(
        addr,
        "/queues/dash_jobs/requeue",
        &[
            ("csrf", &token),
            ("state", "dead"),
            ("all", "1"),
            ("confirmed", "yes"),
        ],
        &[],
    )
    .await;
    assert_eq!(done.status, 303);
    assert_eq!(
        records.job(&dead).await.unwrap().unwrap().state,
        JobState::Enqueued
    );

    cleanup_redis(&broker, 0).await;
    cleanup(&records).await;
}

#[tokio::test]
async fn without_job_records_the_job_pages_say_what_they_need() {
    let addr = serve(Dashboard::new(Broker::stub())).await;
    let page = get(addr, "/jobs", &[]).await;
    assert_eq!(page.status, 404);
    let overview = get(addr, "/", &[]).await;
    assert!(!overview.body.contains("href=\"/jobs\""));
}
