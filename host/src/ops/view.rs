//! The job as users see it: [`JobView`], in JSON (`--json`, the API) and in text.
//!
//! Every field has one key. A payload or result is a [`Body`]: its size, how its bytes read
//! (`json` when they are a JSON document, shown as that document; `text` when they are UTF-8,
//! shown as a string; `base64` otherwise), and the value itself, unless the body is larger
//! than [`SUMMARY_LIMIT`] and the caller did not ask for full bodies.

use std::fmt::{self, Write as _};

use base64::Engine as _;
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use crate::store::{AttemptRecord, Job, JobState, Lease, Progress, Tick, Timestamp};

/// Bodies larger than this are summarised (size and encoding, no value) unless asked for.
pub const SUMMARY_LIMIT: usize = 64 << 10;

/// How a body's bytes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// A JSON document, shown as that document.
    Json,
    /// UTF-8 text that is not JSON, shown as a string.
    Text,
    /// Anything else, shown as standard base64.
    Base64,
}

/// A payload or result as shown.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    bytes: &'a [u8],
    full: bool,
}

impl<'a> Body<'a> {
    /// `bytes`, summarised when over [`SUMMARY_LIMIT`] unless `full`.
    pub fn new(bytes: &'a [u8], full: bool) -> Self {
        Body { bytes, full }
    }

    /// How the bytes read.
    pub fn encoding(&self) -> Encoding {
        match std::str::from_utf8(self.bytes) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                Encoding::Json
            }
            Ok(_) => Encoding::Text,
            Err(_) => Encoding::Base64,
        }
    }

    /// Whether the value is left out for its size.
    pub fn summarised(&self) -> bool {
        !self.full && self.bytes.len() > SUMMARY_LIMIT
    }

    fn text(&self) -> String {
        match self.encoding() {
            Encoding::Json | Encoding::Text => String::from_utf8_lossy(self.bytes).into_owned(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(self.bytes),
        }
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoding = self.encoding();
        let mut body = serializer.serialize_struct("Body", 4)?;
        body.serialize_field("bytes", &self.bytes.len())?;
        body.serialize_field("encoding", &encoding)?;
        if self.summarised() {
            body.serialize_field("summarised", &true)?;
        } else if encoding == Encoding::Json {
            let text = std::str::from_utf8(self.bytes).unwrap_or_default();
            let value: Box<serde_json::value::RawValue> =
                serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
            body.serialize_field("value", &value)?;
        } else {
            body.serialize_field("value", &self.text())?;
        }
        body.end()
    }
}

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (bytes, encoding) = (self.bytes.len(), self.encoding());
        if self.summarised() {
            return write!(f, "({bytes} bytes of {encoding:?}, not shown)");
        }
        match encoding {
            Encoding::Json | Encoding::Text => f.write_str(&self.text()),
            Encoding::Base64 => write!(f, "(base64, {bytes} bytes) {}", self.text()),
        }
    }
}

/// One job, as `kiln status`, `kiln jobs` and the API show it.
#[derive(Debug, Clone, Copy)]
pub struct JobView<'a> {
    pub job: &'a Job,
    /// Show bodies over [`SUMMARY_LIMIT`] too.
    pub full: bool,
}

#[derive(Serialize)]
struct JobJson<'a> {
    id: &'a str,
    handler: &'a str,
    queue: &'a str,
    state: JobState,
    priority: i32,
    attempts: u32,
    max_attempts: u32,
    run_at: Timestamp,
    created_at: Timestamp,
    updated_at: Timestamp,
    finished_at: Option<Timestamp>,
    lease: &'a Option<Lease>,
    progress: &'a Option<Progress>,
    error: &'a Option<String>,
    unique_key: &'a Option<String>,
    cancel_requested: bool,
    /// The schedule tick the job is for; absent for jobs no schedule enqueued.
    #[serde(skip_serializing_if = "Option::is_none")]
    tick: &'a Option<Tick>,
    payload: Body<'a>,
    result: Option<Body<'a>>,
    history: &'a [AttemptRecord],
}

impl<'a> JobView<'a> {
    /// `job`, with large bodies summarised unless `full`.
    pub fn new(job: &'a Job, full: bool) -> Self {
        JobView { job, full }
    }

    /// The job's result, if it has one.
    pub fn result(&self) -> Option<Body<'a>> {
        self.job.result.as_deref().map(|r| Body::new(r, self.full))
    }

    fn json(&self) -> JobJson<'a> {
        let job = self.job;
        JobJson {
            id: &job.id,
            handler: &job.handler,
            queue: &job.queue,
            state: job.state,
            priority: job.priority,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            run_at: job.run_at,
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
            lease: &job.lease,
            progress: &job.progress,
            error: &job.error,
            unique_key: &job.unique_key,
            cancel_requested: job.cancel_requested,
            tick: &job.tick,
            payload: Body::new(&job.payload, self.full),
            result: self.result(),
            history: &job.history,
        }
    }

    /// The text `kiln status` prints: the job's fields, one line per attempt, then the last
    /// attempt's log.
    pub fn text(&self) -> String {
        let job = self.job;
        let mut out = String::new();
        let _ = writeln!(out, "job       {}", job.id);
        let _ = writeln!(
            out,
            "handler   {}  queue {}  priority {}",
            job.handler, job.queue, job.priority
        );
        let _ = writeln!(
            out,
            "state     {}  attempts {}/{}",
            job.state, job.attempts, job.max_attempts
        );
        let _ = writeln!(out, "run at    {}  created {}", job.run_at, job.created_at);
        if let Some(tick) = &job.tick {
            let how = if tick.manual { " (triggered)" } else { "" };
            let _ = writeln!(out, "schedule  {}  tick {}{how}", tick.schedule, tick.at);
        }
        if let Some(progress) = &job.progress {
            let note = progress.message.as_deref().unwrap_or("");
            let _ = writeln!(out, "progress  {}% {note}", progress.percent);
        }
        let _ = writeln!(out, "payload   {}", Body::new(&job.payload, self.full));
        if let Some(result) = self.result() {
            let _ = writeln!(out, "result    {result}");
        }
        if let Some(error) = &job.error {
            let _ = writeln!(out, "error     {error}");
        }
        for a in &job.history {
            let _ = writeln!(
                out,
                "  attempt {} {} {}ms digest {} {}",
                a.attempt,
                a.outcome,
                a.wall_ms,
                a.digest.as_deref().map_or("-", |d| &d[..d.len().min(12)]),
                a.message.as_deref().unwrap_or("")
            );
            let _ = write_grant_usage(&mut out, a);
        }
        if let Some(last) = job.history.last() {
            let _ = write_log(&mut out, last);
        }
        out
    }
}

/// The log of attempt `a` (the last one, in `kiln status`), indented under a heading;
/// nothing when it logged nothing.
fn write_log(out: &mut String, a: &AttemptRecord) -> fmt::Result {
    if a.log.is_empty() {
        return Ok(());
    }
    let cut = if a.log_truncated {
        ", cut at max_log"
    } else {
        ""
    };
    writeln!(out, "log of attempt {}{cut}:", a.attempt)?;
    for line in a.log.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// What an attempt did through its grants, one indented line per capability it used.
fn write_grant_usage(out: &mut String, a: &AttemptRecord) -> fmt::Result {
    if let Some(h) = &a.http {
        writeln!(
            out,
            "    http  {} requests, {} denied, {} bytes sent, {} bytes received",
            h.requests, h.denied, h.bytes_sent, h.bytes_received
        )?;
    }
    if let Some(t) = &a.tcp {
        writeln!(
            out,
            "    tcp   {} connections, {} denied",
            t.connections, t.denied
        )?;
    }
    Ok(())
}

impl Serialize for JobView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::{AttemptRecord, Body, Encoding, SUMMARY_LIMIT};

    #[test]
    fn attempt_records_without_grant_usage_still_decode_and_stay_short() {
        let old = r#"{"attempt":1,"digest":null,"started_at":1,"ended_at":2,"outcome":"ok","message":null,"wall_ms":1,"fuel":null}"#;
        let record: AttemptRecord = serde_json::from_str(old).unwrap();
        assert_eq!((record.http, record.tcp), (None, None));
        let written = serde_json::to_string(&record).unwrap();
        assert!(
            !written.contains("http") && !written.contains("tcp"),
            "{written}"
        );
    }

    #[test]
    fn bodies_show_as_json_text_or_base64() {
        let json = serde_json::to_value(Body::new(br#"{"a":1}"#, false)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"bytes": 7, "encoding": "json", "value": {"a": 1}})
        );
        let text = serde_json::to_value(Body::new(b"hello", false)).unwrap();
        assert_eq!(text["encoding"], "text");
        assert_eq!(text["value"], "hello");
        let binary = serde_json::to_value(Body::new(&[0xff, 0, 1], false)).unwrap();
        assert_eq!(binary["encoding"], "base64");
        assert_eq!(binary["value"], "/wAB");
    }

    #[test]
    fn large_bodies_are_summarised_unless_asked_for() {
        let big = vec![b'x'; SUMMARY_LIMIT + 1];
        let summary = serde_json::to_value(Body::new(&big, false)).unwrap();
        assert_eq!(summary["summarised"], true);
        assert!(summary.get("value").is_none());
        assert_eq!(Body::new(&big, true).encoding(), Encoding::Text);
        let full = serde_json::to_value(Body::new(&big, true)).unwrap();
        assert_eq!(full["value"].as_str().unwrap().len(), SUMMARY_LIMIT + 1);
    }
}
