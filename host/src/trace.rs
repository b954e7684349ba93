//! W3C trace context (`traceparent`) of a call. Every call runs in a span of its
//! own: a child of the caller's `traceparent` when one came (a client's header, the
//! event that triggered it), else the root of a new trace. What the call's guest
//! publishes carries the call's context, so a trace runs from a client's request
//! through the events it causes to the functions they trigger.

use std::fmt;

/// `00-{trace id}-{span id}-{flags}` (version 00 of the W3C format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A header of the W3C shape (version 00, lower-case hex, ids not all zero);
    /// anything else is `None` (a malformed header starts a new trace, as the
    /// specification says, rather than failing the call).
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = hex(span)?.try_into().ok()?;
        let flags: [u8; 1] = hex(flags)?.try_into().ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    /// A new span: in the parent's trace (and with its flags) when there is one,
    /// else in a new trace, sampled.
    pub fn child_of(parent: Option<&TraceContext>) -> TraceContext {
        let mut span_id = [0u8; 8];
        fill(&mut span_id);
        match parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id,
                flags: p.flags,
            },
            None => {
                let mut trace_id = [0u8; 16];
                fill(&mut trace_id);
                TraceContext {
                    trace_id,
                    span_id,
                    flags: 1,
                }
            }
        }
    }

    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id, as 16 hex digits (a call's request id).
    pub fn span_id(&self) -> String {
        to_hex(&self.span_id)
    }

    /// Run `fut` with this as the current context ([`current`] inside it).
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// The context of the call this task runs, if it runs one.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            self.flags
        )
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Random ids; should the OS refuse randomness, ids from the clock and a counter
/// (still distinct, not unpredictable: they name spans, they guard nothing).
fn fill(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_ok() && buf.iter().any(|&b| b != 0) {
        return;
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(32) | 1;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed.rotate_left((i as u32 * 8) % 64) & 0xff) as u8 | 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_refuses_other_shapes() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(h).unwrap();
        assert_eq!(c.to_string(), h);
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-é4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_takes_a_new_span() {
        let p =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let c = TraceContext::child_of(Some(&p));
        assert_eq!(c.trace_id(), p.trace_id());
        assert_ne!(c.span_id, p.span_id);
        assert_eq!(c.flags, 0);
        let root = TraceContext::child_of(None);
        assert_ne!(root.trace_id(), p.trace_id());
        assert_eq!(TraceContext::parse(&root.to_string()), Some(root));
    }

    #[tokio::test]
    async fn the_current_context_is_the_scope_s() {
        assert_eq!(current(), None);
        let c = TraceContext::child_of(None);
        assert_eq!(c.scope(async { current() }).await, Some(c));
    }
}
