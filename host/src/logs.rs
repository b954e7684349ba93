//! Function logs: what a guest writes to stdout and stderr and its `quiver:ml/log`
//! lines, per call, tagged with the call's trace id and the function's version,
//! kept in a ring of the newest [`RING_LINES`] lines per function (what `quiver logs
//! NAME [--follow]` reads). A call keeps at most [`CALL_BYTES`] of output; the rest
//! is dropped and counted (`quiver_log_dropped_bytes_total`), never an error: a
//! chatty guest is not made to fail by its logging. With `--function-log-dir` each
//! line is also appended, as one JSON object, to `<dir>/<tenant>/<function>.log`,
//! which is rotated to `.log.1` past `--function-log-max-size` (so a function's
//! files hold at most twice that).

use prometheus::{IntCounterVec, Opts};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Log files kept open at once (with `--function-log-dir`).
const MAX_OPEN_FILES: usize = 128;
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
    files: Option<Files>,
}

/// The optional copy of every line on disk.
struct Files {
    dir: std::path::PathBuf,
    max_bytes: u64,
    open: Mutex<HashMap<(String, String), (std::fs::File, u64)>>,
}

impl Files {
    fn append(&self, tenant: &str, function: &str, lines: &[LogLine]) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut text = Vec::new();
        for l in lines {
            serde_json::to_writer(&mut text, l)?;
            text.push(b'\n');
        }
        let Ok(mut open) = self.open.lock() else {
            return Ok(());
        };
        let key = (tenant.to_string(), function.to_string());
        let path = self.dir.join(tenant).join(format!("{function}.log"));
        if let Some((_, size)) = open.get(&key) {
            if size + text.len() as u64 > self.max_bytes {
                open.remove(&key);
                std::fs::rename(&path, path.with_extension("log.1"))?;
            }
        }
        // Open files are bounded: past the cap, one is closed (reopened on its
        // function's next line).
        if !open.contains_key(&key) && open.len() >= MAX_OPEN_FILES {
            if let Some(k) = open.keys().next().cloned() {
                open.remove(&k);
            }
        }
        let (file, size) = match open.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                std::fs::create_dir_all(self.dir.join(tenant))?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let size = file.metadata()?.len();
                e.insert((file, size))
            }
        };
        file.write_all(&text)?;
        *size += text.len() as u64;
        Ok(())
    }
}

impl Logs {
    pub fn new() -> anyhow::Result<Arc<Logs>> {
        Self::with_files(None)
    }

    /// Also write every line to `(dir, max bytes per file)`.
    pub fn with_files(files: Option<(std::path::PathBuf, u64)>) -> anyhow::Result<Arc<Logs>> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "quiver_log_dropped_bytes_total",
                "Guest output past a call's log budget, dropped",
            ),
            &["tenant", "function"],
        )?;
        let files = match files {
            Some((dir, max_bytes)) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
                Some(Files {
                    dir,
                    max_bytes: max_bytes.max(4096),
                    open: Mutex::new(HashMap::new()),
                })
            }
            None => None,
        };
        Ok(Arc::new(Logs {
            rings: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            dropped,
            files,
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
        let first = ring.len();
        for line in text.lines() {
            ring.push_back(LogLine {
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                time_ms,
                stream,
                trace_id: trace_id.to_string(),
                version: sink.version.clone(),
                text: cut(line, LINE_BYTES).to_string(),
            });
        }
        let new: Vec<LogLine> = match &self.files {
            Some(_) => ring.iter().skip(first).cloned().collect(),
            None => Vec::new(),
        };
        while ring.len() > RING_LINES {
            ring.pop_front();
        }
        drop(rings);
        if let (Some(files), false) = (&self.files, new.is_empty()) {
            if let Err(e) = files.append(&sink.tenant, &sink.function, &new) {
                tracing::warn!("writing {}/{}'s log file: {e}", sink.tenant, sink.function);
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
    fn lines_go_to_the_function_s_file_which_rotates_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::with_files(Some((dir.path().to_path_buf(), 4096))).unwrap();
        let s = sink(&logs);
        s.line("info", "abc", "first");
        let path = dir.path().join("t/f.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["text"], "first");
        assert_eq!(line["trace_id"], "abc");
        assert_eq!(line["version"], "f@1.0.0");
        for i in 0..100 {
            s.line("info", "abc", &format!("line {i} {}", "x".repeat(60)));
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(path.with_extension("log.1"))
            .unwrap()
            .len();
        assert!(now <= 4096 && old <= 4096, "{now} {old}");
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(
            last.trim_end()
                .ends_with(&format!("line 99 {}\"}}", "x".repeat(60))),
            "{last}"
        );
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
