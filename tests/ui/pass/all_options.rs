// Every option at once, each checked through the `Actor` constants.
use actor_runtime::{actor, Actor, ActorFailure};

#[derive(Debug)]
pub struct BadRequest;

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad request")
    }
}

mod errors {
    #[derive(Debug)]
    pub struct Gone;
}

fn transient(retries: u32, failure: &ActorFailure) -> bool {
    retries < 5 && failure.short_type_name() != "BadRequest"
}

#[actor]
async fn charged(order: u64) {
    let _ = order;
}

#[actor(
    actor_name = "charge_card",
    queue_name = "payments.high-priority_1",
    priority = -10,
    max_retries = 7,
    min_backoff = "500ms",
    max_backoff = "1h30m",
    time_limit = 60_000,
    max_age = 7d,
    store_results = true,
    result_ttl = "2h 5min",
    notify_shutdown = true,
    pipe_ignore = false,
    on_success = charged,
    on_failure = "charge_failed",
    on_retry_exhausted = crate::charged,
    retry_when = transient,
    throws = [BadRequest, errors::Gone],
)]
async fn charge(order: u64, cents: u64) -> Result<u64, BadRequest> {
    if cents == 0 {
        return Err(BadRequest);
    }
    Ok(order * cents)
}

fn main() {
    assert_eq!(<charge as Actor>::NAME, "charge_card");
    assert_eq!(<charge as Actor>::QUEUE, "payments.high-priority_1");
    let o = <charge as Actor>::OPTIONS;
    assert_eq!(o.priority, -10);
    assert_eq!(o.max_retries, Some(7));
    assert_eq!(o.min_backoff, Some(500));
    assert_eq!(o.max_backoff, Some(5_400_000));
    assert_eq!(o.time_limit, Some(60_000));
    assert_eq!(o.max_age, Some(7 * 86_400_000));
    assert_eq!(o.store_results, Some(true));
    assert_eq!(o.result_ttl, Some(7_500_000));
    assert_eq!(o.notify_shutdown, Some(true));
    assert_eq!(o.pipe_ignore, Some(false));
    assert_eq!(o.on_success, Some("charged"));
    assert_eq!(o.on_failure, Some("charge_failed"));
    assert_eq!(o.on_retry_exhausted, Some("charged"));

    let retry_when = o.retry_when.expect("retry_when is set");
    assert!(retry_when(1, &ActorFailure::new("app::Timeout", "slow")));
    assert!(!retry_when(1, &ActorFailure::new("app::BadRequest", "no")));

    let bad = ActorFailure::new(std::any::type_name::<BadRequest>(), "bad request");
    let gone = ActorFailure::new(std::any::type_name::<errors::Gone>(), "gone");
    assert!(o.throws_matches(&bad));
    assert!(o.throws_matches(&gone));
    assert!(!o.throws_matches(&ActorFailure::new("other::Error", "")));

    // The defaults, on an actor without options.
    assert_eq!(<charged as Actor>::NAME, "charged");
    assert_eq!(<charged as Actor>::QUEUE, "default");
    assert_eq!(<charged as Actor>::OPTIONS.priority, 0);
    assert_eq!(<charged as Actor>::OPTIONS.max_retries, None);
    assert!(<charged as Actor>::OPTIONS.throws.is_empty());
}
