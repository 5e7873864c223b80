//! Log set-up: Dramatiq's line format (or JSON), to stderr or appended to `--log-file`.
//!
//! Every process of a supervised worker appends to the same file itself (lines are written
//! whole, with `O_APPEND`), so logs do not pass through the supervisor.
//!
//! Field values can carry a producer's data (an actor name, an error quoting an argument),
//! so each is cut to about 1 KB, and the text format escapes control characters: an event
//! is one line, whatever its fields hold, and cannot forge another or drive a terminal.
//!
//! A line carries the fields of the spans it was logged in (the worker runs each message in
//! a `message` span: `message_id`, `actor`, `queue`, `retries`), after its own; list fields
//! (`queues`, `actors`) are JSON arrays in the JSON format. The `message` span is debug
//! level (a span per message costs the queue's hot path); at info level an actor's own lines
//! still carry those four fields, read from the current message when the line is written.

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use super::args::LogFormat;
use crate::log_fields::LIST_FIELDS;
use crate::middleware::current_message;
use crate::truncate::truncate;

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
        .fmt_fields(SpanFields)
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
        let mut spans = span_fields(ctx);
        if !spans.contains_key("message_id") {
            add_current_message(&mut spans);
        }
        if self.json {
            let mut fields = JsonFields(Map::new());
            event.record(&mut fields);
            for (key, value) in spans {
                fields.0.entry(key).or_insert(value);
            }
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
            let mut fields = TextFields::default();
            event.record(&mut fields);
            for (key, value) in spans {
                if !fields.names.contains(&key) {
                    fields.push(&key, &value);
                }
            }
            writeln!(
                writer,
                "[{}] {}: {}",
                meta.level(),
                meta.target(),
                fields.text
            )
        }
    }
}

/// Inside an actor whose `message` span is off (it is debug level, so at the default info
/// level), the message's fields from [`current_message`]: the actor's own lines carry their
/// context at no cost per message, only per line.
fn add_current_message(fields: &mut Map<String, Value>) {
    let Some(message) = current_message() else {
        return;
    };
    fields.insert(
        "message_id".into(),
        truncate(&message.message_id).into_owned().into(),
    );
    fields.insert(
        "actor".into(),
        truncate(&message.actor_name).into_owned().into(),
    );
    fields.insert(
        "queue".into(),
        truncate(message.canonical_queue()).into_owned().into(),
    );
    fields.insert("retries".into(), message.retries().into());
}

/// The fields of the spans `ctx`'s event is in, outermost first, an inner span's winning.
fn span_fields<S, N>(ctx: &FmtContext<'_, S, N>) -> Map<String, Value>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let mut all = Map::new();
    let Some(scope) = ctx.event_scope() else {
        return all;
    };
    for span in scope.from_root() {
        let extensions = span.extensions();
        let Some(fields) = extensions.get::<FormattedFields<N>>() else {
            continue;
        };
        // Written by [`SpanFields`]; another formatter's text is left out.
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&fields.fields) {
            all.extend(map);
        }
    }
    all
}

/// Keeps a span's fields as a JSON object (each value cut as an event's are), for
/// [`LineFormat`] to add to the lines logged in the span.
struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut json = JsonFields(Map::new());
        fields.record(&mut json);
        write!(writer, "{}", Value::Object(json.0))
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut json = match serde_json::from_str::<Value>(&current.fields) {
            Ok(Value::Object(map)) => JsonFields(map),
            _ => JsonFields(Map::new()),
        };
        fields.record(&mut json);
        current.fields = Value::Object(json.0).to_string();
        Ok(())
    }
}

/// An event's fields as `message key=value ...`, as tracing's default formatter writes them,
/// each value cut to about 1 KB and escaped.
#[derive(Default)]
struct TextFields {
    text: String,
    /// The fields written, so a span's field of the same name is not written again.
    names: Vec<String>,
}

impl TextFields {
    /// A span's field: strings as they are, other values as JSON.
    fn push(&mut self, name: &str, value: &Value) {
        let shown = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        self.record_debug_named(name, &format_args!("{shown}"));
    }

    fn record_debug_named(&mut self, name: &str, value: &dyn fmt::Debug) {
        // Metadata of `log` records, shown elsewhere.
        if name.starts_with("log.") {
            return;
        }
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.text.push_str(name);
            self.text.push('=');
            self.names.push(name.to_owned());
        }
        push_escaped(&mut self.text, &truncate(&format!("{value:?}")));
    }
}

impl Visit for TextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_debug_named(field.name(), value);
    }
}

/// Appends `text` with control characters, Unicode line and paragraph separators and
/// bidirectional overrides escaped (`\n`, `\u{1b}`...).
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// An event's fields as JSON values (serde escapes them), each string cut to about 1 KB.
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
        self.0
            .insert(field.name().into(), truncate(value).into_owned().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if LIST_FIELDS.contains(&field.name()) {
            // Logged as JSON text (`crate::log_fields::list`): the array itself.
            if let Ok(list @ Value::Array(_)) = serde_json::from_str::<Value>(&text) {
                self.0.insert(field.name().into(), list);
                return;
            }
        }
        self.0
            .insert(field.name().into(), truncate(&text).into_owned().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The lines `emit` logs through [`LineFormat`].
    fn logged(json: bool, emit: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(SpanFields)
            .with_writer(move || Sink(sink.clone()))
            .event_format(LineFormat {
                json,
                pid: 1,
                role: None,
            })
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_escape_control_characters() {
        let forged = "a\n[2030-01-01] [PID 1] [CRITICAL] forged\u{1b}[2J\u{2028}\u{202e}";
        let text = logged(false, || {
            tracing::error!(actor = %forged, name = forged, "unknown actor {forged}");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{2028}'),
            "{text}"
        );
        assert!(
            text.contains(
                r"actor=a\n[2030-01-01] [PID 1] [CRITICAL] forged\u{1b}[2J\u{2028}\u{202e}"
            ),
            "{text}"
        );
        assert!(text.contains(r"unknown actor a\n[2030"), "{text}");
        assert!(text.contains(r#"name="a\n[2030"#), "{text}");
    }

    #[test]
    fn text_and_json_fields_are_cut_to_about_a_kilobyte() {
        let huge = "x".repeat(1 << 20);
        for json in [false, true] {
            let text = logged(json, || {
                tracing::error!(error = %huge, other = huge.as_str(), "failed: {huge}");
            });
            assert_eq!(text.lines().count(), 1);
            assert!(text.len() < 4 * 1100, "{json}: {} bytes", text.len());
            assert_eq!(text.matches("bytes cut").count(), 3, "{json}: {text}");
        }
    }

    #[test]
    fn lines_carry_the_fields_of_their_spans_after_their_own() {
        let emit = || {
            let span = tracing::info_span!(
                "message",
                message_id = "m-1",
                actor = "send",
                retries = 2u32
            );
            span.in_scope(|| tracing::info!(actor = "own", "sending"));
        };
        let line: Value = serde_json::from_str(logged(true, emit).trim()).unwrap();
        assert_eq!(line["message"], "sending");
        assert_eq!(line["message_id"], "m-1");
        assert_eq!(line["retries"], 2);
        assert_eq!(line["actor"], "own", "the event's own field wins");

        let text = logged(false, emit);
        assert!(
            text.trim_end()
                .ends_with(r#": sending actor="own" message_id=m-1 retries=2"#),
            "{text}"
        );
    }

    #[test]
    fn list_fields_are_json_arrays_in_json_and_readable_in_text() {
        let emit = || {
            let queues = crate::log_fields::list(["default", "slow"]);
            tracing::info!(queues = %queues, other = %queues, "worker started");
        };
        let line: Value = serde_json::from_str(logged(true, emit).trim()).unwrap();
        assert_eq!(line["queues"], serde_json::json!(["default", "slow"]));
        // Only list fields are read as JSON: an error's text stays a string.
        assert_eq!(line["other"], r#"["default","slow"]"#);
        let text = logged(false, emit);
        assert!(text.contains(r#"queues=["default","slow"]"#), "{text}");
    }

    #[test]
    fn json_lines_keep_control_characters_escaped() {
        let text = logged(true, || {
            tracing::error!(actor = %"a\n\u{1b}b", "x");
        });
        assert_eq!(text.lines().count(), 1);
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["actor"], "a\n\u{1b}b");
    }
}
