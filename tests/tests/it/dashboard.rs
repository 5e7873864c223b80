//! The web dashboard (feature `dashboard`) over HTTP: every page and action against a real
//! Redis (and PostgreSQL for the job pages, in `jobs`), each test in its own namespace; the
//! browser tests in `browser`.

mod browser;
mod jobs;

use std::net::SocketAddr;
use std::time::Duration;

use actor_runtime::broker::MessageState;
use actor_runtime::dashboard::{Auth, Dashboard};
use actor_runtime::{actor, Broker, Message, Worker};
use serde_json::json;

use crate::support::http::{encode, get, post};
use crate::support::redis::{broker, cleanup, config};
use crate::support::{eventually, namespace};

const WAIT: Duration = Duration::from_secs(20);

/// Serves `dashboard`'s router on a free loopback port, as an app mounting it would.
pub(crate) async fn serve(dashboard: Dashboard) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("local addr");
    let router = dashboard.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// The CSRF token of the forms on `page`.
pub(crate) fn csrf(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a form with a CSRF token") + marker.len();
    page[start..]
        .split('"')
        .next()
        .expect("the token")
        .to_owned()
}

/// Dead-letters one message of `actor(args)` on `queue`, as a worker would; returns its
/// broker id and message id.
pub(crate) async fn dead_letter(
    broker: &Broker,
    queue: &str,
    actor: &str,
    args: Vec<serde_json::Value>,
    reason: &str,
) -> (String, String) {
    let message = broker
        .enqueue(Message::new(queue, actor, args), None)
        .await
        .expect("enqueue");
    // Fetch until ours comes (others may be ahead of it), and put the others back.
    let consumer = broker.consume(queue, 1000).await.expect("consume");
    let mut others = Vec::new();
    loop {
        let batch = consumer
            .fetch(1000, Duration::from_secs(5))
            .await
            .expect("fetch");
        assert!(!batch.is_empty(), "our message was not fetched");
        let mut found = false;
        for delivery in batch {
            let ours = delivery
                .message
                .as_ref()
                .is_ok_and(|m| m.message_id == message.message_id);
            if ours {
                consumer.nack(&delivery.tag, reason).await.expect("nack");
                found = true;
            } else {
                others.push(delivery.tag);
            }
        }
        if found {
            break;
        }
    }
    consumer.requeue(&others).await.expect("requeue the others");
    let _ = consumer.close().await;
    let dead = broker.dead_letters(queue, 100).await.expect("dead letters");
    let letter = dead
        .into_iter()
        .find(|d| {
            d.message
                .as_ref()
                .is_ok_and(|m| m.message_id == message.message_id)
        })
        .expect("the dead letter");
    (letter.id, message.message_id)
}

#[actor(queue_name = "dash_runs")]
async fn dash_noop(_n: i64) {}

#[actor(queue_name = "dash_runs", max_retries = 0)]
async fn dash_fails(_n: i64) -> Result<(), String> {
    Err("it broke".into())
}

#[tokio::test]
async fn overview_shows_every_queue_with_counts_the_workers_and_the_last_hours_activity() {
    let ns = namespace();
    let broker = broker(config(&ns));
    // Workers in another process (here: another broker instance) with quick heartbeats.
    let workers_broker =
        crate::support::redis::broker(config(&ns).heartbeat_interval(Duration::from_millis(100)));
    // A queue this dashboard process never declared: found in Redis.
    let other = crate::support::redis::broker(config(&ns));
    for n in 0..3 {
        other
            .enqueue(Message::new("dash_other", "py_actor", vec![json!(n)]), None)
            .await
            .unwrap();
    }
    other
        .enqueue(
            Message::new("dash_other", "py_actor", vec![]),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    dead_letter(&other, "dash_other", "py_actor", vec![], "boom").await;

    let worker = Worker::new(workers_broker.clone())
        .queues(["dash_runs"])
        .start()
        .await
        .unwrap();
    for n in 0..5 {
        workers_broker
            .enqueue(Message::new("dash_runs", "dash_noop", vec![json!(n)]), None)
            .await
            .unwrap();
    }
    workers_broker
        .enqueue(
            Message::new("dash_runs", "dash_fails", vec![json!(1)]),
            None,
        )
        .await
        .unwrap();
    workers_broker
        .join("dash_runs", Some(WAIT), false)
        .await
        .unwrap();

    let addr = serve(Dashboard::new(broker.clone())).await;
    let page = get(addr, "/", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("href=\"/queues/dash_other\""),
        "{}",
        page.body
    );
    // ready 3, delayed 1, in flight 0, dead 1
    assert!(
        page.body.contains(
            "dash_other</a></td><td class=\"n\">3</td><td class=\"n\">1</td><td class=\"n\">0</td><td class=\"n\">1</td>"
        ),
        "{}",
        page.body
    );
    let worker_id = workers_broker.worker_id().unwrap().to_owned();
    assert!(
        page.body.contains(&worker_id),
        "the worker is listed: {}",
        page.body
    );
    assert!(page.body.contains("assets/chart.js"), "{}", page.body);
    assert_eq!(
        page.header("content-security-policy")
            .map(|c| c.contains("script-src 'self'")),
        Some(true)
    );

    // The activity the workers reported with their heartbeats: 6 processed, 1 failed.
    eventually(WAIT, "the workers' activity report", || async {
        let activity = get(addr, "/api/activity", &[]).await;
        let value: serde_json::Value = serde_json::from_str(&activity.body).unwrap();
        let minutes = value["minutes"].as_array().unwrap();
        let sum = |field: &str| {
            minutes
                .iter()
                .map(|m| m[field].as_u64().unwrap())
                .sum::<u64>()
        };
        sum("processed") == 6 && sum("failed") == 1
    })
    .await;

    let css = get(addr, "/assets/style.css", &[]).await;
    assert_eq!(css.status, 200);
    assert!(css.body.contains(":focus-visible"));
    let js = get(addr, "/assets/chart.js", &[]).await;
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(get(addr, "/nowhere", &[]).await.status, 404);

    worker.stop().await.unwrap();
    workers_broker.close().await;
    other.close().await;
    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn queue_page_pages_through_ready_delayed_and_dead_messages() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let batch: Vec<Message> = (0..120)
        .map(|n| Message::new("dash_pages", "pager", vec![json!(n)]))
        .collect();
    broker.enqueue_batch(batch, None).await.unwrap();
    broker
        .enqueue(
            Message::new("dash_pages", "later", vec![json!("soon")]),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    dead_letter(
        &broker,
        "dash_pages",
        "pager",
        vec![json!(-1)],
        "retries exhausted: kaput",
    )
    .await;
    let addr = serve(Dashboard::new(broker.clone())).await;

    let first = get(addr, "/queues/dash_pages", &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body.matches("<tr><td>pager</td>").count(),
        50,
        "{}",
        first.body
    );
    assert!(
        first.body.contains("<code>[0]</code>"),
        "next first: {}",
        first.body
    );
    assert!(first
        .body
        .contains("120 ready, 1 delayed, 0 in flight, 1 dead"));
    let next = |body: &str| {
        let start = body
            .find("rel=\"next\"")
            .map(|_| body.find("cursor=").unwrap())?;
        let cursor: String = body[start + 7..]
            .chars()
            .take_while(|c| *c != '&')
            .collect();
        Some(cursor)
    };
    let cursor = next(&first.body).expect("a next page");
    let second = get(
        addr,
        &format!("/queues/dash_pages?state=ready&cursor={cursor}"),
        &[],
    )
    .await;
    assert_eq!(second.body.matches("<tr><td>pager</td>").count(), 50);
    assert!(second.body.contains("<code>[50]</code>"), "{}", second.body);
    let cursor = next(&second.body).expect("a third page");
    let third = get(
        addr,
        &format!("/queues/dash_pages?state=ready&cursor={cursor}"),
        &[],
    )
    .await;
    assert_eq!(third.body.matches("<tr><td>pager</td>").count(), 20);
    assert!(next(&third.body).is_none(), "the last page has no next");

    let delayed = get(addr, "/queues/dash_pages?state=delayed", &[]).await;
    assert!(
        delayed.body.contains("<tr><td>later</td>"),
        "{}",
        delayed.body
    );
    assert!(
        delayed.body.contains("in 9m") || delayed.body.contains("in 10m"),
        "{}",
        delayed.body
    );

    let dead = get(addr, "/queues/dash_pages?state=dead", &[]).await;
    assert!(
        dead.body.contains("retries exhausted: kaput"),
        "{}",
        dead.body
    );
    assert!(dead.body.contains("Requeue…"));

    // A filter narrows the page; a bad state or cursor is a clear error.
    let filtered = get(addr, "/queues/dash_pages?state=ready&actor=nobody", &[]).await;
    assert!(
        filtered.body.contains("No ready messages match the filter"),
        "{}",
        filtered.body
    );
    let bad = get(addr, "/queues/dash_pages?state=sleeping", &[]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("unknown message state"), "{}", bad.body);
    let bad = get(addr, "/queues/dash_pages?state=ready&cursor=abc", &[]).await;
    assert!(bad.body.contains("not a page cursor"), "{}", bad.body);
    assert_eq!(get(addr, "/queues/no%20spaces", &[]).await.status, 400);

    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn hostile_actor_names_arguments_and_reasons_are_escaped() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let hostile = "<script>alert(1)</script>";
    broker
        .enqueue(
            Message::new(
                "dash_hostile",
                hostile,
                vec![json!("<img src=x onerror=alert(2)>")],
            ),
            None,
        )
        .await
        .unwrap();
    dead_letter(
        &broker,
        "dash_hostile",
        hostile,
        vec![json!("\"><script>x</script>")],
        "<b>bold</b>",
    )
    .await;
    let addr = serve(Dashboard::new(broker.clone())).await;
    for path in [
        "/queues/dash_hostile",
        "/queues/dash_hostile?state=dead",
        "/",
    ] {
        let page = get(addr, path, &[]).await;
        assert_eq!(page.status, 200);
        assert!(
            !page.body.contains("<script>alert"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("<img"), "{path}");
        assert!(!page.body.contains("<b>bold"), "{path}");
        assert!(!page.body.contains("\"><script>"), "{path}");
    }
    let page = get(addr, "/queues/dash_hostile", &[]).await;
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    // Reflected input is escaped too.
    let reflected = get(
        addr,
        &format!("/queues/dash_hostile?text={}", encode("\"><script>")),
        &[],
    )
    .await;
    assert!(!reflected.body.contains("\"><script>"));
    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn requeue_and_delete_ask_for_confirmation_and_refuse_cross_site_requests() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let (dead_id, _) = dead_letter(&broker, "dash_act", "act", vec![json!(1)], "boom").await;
    let addr = serve(Dashboard::new(broker.clone())).await;
    let page = get(addr, "/queues/dash_act?state=dead", &[]).await;
    let token = csrf(&page.body);
    let path = "/queues/dash_act/requeue";
    let form = |token: &str, confirmed: &str| {
        vec![
            ("csrf", token.to_owned()),
            ("state", "dead".to_owned()),
            ("id", dead_id.clone()),
            ("confirmed", confirmed.to_owned()),
        ]
    };
    let send = |fields: Vec<(&'static str, String)>, headers: Vec<(&'static str, &'static str)>| async move {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post(addr, path, &fields, &headers).await
    };
    let dead = |b: Broker| async move { b.stats("dash_act").await.unwrap().dead };

    // No token, a wrong one, another site, another origin: refused, nothing moves.
    assert_eq!(send(form("", "yes"), vec![]).await.status, 403);
    assert_eq!(send(form("wrong", "yes"), vec![]).await.status, 403);
    let refused = send(form(&token, "yes"), vec![("Sec-Fetch-Site", "cross-site")]).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("another site"), "{}", refused.body);
    let refused = send(form(&token, "yes"), vec![("Origin", "http://evil.example")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(dead(broker.clone()).await, 1);

    // Without confirmation: a confirmation page, nothing moves.
    let confirm = send(form(&token, ""), vec![("Sec-Fetch-Site", "same-origin")]).await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains("Requeue dead letter?"),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("name=\"confirmed\" value=\"yes\""));
    assert_eq!(dead(broker.clone()).await, 1);

    // Confirmed: moved, and back to the queue's page saying so.
    let done = send(form(&token, "yes"), vec![("Sec-Fetch-Site", "same-origin")]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let location = done.header("location").unwrap().to_owned();
    assert!(
        location.starts_with("/queues/dash_act?state=dead"),
        "{location}"
    );
    let stats = broker.stats("dash_act").await.unwrap();
    assert_eq!((stats.ready, stats.dead), (1, 0));
    let after = get(addr, &location, &[]).await;
    assert!(
        after.body.contains("Requeued 1 dead letter of dash_act."),
        "{}",
        after.body
    );

    // Delete one ready message, then every one matching a filter.
    let batch: Vec<Message> = (0..4)
        .map(|n| {
            Message::new(
                "dash_act",
                if n % 2 == 0 { "keep" } else { "drop" },
                vec![json!(n)],
            )
        })
        .collect();
    broker.enqueue_batch(batch, None).await.unwrap();
    let inspect = broker.backend().inspect().unwrap();
    let page = inspect
        .messages("dash_act", MessageState::Ready, None, 10)
        .await
        .unwrap();
    let first_id = page.items[0].id.clone();
    let one = [
        ("csrf", token.as_str()),
        ("state", "ready"),
        ("id", first_id.as_str()),
        ("confirmed", "yes"),
    ];
    assert_eq!(
        post(addr, "/queues/dash_act/delete", &one, &[])
            .await
            .status,
        303
    );
    assert_eq!(broker.stats("dash_act").await.unwrap().ready, 4);
    let bulk = [
        ("csrf", token.as_str()),
        ("state", "ready"),
        ("all", "1"),
        ("actor", "drop"),
        ("text", ""),
    ];
    let confirm = post(addr, "/queues/dash_act/delete", &bulk, &[]).await;
    assert!(
        confirm
            .body
            .contains("all 2 ready messages of dash_act matching actor"),
        "{}",
        confirm.body
    );
    let mut confirmed = bulk.to_vec();
    confirmed.push(("confirmed", "yes"));
    let done = post(addr, "/queues/dash_act/delete", &confirmed, &[]).await;
    assert_eq!(done.status, 303);
    let left = inspect
        .messages("dash_act", MessageState::Ready, None, 10)
        .await
        .unwrap();
    let actors: Vec<String> = left
        .items
        .iter()
        .map(|i| i.message.as_ref().unwrap().actor_name.clone())
        .collect();
    assert_eq!(actors, ["keep", "keep"], "only the matching ones went");

    // Delete all dead letters (none left after the requeue, then one new).
    dead_letter(&broker, "dash_act", "act", vec![json!(2)], "boom").await;
    let all_dead = [
        ("csrf", token.as_str()),
        ("state", "dead"),
        ("all", "1"),
        ("confirmed", "yes"),
    ];
    assert_eq!(
        post(addr, "/queues/dash_act/delete", &all_dead, &[])
            .await
            .status,
        303
    );
    assert_eq!(dead(broker.clone()).await, 0);
    // Requeue is for dead letters only.
    let wrong = [
        ("csrf", token.as_str()),
        ("state", "ready"),
        ("all", "1"),
        ("confirmed", "yes"),
    ];
    assert_eq!(
        post(addr, "/queues/dash_act/requeue", &wrong, &[])
            .await
            .status,
        400
    );
    cleanup(&broker, 0).await;
}

#[actor(queue_name = "dash_pause")]
async fn dash_paused_job(key: String) {
    let _ = key;
}

#[tokio::test]
async fn a_paused_queue_is_not_consumed_by_our_workers_until_resumed() {
    let ns = namespace();
    let broker = broker(config(&ns));
    let workers_broker = crate::support::redis::broker(config(&ns));
    let worker = Worker::new(workers_broker.clone())
        .queues(["dash_pause"])
        .start()
        .await
        .unwrap();
    let addr = serve(Dashboard::new(broker.clone())).await;
    let page = get(addr, "/queues/dash_pause", &[]).await;
    assert!(page.body.contains("Pause consumption"), "{}", page.body);
    let token = csrf(&page.body);
    let done = post(addr, "/queues/dash_pause/pause", &[("csrf", &token)], &[]).await;
    assert_eq!(done.status, 303);
    let page = get(addr, done.header("location").unwrap(), &[]).await;
    assert!(page.body.contains("Resume consumption"), "{}", page.body);
    assert!(get(addr, "/", &[]).await.body.contains("paused"));

    // Workers read the flag at most once a second: after that, a message sent stays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    workers_broker
        .enqueue(
            Message::new("dash_pause", "dash_paused_job", vec![json!("k")]),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stats = broker.stats("dash_pause").await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight),
        (1, 0),
        "not fetched while paused"
    );

    let done = post(addr, "/queues/dash_pause/resume", &[("csrf", &token)], &[]).await;
    assert_eq!(done.status, 303);
    broker.join("dash_pause", Some(WAIT), false).await.unwrap();
    assert_eq!(broker.stats("dash_pause").await.unwrap().ready, 0);

    worker.stop().await.unwrap();
    workers_broker.close().await;
    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn read_only_mode_shows_pages_without_actions() {
    let ns = namespace();
    let broker = broker(config(&ns));
    dead_letter(&broker, "dash_ro", "act", vec![], "boom").await;
    let addr = serve(Dashboard::new(broker.clone()).read_only(true)).await;
    let page = get(addr, "/queues/dash_ro?state=dead", &[]).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("method=\"post\""), "{}", page.body);
    let refused = post(
        addr,
        "/queues/dash_ro/delete",
        &[("state", "dead"), ("all", "1"), ("confirmed", "yes")],
        &[],
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(broker.stats("dash_ro").await.unwrap().dead, 1);
    cleanup(&broker, 0).await;
}

#[tokio::test]
async fn token_and_basic_auth_guard_every_page_and_a_public_address_needs_one() {
    let broker = Broker::stub();
    broker.declare_queue("dash_auth").await.unwrap();
    let addr = serve(Dashboard::new(broker.clone()).auth(Auth::Token("t0ken".into()))).await;
    for path in [
        "/",
        "/queues/dash_auth",
        "/assets/style.css",
        "/api/activity",
    ] {
        let refused = get(addr, path, &[]).await;
        assert_eq!(refused.status, 401, "{path}");
        assert!(refused
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic"));
        assert_eq!(
            get(addr, path, &[("Authorization", "Bearer nope")])
                .await
                .status,
            401
        );
        assert_eq!(
            get(addr, path, &[("Authorization", "Bearer t0ken")])
                .await
                .status,
            200,
            "{path}"
        );
    }
    // The token as a basic-auth password ("anyone:t0ken").
    assert_eq!(
        get(addr, "/", &[("Authorization", "Basic YW55b25lOnQwa2Vu")])
            .await
            .status,
        200
    );

    let basic = serve(Dashboard::new(broker.clone()).auth(Auth::Basic {
        user: "ops".into(),
        password: "pw".into(),
    }))
    .await;
    assert_eq!(get(basic, "/", &[]).await.status, 401);
    // "ops:pw", "ops:no"
    assert_eq!(
        get(basic, "/", &[("Authorization", "Basic b3BzOnB3")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(basic, "/", &[("Authorization", "Basic b3BzOm5v")])
            .await
            .status,
        401
    );

    let err = Dashboard::new(broker.clone())
        .serve("0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("DASHBOARD_TOKEN"), "{err}");
}

#[tokio::test]
async fn the_stub_broker_works_and_says_what_it_cannot_show() {
    let broker = Broker::stub();
    broker
        .enqueue(Message::new("dash_stub", "noop", vec![json!(1)]), None)
        .await
        .unwrap();
    let addr = serve(Dashboard::new(broker.clone())).await;
    let page = get(addr, "/", &[]).await;
    assert!(
        page.body.contains("href=\"/queues/dash_stub\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("keeps no worker registry"),
        "{}",
        page.body
    );
    let queue = get(addr, "/queues/dash_stub", &[]).await;
    assert!(queue.body.contains("<tr><td>noop</td>"), "{}", queue.body);
    // Mounted under a prefix, links carry it.
    let app = axum::Router::new().nest(
        "/ops",
        Dashboard::new(broker.clone()).base_path("/ops").router(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nested = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let page = get(nested, "/ops", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("href=\"/ops/queues/dash_stub\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("/ops/assets/style.css"));
}

#[tokio::test]
async fn rabbitmq_pages_say_what_the_broker_cannot_show() {
    use crate::support::rabbitmq;
    let q = rabbitmq::queue("dash");
    let broker = rabbitmq::broker(rabbitmq::config());
    broker
        .enqueue(Message::new(&q, "noop", vec![json!(1)]), None)
        .await
        .unwrap();
    let addr = serve(Dashboard::new(broker.clone())).await;
    let page = get(addr, "/", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("keeps no worker registry"),
        "{}",
        page.body
    );
    let queue = get(addr, &format!("/queues/{q}"), &[]).await;
    assert!(
        queue
            .body
            .contains("cannot list ready messages without consuming them"),
        "{}",
        queue.body
    );
    assert!(
        queue.body.contains("cannot pause a queue"),
        "{}",
        queue.body
    );
    rabbitmq::cleanup(&broker, &q).await;
}

/// A worker binary's `dashboard` command serves the pages.
#[tokio::test]
async fn the_dashboard_command_serves_the_broker_and_refuses_a_public_address_without_auth() {
    use crate::support::cli::{Proc, WORKER};
    let ns = namespace();
    let broker = broker(config(&ns));
    broker.declare_queue("dash_cli").await.unwrap();
    broker
        .enqueue(
            Message::new("dash_cli", "cli_record", vec![json!("k")]),
            None,
        )
        .await
        .unwrap();
    let env = [
        ("REDIS_URL", crate::support::redis_url()),
        ("DRAMATIQ_NAMESPACE", ns.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut refused = Proc::spawn(WORKER, &["dashboard", "--addr", "0.0.0.0:0"], &env);
    assert_eq!(refused.exit().await.code(), Some(2), "{}", refused.dump());

    // A free port, released for the process to take.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut served = Proc::spawn(WORKER, &["dashboard", "--addr", &addr.to_string()], &env);
    served.wait_message("dashboard listening").await;
    let page = get(addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("href=\"/queues/dash_cli\""),
        "{}",
        page.body
    );
    crate::support::cli::kill("TERM", served.pid());
    assert_eq!(served.exit().await.code(), Some(0), "{}", served.dump());
    cleanup(&broker, 0).await;
}
