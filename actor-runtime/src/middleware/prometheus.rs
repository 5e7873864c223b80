//! Prometheus: Dramatiq's message metrics, written in the OpenMetrics text format by
//! `prometheus-client`.
//!
//! The numbers are plain atomics of our own, one set per (queue, actor) label set, which
//! `prometheus-client` reads through a [`Collector`] at scrape time. Its `Family` and
//! `Histogram` are not used on purpose: a `Family` takes a lock and hashes the labels on each
//! access and cannot cap its label sets, and a `Histogram` takes a lock per observation; here
//! a message costs one read lock to find its series and a few atomic adds, as before.

use crate::broker::Broker;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
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

/// Upper bounds of `actor_runtime_message_size_bytes`, in bytes: 256 B to 16 MiB by fours
/// (`+Inf` is implied), around the [default limits](crate::limits).
///
/// ```
/// use actor_runtime::middleware::SIZE_BUCKETS_BYTES;
///
/// assert_eq!(SIZE_BUCKETS_BYTES.first(), Some(&256));
/// assert_eq!(SIZE_BUCKETS_BYTES.last(), Some(&(16 << 20)));
/// ```
pub const SIZE_BUCKETS_BYTES: [u64; 9] = [
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
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
/// | `actor_runtime_message_size_bytes` | histogram | encoded size of the messages processed, [buckets](SIZE_BUCKETS_BYTES) (ours: Dramatiq has none) |
///
/// Every series has the labels `queue_name` and `actor_name`: the queue the message was
/// fetched from and its registered actor, never names a producer wrote in the payload, so
/// made-up names cannot grow the exposition. Enqueue-side counts (retries) use the enqueued
/// message's names; past [`MAX_LABEL_SETS`] distinct pairs, new ones are counted under
/// `queue_name="(other)",actor_name="(other)"` (a value no queue can have), with one warning.
///
/// The worker CLI serves [`render`](Prometheus::render) over HTTP with `--metrics-addr`; in
/// code, add it to the broker and serve the text yourself, as
/// [`CONTENT_TYPE`](Prometheus::CONTENT_TYPE).
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
pub struct Prometheus {
    series: Arc<RwLock<Labels>>,
    /// Holds the [`Exposition`] of `series`, which `prometheus-client` encodes.
    registry: Registry,
    /// When each running message started, and its series, by message id.
    started: Mutex<HashMap<String, (Instant, Arc<Series>)>>,
    /// Set once the label sets reached their cap (and that was logged).
    capped: AtomicBool,
}

impl Default for Prometheus {
    fn default() -> Prometheus {
        let series = Arc::<RwLock<Labels>>::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(series.clone())));
        Prometheus {
            series,
            registry,
            started: Mutex::default(),
            capped: AtomicBool::new(false),
        }
    }
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

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Labels")
            .field("count", &self.count)
            .finish_non_exhaustive()
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
    /// Message sizes: per bucket, the last slot above the largest bound.
    size_buckets: [AtomicU64; SIZE_BUCKETS_BYTES.len() + 1],
    size_sum: AtomicU64,
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

    fn observe_size(&self, bytes: usize) {
        let bytes = bytes as u64;
        let slot = SIZE_BUCKETS_BYTES.partition_point(|&bound| bound < bytes);
        self.size_buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.size_sum.fetch_add(bytes, Ordering::Relaxed);
    }

    fn encode_size_histogram(&self, mut metric: MetricEncoder<'_>) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = SIZE_BUCKETS_BYTES
            .iter()
            .map(|&bound| bound as f64)
            .chain([f64::INFINITY])
            .zip(&self.size_buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.size_sum.load(Ordering::Relaxed) as f64;
        metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn encode_histogram(&self, mut metric: MetricEncoder<'_>) -> std::fmt::Result {
        // Per bucket, not cumulative: the encoder adds them up.
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS_MS
            .iter()
            .map(|&bound| bound as f64)
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1000.0;
        metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// What a family reads from a series.
#[derive(Clone, Copy)]
enum Reading {
    Counter(fn(&Series) -> &AtomicU64),
    Gauge(fn(&Series) -> &AtomicI64),
    Histogram,
    SizeHistogram,
}

/// `(name, help, reading)` of each family, in exposition order. A counter's samples are its
/// name with `_total`, which the encoder adds (`dramatiq_messages_total`).
const FAMILIES: [(&str, &str, Reading); 8] = [
    (
        "dramatiq_messages",
        "The total number of messages processed.",
        Reading::Counter(|s| &s.total),
    ),
    (
        "dramatiq_message_errors",
        "The total number of errored messages.",
        Reading::Counter(|s| &s.errors),
    ),
    (
        "dramatiq_message_retries",
        "The total number of retried messages.",
        Reading::Counter(|s| &s.retries),
    ),
    (
        "dramatiq_message_rejects",
        "The total number of dead-lettered messages.",
        Reading::Counter(|s| &s.rejects),
    ),
    (
        "dramatiq_messages_inprogress",
        "The number of messages in progress.",
        Reading::Gauge(|s| &s.inprogress),
    ),
    (
        "dramatiq_delayed_messages_inprogress",
        "The number of delayed messages in memory.",
        Reading::Gauge(|s| &s.delayed_inprogress),
    ),
    (
        "dramatiq_message_duration_milliseconds",
        "The time spent processing messages.",
        Reading::Histogram,
    ),
    (
        "actor_runtime_message_size_bytes",
        "The encoded size of the messages processed.",
        Reading::SizeHistogram,
    ),
];

/// The series as `prometheus-client` reads them at scrape time.
#[derive(Debug)]
struct Exposition(Arc<RwLock<Labels>>);

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let labels = self.0.read().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<([(&str, &str); 2], &Series)> = labels
            .by_queue
            .iter()
            .flat_map(|(queue, actors)| {
                actors.iter().map(move |(actor, series)| {
                    (
                        [
                            ("queue_name", queue.as_str()),
                            ("actor_name", actor.as_str()),
                        ],
                        &**series,
                    )
                })
            })
            .collect();
        for (name, help, reading) in FAMILIES {
            let kind = match reading {
                Reading::Counter(_) => MetricType::Counter,
                Reading::Gauge(_) => MetricType::Gauge,
                Reading::Histogram | Reading::SizeHistogram => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, series) in &rows {
                let metric = family.encode_family(labels)?;
                match reading {
                    Reading::Counter(value) => {
                        ConstCounter::new(value(series).load(Ordering::Relaxed)).encode(metric)?
                    }
                    Reading::Gauge(value) => {
                        ConstGauge::new(value(series).load(Ordering::Relaxed)).encode(metric)?
                    }
                    Reading::Histogram => series.encode_histogram(metric)?,
                    Reading::SizeHistogram => series.encode_size_histogram(metric)?,
                }
            }
        }
        Ok(())
    }
}

impl Prometheus {
    /// Empty metrics.
    ///
    /// ```
    /// let metrics = actor_runtime::middleware::Prometheus::new();
    /// assert!(metrics.render().contains("# TYPE dramatiq_messages counter"));
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

    fn started(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<Series>)>> {
        self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, ctx: &MessageContext, failed: bool) {
        let started = self.started().remove(&ctx.message.message_id);
        let series = match started {
            Some((started, series)) => {
                series.observe(started.elapsed());
                series.inprogress.fetch_sub(1, Ordering::Relaxed);
                series
            }
            // A message skipped by an earlier middleware never reached our `before` hook.
            None => self.processing(ctx),
        };
        series.total.fetch_add(1, Ordering::Relaxed);
        if failed {
            series.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `Content-Type` of [`render`](Prometheus::render)'s text: OpenMetrics, which
    /// Prometheus asks for first.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The metrics in the OpenMetrics text format, as `prometheus-client` writes it: `# HELP`
    /// and `# TYPE` for every family, then one line per series, sorted by queue and actor,
    /// then `# EOF`.
    ///
    /// ```
    /// let text = actor_runtime::middleware::Prometheus::new().render();
    /// assert!(text.starts_with("# HELP dramatiq_messages "));
    /// assert!(text.contains("# TYPE dramatiq_message_duration_milliseconds histogram\n"));
    /// assert!(text.ends_with("# EOF\n"));
    /// ```
    pub fn render(&self) -> String {
        let count = self.series.read().unwrap_or_else(|e| e.into_inner()).count;
        let mut out = String::with_capacity(1024 + count * 2048);
        // Writing to a `String` cannot fail, and our collector fails only when writing does.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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
        let series = self.processing(ctx);
        series.inprogress.fetch_add(1, Ordering::Relaxed);
        series.observe_size(ctx.payload_size());
        self.started()
            .insert(ctx.message.message_id.clone(), (Instant::now(), series));
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
        // `le` comes first, as `prometheus-client` writes it (label order carries no meaning).
        let labels = r#"queue_name="q",actor_name="a\"b""#;
        for line in [
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{le="5.0",{labels}}} 1"#),
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{le="10.0",{labels}}} 2"#),
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{le="900000.0",{labels}}} 2"#),
            format!(r#"dramatiq_message_duration_milliseconds_bucket{{le="+Inf",{labels}}} 3"#),
            format!(r#"dramatiq_message_duration_milliseconds_count{{{labels}}} 3"#),
            format!(r#"dramatiq_message_duration_milliseconds_sum{{{labels}}} 3600011.0"#),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn size_buckets_are_le_inclusive_and_sum_bytes() {
        let metrics = Prometheus::new();
        let series = metrics.series("q", "a");
        series.observe_size(256);
        series.observe_size(300);
        series.observe_size(20 << 20);
        let text = metrics.render();
        let labels = r#"queue_name="q",actor_name="a""#;
        for line in [
            format!(r#"actor_runtime_message_size_bytes_bucket{{le="256.0",{labels}}} 1"#),
            format!(r#"actor_runtime_message_size_bytes_bucket{{le="1024.0",{labels}}} 2"#),
            format!(r#"actor_runtime_message_size_bytes_bucket{{le="16777216.0",{labels}}} 2"#),
            format!(r#"actor_runtime_message_size_bytes_bucket{{le="+Inf",{labels}}} 3"#),
            format!(
                r#"actor_runtime_message_size_bytes_sum{{{labels}}} {}.0"#,
                556 + (20 << 20)
            ),
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
        for (name, kind) in [
            ("dramatiq_messages", "counter"),
            ("dramatiq_message_errors", "counter"),
            ("dramatiq_message_retries", "counter"),
            ("dramatiq_message_rejects", "counter"),
            ("dramatiq_messages_inprogress", "gauge"),
            ("dramatiq_delayed_messages_inprogress", "gauge"),
            ("dramatiq_message_duration_milliseconds", "histogram"),
            ("actor_runtime_message_size_bytes", "histogram"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
        }
    }

    #[test]
    fn series_keep_dramatiqs_names_and_labels() {
        let metrics = Prometheus::new();
        let series = metrics.series("emails", "send");
        series.total.fetch_add(2, Ordering::Relaxed);
        series.errors.fetch_add(1, Ordering::Relaxed);
        series.retries.fetch_add(1, Ordering::Relaxed);
        series.rejects.fetch_add(1, Ordering::Relaxed);
        series.inprogress.fetch_add(3, Ordering::Relaxed);
        let text = metrics.render();
        let labels = r#"{queue_name="emails",actor_name="send"}"#;
        for line in [
            format!("dramatiq_messages_total{labels} 2"),
            format!("dramatiq_message_errors_total{labels} 1"),
            format!("dramatiq_message_retries_total{labels} 1"),
            format!("dramatiq_message_rejects_total{labels} 1"),
            format!("dramatiq_messages_inprogress{labels} 3"),
            format!("dramatiq_delayed_messages_inprogress{labels} 0"),
            format!("dramatiq_message_duration_milliseconds_count{labels} 0"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("dramatiq_message_duration_milliseconds_bucket{"))
            .collect();
        assert_eq!(buckets.len(), DURATION_BUCKETS_MS.len() + 1);
        assert!(buckets[0].contains(r#"le="5.0""#), "{}", buckets[0]);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
