//! W3C trace context (`traceparent`) of a call. Every call runs in a span of its
//! own: a child of the caller's `traceparent` when one came (a client's header, the
//! event that triggered it), else the root of a new trace. What the call's guest
//! publishes carries the call's context, so a trace runs from a client's request
//! through the events it causes to the functions they trigger.

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::KeyValue;
use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

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

    /// A new span: in the parent's trace (and with its flags: the caller decided
    /// whether it is sampled) when there is one, else in a new trace, sampled by
    /// [`crate::otel::sample`] (`--otlp-sample-ratio`; all, by default).
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
                    flags: u8::from(crate::otel::sample(&trace_id)),
                }
            }
        }
    }

    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// Whether the trace is sampled (W3C flag 01): only sampled spans are exported.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
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

/// A span being timed: recorded when dropped, and only while spans are exported
/// ([`crate::otel`]) and its trace is sampled; otherwise inert (no clock read, no
/// allocation), so instrumenting a path costs nothing with export off.
#[must_use = "a span ends when dropped"]
pub struct Span(Option<Box<Live>>);

struct Live {
    context: TraceContext,
    parent: Option<(TraceContext, bool)>,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

/// A child of the current context (see [`current`]).
pub fn span(name: &'static str) -> Span {
    match (crate::otel::enabled(), current()) {
        (true, Some(parent)) if parent.sampled() => Span::open(
            TraceContext::child_of(Some(&parent)),
            Some((parent, false)),
            name.into(),
            SpanKind::Internal,
        ),
        _ => Span(None),
    }
}

/// Run `fut` in a span named `name`, a child of the current context.
pub async fn in_span<F: std::future::Future>(name: &'static str, fut: F) -> F::Output {
    let s = span(name);
    s.scope(fut).await
}

impl Span {
    /// The span of a call: `context` is the call's own (its span id is the request
    /// id), `parent` the caller's `traceparent`, a remote parent.
    pub fn call(context: TraceContext, parent: Option<&TraceContext>, kind: SpanKind) -> Span {
        match crate::otel::enabled() && context.sampled() {
            true => Span::open(context, parent.map(|p| (*p, true)), "call".into(), kind),
            false => Span(None),
        }
    }

    fn open(
        context: TraceContext,
        parent: Option<(TraceContext, bool)>,
        name: Cow<'static, str>,
        kind: SpanKind,
    ) -> Span {
        Span(Some(Box::new(Live {
            context,
            parent,
            name,
            kind,
            start: SystemTime::now(),
            attributes: Vec::new(),
            status: Status::Unset,
        })))
    }

    /// Whether this span is recorded (export on, trace sampled).
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Self {
        self.set_attr(key, value);
        self
    }

    pub fn set_attr(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(live) = &mut self.0 {
            live.attributes.push(KeyValue::new(key, value));
        }
    }

    pub fn rename(&mut self, name: String) {
        if let Some(live) = &mut self.0 {
            live.name = name.into();
        }
    }

    /// Mark the span failed, with why.
    pub fn fail(&mut self, description: impl Into<String>) {
        if let Some(live) = &mut self.0 {
            live.status = Status::error(description.into());
        }
    }

    /// Run `fut` with this span as the current context, so the spans opened inside
    /// are its children (what `fut` publishes carries it as `traceparent`).
    pub async fn scope<F: std::future::Future>(&self, fut: F) -> F::Output {
        match &self.0 {
            Some(live) => live.context.scope(fut).await,
            None => fut.await,
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(live) = self.0.take() else { return };
        let Live {
            context,
            parent,
            name,
            kind,
            start,
            attributes,
            status,
        } = *live;
        let (parent_span_id, parent_span_is_remote) = match parent {
            Some((p, remote)) => (SpanId::from_bytes(p.span_id), remote),
            None => (SpanId::INVALID, false),
        };
        crate::otel::record(opentelemetry_sdk::trace::SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(context.trace_id),
                SpanId::from_bytes(context.span_id),
                TraceFlags::new(context.flags),
                false,
                TraceState::default(),
            ),
            parent_span_id,
            parent_span_is_remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: crate::otel::scope(),
        });
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

/// Random ids from a per-thread generator (splitmix64) seeded once from the OS
/// (or, should the OS refuse, from the clock and the thread): distinct with the
/// odds of 64-bit random numbers, not unpredictable — they name spans and calls,
/// they guard nothing — and with no system call per span.
fn fill(buf: &mut [u8]) {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    for chunk in buf.chunks_mut(8) {
        let x = STATE.with(|s| {
            let next = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(next);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        });
        // Never all zero (W3C ids must not be): a zero word becomes one.
        let x = x.max(1);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
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

    #[test]
    fn ids_are_distinct_and_never_zero() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let c = TraceContext::child_of(None);
            assert!(c.span_id != [0; 8] && c.trace_id != [0; 16]);
            assert!(seen.insert(c.span_id), "a span id came twice");
        }
        // Other threads draw other ids.
        let other = std::thread::spawn(|| TraceContext::child_of(None).span_id)
            .join()
            .unwrap();
        assert!(!seen.contains(&other));
    }

    #[tokio::test]
    async fn the_current_context_is_the_scope_s() {
        assert_eq!(current(), None);
        let c = TraceContext::child_of(None);
        assert_eq!(c.scope(async { current() }).await, Some(c));
    }
}
