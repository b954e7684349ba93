//! Function logs: what a guest writes to stdout and stderr and its `quiver:ml/log`
//! lines, per call, tagged with the call's trace id and the function's version,
//! kept in a ring of the newest [`RING_LINES`] lines per function (what `quiver logs
//! NAME [--follow]` reads). A call keeps at most [`CALL_BYTES`] of output; the rest
//! is dropped and counted (`quiver_log_dropped_bytes_total`), never an error: a
//! chatty guest is not made to fail by its logging.

use prometheus::{IntCounterVec, Opts};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Lines kept per function.
pub const RING_LINES: usize = 1000;
/// Bytes of stdout plus stderr one call may leave (each stream its own budget).
pub const CALL_BYTES: usize = 64 << 10;
/// A longer line is cut here (on a character boundary).
pub const LINE_BYTES: usize = 4096;
/// Lines a read returns at most.
pub const MAX_READ: usize = RING_LINES;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    /// Increasing across all functions of this host; a reader continues after it.
    pub seq: u64,
    pub time_ms: u64,
    /// `stdout`, `stderr`, or the `quiver:ml/log` level (`info`, `warn`, ...).
    pub stream: &'static str,
    /// The call's W3C trace id (empty outside a call).
    pub trace_id: String,
    /// `name@version`.
    pub version: String,
    pub text: String,
}

/// Every function's ring, with the host-wide sequence.
pub struct Logs {
    rings: Mutex<HashMap<(String, String), VecDeque<LogLine>>>,
    seq: AtomicU64,
    dropped: IntCounterVec,
}

impl Logs {
    pub fn new() -> anyhow::Result<Arc<Logs>> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "quiver_log_dropped_bytes_total",
                "Guest output past a call's log budget, dropped",
            ),
            &["tenant", "function"],
        )?;
        Ok(Arc::new(Logs {
            rings: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            dropped,
        }))
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.dropped.clone())]
    }

    /// Append `text`'s lines (an empty last line is not one).
    fn push(&self, sink: &LogSink, stream: &'static str, trace_id: &str, text: &str) {
        let Ok(mut rings) = self.rings.lock() else {
            return;
        };
        let ring = rings
            .entry((sink.tenant.clone(), sink.function.clone()))
            .or_default();
        let time_ms = crate::unix_ms();
        for line in text.lines() {
            ring.push_back(LogLine {
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                time_ms,
                stream,
                trace_id: trace_id.to_string(),
                version: sink.version.clone(),
                text: cut(line, LINE_BYTES).to_string(),
            });
            if ring.len() > RING_LINES {
                ring.pop_front();
            }
        }
    }

    /// Lines of `function` after `after` (a `seq`), oldest first, at most `limit`
    /// (the newest ones when there are more).
    pub fn read(&self, tenant: &str, function: &str, after: u64, limit: usize) -> Vec<LogLine> {
        let Ok(rings) = self.rings.lock() else {
            return Vec::new();
        };
        let Some(ring) = rings.get(&(tenant.to_string(), function.to_string())) else {
            return Vec::new();
        };
        let newer: Vec<&LogLine> = ring.iter().filter(|l| l.seq > after).collect();
        let skip = newer.len().saturating_sub(limit.min(MAX_READ));
        newer.into_iter().skip(skip).cloned().collect()
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Where one deployment's lines go.
pub struct LogSink {
    pub logs: Arc<Logs>,
    pub tenant: String,
    pub function: String,
    pub version: String,
}

impl LogSink {
    /// A `quiver:ml/log` line.
    pub fn line(&self, level: &'static str, trace_id: &str, text: &str) {
        self.logs.push(self, level, trace_id, cut(text, CALL_BYTES));
    }

    /// Move what a call wrote to its streams into the ring.
    pub fn flush(&self, trace_id: &str, stdout: &Capture, stderr: &Capture) {
        for (name, c) in [("stdout", stdout), ("stderr", stderr)] {
            let (bytes, dropped) = c.take();
            if dropped > 0 {
                self.logs
                    .dropped
                    .with_label_values(&[&self.tenant, &self.function])
                    .inc_by(dropped as u64);
            }
            if !bytes.is_empty() {
                self.logs
                    .push(self, name, trace_id, &String::from_utf8_lossy(&bytes));
            }
        }
    }
}

/// A guest's stdout or stderr: bytes kept up to [`CALL_BYTES`] until the call ends.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn write(&self, buf: &[u8]) {
        if let Ok(mut c) = self.0.lock() {
            let room = CALL_BYTES.saturating_sub(c.bytes.len());
            let keep = buf.len().min(room);
            c.bytes.extend_from_slice(&buf[..keep]);
            c.dropped += buf.len() - keep;
        }
    }

    /// What was written since the last take, and how many bytes were dropped.
    fn take(&self) -> (Vec<u8>, usize) {
        match self.0.lock() {
            Ok(mut c) => (std::mem::take(&mut c.bytes), std::mem::take(&mut c.dropped)),
            Err(_) => (Vec::new(), 0),
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        // All of it is taken (what is past the budget is dropped, and counted).
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(logs: &Arc<Logs>) -> LogSink {
        LogSink {
            logs: logs.clone(),
            tenant: "t".into(),
            function: "f".into(),
            version: "f@1.0.0".into(),
        }
    }

    #[test]
    fn a_call_keeps_its_budget_and_the_ring_its_newest_lines() {
        let logs = Logs::new().unwrap();
        let s = sink(&logs);
        let (out, err) = (Capture::default(), Capture::default());
        out.write(b"one\ntwo\n");
        err.write("é".repeat(LINE_BYTES).as_bytes());
        s.flush("abc", &out, &err);
        let lines = logs.read("t", "f", 0, 10);
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[0].stream, lines[0].text.as_str()), ("stdout", "one"));
        assert_eq!(lines[0].trace_id, "abc");
        assert!(lines[2].text.len() <= LINE_BYTES && lines[2].text.starts_with('é'));
        // Past the call's budget: kept up to it, the rest dropped and counted.
        out.write(&vec![b'x'; CALL_BYTES + 10]);
        s.flush("abc", &out, &err);
        assert_eq!(logs.dropped.with_label_values(&["t", "f"]).get(), 10);
        // The ring keeps the newest RING_LINES; a reader continues after a seq.
        for i in 0..RING_LINES + 5 {
            s.line("info", "", &format!("line {i}"));
        }
        let all = logs.read("t", "f", 0, MAX_READ);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all.last().unwrap().text, format!("line {}", RING_LINES + 4));
        let after = logs.read("t", "f", all[all.len() - 2].seq, 10);
        assert_eq!(after.len(), 1);
        assert!(logs.read("t", "other", 0, 10).is_empty());
    }
}
