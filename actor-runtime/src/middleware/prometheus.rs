//! Prometheus: Dramatiq's message metrics, rendered in the Prometheus text format.

use crate::broker::Broker;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use super::{MessageContext, Middleware, Skip};
use crate::actor::ActorFailure;
use crate::error::Result;
use crate::message::{canonical_queue, Message};
use crate::truncate::truncate;

/// Upper bounds of `dramatiq_message_duration_milliseconds`, Dramatiq's buckets (`+Inf` is
/// implied).
///
/// ```
/// use actor_runtime::middleware::DURATION_BUCKETS_MS;
///
/// assert_eq!(DURATION_BUCKETS_MS.first(), Some(&5));
/// assert_eq!(DURATION_BUCKETS_MS.last(), Some(&900_000)); // 15 minutes
/// ```
pub const DURATION_BUCKETS_MS: [u64; 18] = [
    5, 10, 25, 50, 75, 100, 250, 500, 750, 1_000, 2_500, 5_000, 7_500, 10_000, 30_000, 60_000,
    600_000, 900_000,
];

/// Counts messages per queue and actor under Dramatiq's metric names, so dashboards built for
/// Python workers work unchanged (Dramatiq's `Prometheus` middleware; opt-in, as there).
///
/// | Metric | Type | Counts |
/// |---|---|---|
/// | `dramatiq_messages_total` | counter | messages processed (or skipped) |
/// | `dramatiq_message_errors_total` | counter | actor runs that failed |
/// | `dramatiq_message_retries_total` | counter | enqueues of a message that carries `retries` |
/// | `dramatiq_message_rejects_total` | counter | messages dead-lettered |
/// | `dramatiq_messages_inprogress` | gauge | messages running now |
/// | `dramatiq_delayed_messages_inprogress` | gauge | delayed messages held by this worker (always 0 here: delayed messages wait in the broker) |
/// | `dramatiq_message_duration_milliseconds` | histogram | actor run time, Dramatiq's [buckets](DURATION_BUCKETS_MS) |
///
/// Every series has the labels `queue_name` and `actor_name`: the queue the message was
/// fetched from and its registered actor, never names a producer wrote in the payload, so
/// made-up names cannot grow the exposition. Enqueue-side counts (retries) use the enqueued
/// message's names; past [`MAX_LABEL_SETS`] distinct pairs, new ones are counted under
/// `queue_name="(other)",actor_name="(other)"` (a value no queue can have), with one warning.
///
/// The worker CLI serves [`render`](Prometheus::render) over HTTP with `--metrics-addr`; in
/// code, add it to the broker and serve the text yourself.
///
/// ```
/// use std::sync::Arc;
/// use actor_runtime::{actor, middleware::Prometheus, Broker, Worker};
///
/// #[actor(queue_name = "metered")]
/// async fn metered(n: u32) -> u32 {
///     n
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let broker = Broker::stub();
/// let metrics = Arc::new(Prometheus::new());
/// broker.middleware().add(metrics.clone());
/// let worker = Worker::new(broker.clone()).queues(["metered"]).start().await.unwrap();
/// metered::message(1).broker(broker.clone()).send().await.unwrap();
/// broker.join("metered", None, true).await.unwrap();
/// worker.stop().await.unwrap();
///
/// let text = metrics.render();
/// assert!(text.contains(r#"dramatiq_messages_total{queue_name="metered",actor_name="metered"} 1"#));
/// # });
/// ```
#[derive(Default)]
pub struct Prometheus {
    series: RwLock<Labels>,
    /// When each running message started, by message id.
    started: Mutex<HashMap<String, Instant>>,
    /// Set once the label sets reached their cap (and that was logged).
    capped: AtomicBool,
}

/// The most distinct `(queue_name, actor_name)` label sets one [`Prometheus`] keeps apart;
/// later ones are folded into `(other)`, which bounds what a scrape returns.
///
/// ```
/// assert_eq!(actor_runtime::middleware::MAX_LABEL_SETS, 1000);
/// ```
pub const MAX_LABEL_SETS: usize = 1000;

/// The label value of the series that folds label sets past [`MAX_LABEL_SETS`].
const OTHER: &str = "(other)";

/// The series by queue, then actor.
#[derive(Default)]
struct Labels {
    by_queue: BTreeMap<String, BTreeMap<String, Arc<Series>>>,
    count: usize,
}

impl Labels {
    fn get(&self, queue: &str, actor: &str) -> Option<&Arc<Series>> {
        self.by_queue.get(queue)?.get(actor)
    }

    fn insert(&mut self, queue: &str, actor: &str) -> Arc<Series> {
        self.count += 1;
        self.by_queue
            .entry(queue.to_owned())
            .or_default()
            .entry(actor.to_owned())
            .or_default()
            .clone()
    }
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").finish_non_exhaustive()
    }
}

/// One (queue, actor) pair's numbers.
#[derive(Default)]
struct Series {
    total: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    rejects: AtomicU64,
    inprogress: AtomicI64,
    delayed_inprogress: AtomicI64,
    /// Per bucket, not cumulative; the last slot is above the largest bound.
    buckets: [AtomicU64; DURATION_BUCKETS_MS.len() + 1],
    sum_micros: AtomicU64,
}

impl Series {
    fn observe(&self, elapsed: Duration) {
        let ms = elapsed.as_millis() as u64;
        // Prometheus buckets are `le`: a value equal to a bound falls in that bucket.
        let slot = DURATION_BUCKETS_MS.partition_point(|&bound| bound < ms);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

/// `(name, type, help)` of each family, in exposition order.
const FAMILIES: [(&str, &str, &str); 7] = [
    (
        "dramatiq_messages_total",
        "counter",
        "The total number of messages processed.",
    ),
    (
        "dramatiq_message_errors_total",
        "counter",
        "The total number of errored messages.",
    ),
    (
        "dramatiq_message_retries_total",
        "counter",
        "The total number of retried messages.",
    ),
    (
        "dramatiq_message_rejects_total",
        "counter",
        "The total number of dead-lettered messages.",
    ),
    (
        "dramatiq_messages_inprogress",
        "gauge",
        "The number of messages in progress.",
    ),
    (
        "dramatiq_delayed_messages_inprogress",
        "gauge",
        "The number of delayed messages in memory.",
    ),
    (
        "dramatiq_message_duration_milliseconds",
        "histogram",
        "The time spent processing messages.",
    ),
];

impl Prometheus {
    /// Empty metrics.
    ///
    /// ```
    /// let metrics = actor_runtime::middleware::Prometheus::new();
    /// assert!(metrics.render().contains("# TYPE dramatiq_messages_total counter"));
    /// ```
    pub fn new() -> Prometheus {
        Prometheus::default()
    }

    /// The series of `(queue, actor)`, or the `(other)` one once [`MAX_LABEL_SETS`] are
    /// taken.
    fn series(&self, queue: &str, actor: &str) -> Arc<Series> {
        let queue = canonical_queue(queue);
        if let Some(series) = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue, actor)
        {
            return series.clone();
        }
        let mut labels = self.series.write().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = labels.get(queue, actor) {
            return series.clone();
        }
        if labels.count < MAX_LABEL_SETS {
            return labels.insert(queue, actor);
        }
        if !self.capped.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max = MAX_LABEL_SETS,
                queue = %truncate(queue),
                actor = %truncate(actor),
                "Prometheus: too many queue and actor label sets; counting new ones under `(other)`"
            );
        }
        match labels.get(OTHER, OTHER) {
            Some(series) => series.clone(),
            None => labels.insert(OTHER, OTHER),
        }
    }

    /// The series of a message being processed: the queue it was fetched from and its
    /// registered actor.
    fn processing(&self, ctx: &MessageContext) -> Arc<Series> {
        self.series(ctx.queue(), ctx.actor().name)
    }

    fn started(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, ctx: &MessageContext, failed: bool) {
        let series = self.processing(ctx);
        let started = self.started().remove(&ctx.message.message_id);
        // A message skipped by an earlier middleware never reached our `before` hook.
        if let Some(started) = started {
            series.observe(started.elapsed());
            series.inprogress.fetch_sub(1, Ordering::Relaxed);
        }
        series.total.fetch_add(1, Ordering::Relaxed);
        if failed {
            series.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4): `# HELP` and
    /// `# TYPE` for every family, then one line per series, sorted by queue and actor.
    ///
    /// ```
    /// let text = actor_runtime::middleware::Prometheus::new().render();
    /// assert!(text.starts_with("# HELP dramatiq_messages_total "));
    /// assert!(text.contains("# TYPE dramatiq_message_duration_milliseconds histogram\n"));
    /// ```
    pub fn render(&self) -> String {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<(String, &Series)> = series
            .by_queue
            .iter()
            .flat_map(|(queue, actors)| {
                actors.iter().map(move |(actor, s)| {
                    let labels = format!(
                        "queue_name=\"{}\",actor_name=\"{}\"",
                        escape(queue),
                        escape(actor)
                    );
                    (labels, &**s)
                })
            })
            .collect();
        let mut out = String::with_capacity(512 + rows.len() * 2048);
        for (name, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, s) in &rows {
                let scalar = |value: &dyn std::fmt::Display, out: &mut String| {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                };
                match name {
                    "dramatiq_messages_total" => scalar(&s.total.load(Ordering::Relaxed), &mut out),
                    "dramatiq_message_errors_total" => {
                        scalar(&s.errors.load(Ordering::Relaxed), &mut out)
                    }
                    "dramatiq_message_retries_total" => {
                        scalar(&s.retries.load(Ordering::Relaxed), &mut out)
                    }
                    "dramatiq_message_rejects_total" => {
                        scalar(&s.rejects.load(Ordering::Relaxed), &mut out)
                    }
                    "dramatiq_messages_inprogress" => {
                        scalar(&s.inprogress.load(Ordering::Relaxed), &mut out)
                    }
                    "dramatiq_delayed_messages_inprogress" => {
                        scalar(&s.delayed_inprogress.load(Ordering::Relaxed), &mut out)
                    }
                    _ => {
                        let mut cumulative = 0;
                        for (i, bound) in DURATION_BUCKETS_MS.iter().enumerate() {
                            cumulative += s.buckets[i].load(Ordering::Relaxed);
                            let _ = writeln!(
                                out,
                                "{name}_bucket{{{labels},le=\"{bound}.0\"}} {cumulative}"
                            );
                        }
                        cumulative += s.buckets[DURATION_BUCKETS_MS.len()].load(Ordering::Relaxed);
                        let sum = s.sum_micros.load(Ordering::Relaxed) as f64 / 1000.0;
                        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
                        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                    }
                }
            }
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[async_trait]
impl Middleware for Prometheus {
    async fn after_enqueue(&self, _broker: &Broker, message: &Message, _delay: Option<Duration>) {
        if message.options.contains_key("retries") {
            self.series(&message.queue_name, &message.actor_name)
                .retries
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn before_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
    ) -> Result<(), Skip> {
        self.processing(ctx)
            .inprogress
            .fetch_add(1, Ordering::Relaxed);
        self.started()
            .insert(ctx.message.message_id.clone(), Instant::now());
        Ok(())
    }

    async fn after_process_message(
        &self,
        _broker: &Broker,
        ctx: &mut MessageContext,
        result: &std::result::Result<Value, ActorFailure>,
    ) {
        self.finish(ctx, result.is_err());
    }

    async fn after_skip_message(&self, _broker: &Broker, ctx: &mut MessageContext) {
        self.finish(ctx, false);
    }

    async fn after_nack(&self, _broker: &Broker, ctx: &MessageContext) {
        self.processing(ctx).rejects.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        let metrics = Prometheus::new();
        let series = metrics.series("q.DQ", "a\"b");
        series.observe(Duration::from_millis(5));
        series.observe(Duration::from_millis(6));
        series.observe(Duration::from_secs(3600));
        let text = metrics.render();
        let labels = r#"queue_name="q",actor_name="a\"b""#;
        for line in [
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{{labels},le="5.0"}} 1"#),
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{{labels},le="10.0"}} 2"#),
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{{labels},le="900000.0"}} 2"#),
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{{labels},le="+Inf"}} 3"#),
            format!(r#"dramatiq_message_duration_milliseconds_count{{{labels}}} 3"#),
            format!(r#"dramatiq_message_duration_milliseconds_sum{{{labels}}} 3600011"#),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn label_sets_past_the_cap_are_folded_into_other() {
        let metrics = Prometheus::new();
        for i in 0..3 * MAX_LABEL_SETS {
            metrics
                .series(&format!("made_up_{i}"), "a")
                .total
                .fetch_add(1, Ordering::Relaxed);
        }
        let text = metrics.render();
        let totals: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("dramatiq_messages_total{"))
            .collect();
        assert_eq!(totals.len(), MAX_LABEL_SETS + 1);
        let other = format!(
            r#"dramatiq_messages_total{{queue_name="(other)",actor_name="(other)"}} {}"#,
            2 * MAX_LABEL_SETS
        );
        assert!(totals.contains(&other.as_str()), "no {other}");
        // Known label sets keep counting on their own.
        metrics.series("made_up_0", "a");
        assert_eq!(metrics.series.read().unwrap().count, MAX_LABEL_SETS + 1);
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = Prometheus::new().render();
        for (name, kind, _) in FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")));
            assert!(text.contains(&format!("# HELP {name} ")));
        }
    }
}
