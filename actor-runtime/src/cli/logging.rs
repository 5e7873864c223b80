//! Log set-up: Dramatiq's line format (or JSON), to stderr or appended to `--log-file`.
//!
//! Every process of a supervised worker appends to the same file itself (lines are written
//! whole, with `O_APPEND`), so logs do not pass through the supervisor.

use std::fmt;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use super::args::LogFormat;

/// Installs the global subscriber. `default_level` applies when `RUST_LOG` is unset and
/// there is no `-v`; `role` (e.g. `worker 1`, `supervisor`) tags every line.
pub(crate) fn init(
    format: LogFormat,
    verbose: u8,
    default_level: &str,
    log_file: Option<&Path>,
    role: Option<String>,
) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives.trim())
            .map_err(|e| format!("RUST_LOG is not a valid filter: {e}"))?,
        _ => EnvFilter::new(match verbose {
            0 => default_level,
            1 => "debug",
            _ => "trace",
        }),
    };
    let writer = match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open --log-file {}: {e}", path.display()))?;
            BoxMakeWriter::new(Arc::new(file))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(LineFormat {
            json: format == LogFormat::Json,
            pid: std::process::id(),
            role,
        })
        .finish();
    // A program that installed its own subscriber keeps it.
    let _ = tracing::subscriber::set_global_default(subscriber);
    // Panics (an actor's panic fails its message; the worker goes on) go to the same log, in
    // the same format, instead of raw stderr.
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic = %payload, %location, "panicked");
    }));
    Ok(())
}

/// `[time] [PID n] [role] [LEVEL] target: message key=value`, or the same as one JSON object.
struct LineFormat {
    json: bool,
    pid: u32,
    role: Option<String>,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut time = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        if self.json {
            let mut fields = JsonFields(Map::new());
            event.record(&mut fields);
            let mut line = Map::new();
            line.insert("timestamp".into(), time.into());
            line.insert("level".into(), meta.level().as_str().into());
            line.insert("pid".into(), self.pid.into());
            if let Some(role) = &self.role {
                line.insert("process".into(), role.as_str().into());
            }
            line.insert("target".into(), meta.target().into());
            if let Some(message) = fields.0.remove("message") {
                line.insert("message".into(), message);
            }
            for (key, value) in fields.0 {
                // An event field named like a line key (`pid`...) must not hide it.
                let key = if line.contains_key(&key) {
                    format!("field_{key}")
                } else {
                    key
                };
                line.insert(key, value);
            }
            writeln!(writer, "{}", Value::Object(line))
        } else {
            write!(writer, "[{time}] [PID {}] ", self.pid)?;
            if let Some(role) = &self.role {
                write!(writer, "[{role}] ")?;
            }
            write!(writer, "[{}] {}: ", meta.level(), meta.target())?;
            ctx.field_format().format_fields(writer.by_ref(), event)?;
            writeln!(writer)
        }
    }
}

/// An event's fields as JSON values.
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
