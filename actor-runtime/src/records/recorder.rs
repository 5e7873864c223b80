//! The [`Recorder`] middleware: turns the broker's and worker's hooks into state changes
//! for the buffer. It never waits for PostgreSQL.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::buffer::{ErrorEntry, Row};
use super::flush::rfc3339;
use super::state::JobState;
use super::Inner;
use crate::broker::{Broker, Fate, MessageContext, Middleware};
use crate::message::{canonical_queue, Message};
use crate::middleware::{current_message, Retries};

/// A run's start, kept in its [`MessageContext`] until it ends.
#[derive(Clone, Debug)]
pub(crate) struct RunStart {
    attempt: i32,
    instant: Instant,
    at: SystemTime,
    /// The message id as the rows share it.
    id: Arc<str>,
}

/// The middleware that records messages in `job_executions`; from
/// [`Records::recorder`](super::Records::recorder). Add it last, so it sees the fate the
/// other middleware decided.
pub struct Recorder {
    inner: Arc<Inner>,
    worker_id: OnceLock<Arc<str>>,
    default_max_retries: OnceLock<Option<u32>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("table", &self.inner.table)
            .finish()
    }
}

impl Recorder {
    pub(crate) fn new(inner: Arc<Inner>) -> Recorder {
        Recorder {
            inner,
            worker_id: OnceLock::new(),
            default_max_retries: OnceLock::new(),
        }
    }

    /// A row of `state` for a message the producer side sees (its enqueue).
    fn row(&self, message: &Message, queue: &str, state: JobState, attempt: i32) -> Row {
        let mut row = Row::new(
            message.message_id.as_str(),
            canonical_queue(queue),
            message.actor_name.clone(),
            state,
            attempt,
        );
        self.fill(&mut row, message);
        row
    }

    /// A row of `state` for the message a worker runs: its names shared, not copied.
    fn run_row(&self, ctx: &MessageContext, id: Arc<str>, state: JobState, attempt: i32) -> Row {
        let mut row = Row::new(
            id,
            ctx.queue_shared().clone(),
            Cow::Borrowed(ctx.actor().name),
            state,
            attempt,
        );
        self.fill(&mut row, &ctx.message);
        row
    }

    /// What every row learns from the message itself.
    fn fill(&self, row: &mut Row, message: &Message) {
        row.enqueued_at = Some(UNIX_EPOCH + Duration::from_millis(message.message_timestamp));
        row.group_id = message
            .options
            .get("group_completion_uuid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let record_args = &self.inner.config.record_args;
        if !record_args.is_empty() && record_args.contains(&message.actor_name) {
            row.args = Some(json!({"args": message.args, "kwargs": message.kwargs}));
        }
    }

    fn worker_id(&self, broker: &Broker) -> Arc<str> {
        self.worker_id
            .get_or_init(|| {
                broker
                    .worker_id()
                    .map(Arc::from)
                    .unwrap_or_else(|| format!("pid-{}", std::process::id()).into())
            })
            .clone()
    }

    fn max_retries(&self, broker: &Broker, ctx: &MessageContext) -> Option<i32> {
        let default = *self
            .default_max_retries
            .get_or_init(|| broker.find::<Retries>().and_then(|r| r.max_retries));
        let max = match ctx.message.options.get("max_retries") {
            Some(Value::Number(n)) => n.as_u64().map(|n| n.min(i32::MAX as u64) as u32),
            _ => ctx.actor().options.max_retries.or(default),
        };
        max.map(|m| m.min(i32::MAX as u32) as i32)
    }

    /// A pipeline step succeeded, so `Pipelines` enqueued the next one (else the message
    /// would have failed): its record learns its parent. Its state stays whatever is newer.
    async fn pipeline_child(&self, ctx: &MessageContext) {
        let Some(next) = ctx.message.options.get("pipe_target") else {
            return;
        };
        let field = |key: &str| next.get(key).and_then(Value::as_str);
        if let (Some(id), Some(queue), Some(actor)) = (
            field("message_id"),
            field("queue_name"),
            field("actor_name"),
        ) {
            let mut row = Row::new(
                id,
                canonical_queue(queue),
                actor.to_owned(),
                JobState::Enqueued,
                1,
            );
            row.parent_id = Some(ctx.message.message_id.clone());
            self.inner.buffer.push(row).await;
        }
    }

    /// The end of a run: its attempt and, if this process saw it start, its duration.
    fn finish(&self, ctx: &MessageContext, state: JobState) -> Row {
        let now = SystemTime::now();
        let mut row = match &ctx.record_start {
            Some(start) => {
                let mut row = self.run_row(ctx, start.id.clone(), state, start.attempt);
                row.started_at = Some(start.at);
                row.duration_ms = Some(start.instant.elapsed().as_micros() as f64 / 1000.0);
                row
            }
            None => {
                let attempt = ctx.message.retries().min(i32::MAX as u32 - 1) as i32 + 1;
                self.run_row(ctx, ctx.message.message_id.as_str().into(), state, attempt)
            }
        };
        let attempt = row.attempt;
        if state != JobState::Retrying {
            row.finished_at = Some(now);
        }
        if let Some(error) = ctx.error() {
            let text = crate::truncate::truncate(&error.message).into_owned();
            row.errors.push(ErrorEntry {
                attempt,
                at: rfc3339(now),
                kind: error.type_name.clone(),
                message: text.clone(),
            });
            row.last_error = Some(format!("{}: {text}", error.type_name));
        }
        row
    }
}

#[async_trait]
impl Middleware for Recorder {
    async fn after_enqueue(&self, _: &Broker, message: &Message, delay: Option<Duration>) {
        if message.retries() > 0 {
            // A retry's enqueue: the failed run's `retrying` record says it, with its eta.
            return;
        }
        let state = if delay.is_some() {
            JobState::Delayed
        } else {
            JobState::Enqueued
        };
        let mut row = self.row(message, &message.queue_name, state, 1);
        // This process's first sight of the message: nothing of it stored by us yet.
        row.fresh = true;
        row.eta = message
            .eta()
            .map(|eta| UNIX_EPOCH + Duration::from_millis(eta));
        row.parent_id = current_message()
            .map(|parent| parent.message_id.clone())
            .filter(|parent| *parent != message.message_id);
        self.inner.buffer.push(row).await;
    }

    async fn before_process_message(
        &self,
        broker: &Broker,
        ctx: &mut MessageContext,
    ) -> Result<(), crate::broker::Skip> {
        let attempt = ctx.message.retries().min(i32::MAX as u32 - 1) as i32 + 1;
        let now = SystemTime::now();
        let id: Arc<str> = ctx.message.message_id.as_str().into();
        ctx.record_start = Some(RunStart {
            attempt,
            instant: Instant::now(),
            at: now,
            id: id.clone(),
        });
        let mut row = self.run_row(ctx, id, JobState::Running, attempt);
        // A first run: this process has stored nothing of the message (a producer may have;
        // the flusher's plain INSERT then falls back to the upsert).
        row.fresh = attempt == 1;
        row.started_at = Some(now);
        row.worker_id = Some(self.worker_id(broker));
        row.max_retries = self.max_retries(broker, ctx);
        self.inner.buffer.push(row).await;
        Ok(())
    }

    async fn before_ack(&self, broker: &Broker, ctx: &MessageContext) {
        let row = match ctx.fate() {
            _ if ctx.is_cancelled() => self.finish(ctx, JobState::Cancelled),
            Fate::Retry { delay } => {
                let mut row = self.finish(ctx, JobState::Retrying);
                row.eta = Some(SystemTime::now() + *delay);
                row
            }
            _ if ctx.result().is_none() && ctx.error().is_none() => {
                self.finish(ctx, JobState::Skipped)
            }
            _ => {
                self.pipeline_child(ctx).await;
                self.finish(ctx, JobState::Succeeded)
            }
        };
        let mut row = row;
        row.worker_id = Some(self.worker_id(broker));
        self.inner.buffer.push(row).await;
    }

    async fn before_nack(&self, broker: &Broker, ctx: &MessageContext) {
        let reason = ctx.failure_reason().unwrap_or_default();
        let exhausted =
            reason.starts_with("retries exhausted") && ctx.actor().options.retry_when.is_none();
        let state = if exhausted {
            JobState::Dead
        } else if ctx.result().is_none() && ctx.error().is_none() {
            // Never ran: a middleware (AgeLimit...) skipped and dead-lettered it.
            JobState::Skipped
        } else {
            JobState::Failed
        };
        let mut row = self.finish(ctx, state);
        if row.last_error.is_none() && !reason.is_empty() {
            row.last_error = Some(crate::truncate::truncate(reason).into_owned());
        }
        row.worker_id = Some(self.worker_id(broker));
        self.inner.buffer.push(row).await;
    }

    async fn after_worker_shutdown(&self, _: &Broker) {
        let timeout = self.inner.config.shutdown_timeout;
        match tokio::time::timeout(timeout, super::flush::flush_all(&self.inner)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, buffered = self.inner.buffer.len(), "job records: flush at shutdown failed")
            }
            Err(_) => {
                tracing::warn!(
                    buffered = self.inner.buffer.len(),
                    "job records: flush at shutdown timed out"
                )
            }
        }
    }
}
