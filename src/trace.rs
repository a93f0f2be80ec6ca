//! W3C Trace Context (`traceparent`) for everything that follows a case: the trace id the window
//! sent with `Submit` (or a new one) is kept on the case, and every message published about the
//! case carries it with a span id of its own, so a tracing backend joins the window's request,
//! the departments' work and the results into one trace.
//!
//! Format (W3C Trace Context level 1): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace id in a `traceparent` value, when the value is well formed; `None` otherwise
/// (a malformed header starts a new trace, as the specification asks).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then_some(trace_id)
}

/// A new random trace id.
pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A `traceparent` value for a new span (a publish) in `trace_id`'s trace, sampled. An empty
/// trace id (a case accepted before trace ids were kept) gets a trace of its own.
pub fn traceparent(trace_id: &str) -> String {
    let span = uuid::Uuid::new_v4().simple().to_string();
    let trace = if trace_id.is_empty() {
        new_trace_id()
    } else {
        trace_id.to_string()
    };
    format!("00-{trace}-{}-01", &span[..16])
}

/// The remote span a well-formed `traceparent` names, as a parent for a span of ours.
pub fn remote(traceparent: &str) -> Option<opentelemetry::Context> {
    let trace_id = trace_id_of(traceparent)?;
    let mut parts = traceparent.trim().split('-').skip(2);
    let (span_id, flags) = (parts.next()?, parts.next()?);
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    Some(opentelemetry::Context::new().with_remote_span_context(context))
}

/// Makes `span` a child of the remote span `traceparent` names (the window's call, the
/// relay's publish, the adapter's consume), so each hop is a span of one trace. A malformed
/// value leaves the span a root of its own.
pub fn continue_in(span: &tracing::Span, traceparent: &str) {
    if let Some(parent) = remote(traceparent) {
        let _ = span.set_parent(parent);
    }
}

/// The exported span context of `span`: trace id, span id, sampled; `None` when spans are not
/// exported.
pub fn ids_of(span: &tracing::Span) -> Option<(String, String, bool)> {
    let context = span.context();
    let span_ref = context.span();
    let sc = span_ref.span_context();
    sc.is_valid().then(|| {
        (
            sc.trace_id().to_string(),
            sc.span_id().to_string(),
            sc.is_sampled(),
        )
    })
}

/// The `traceparent` naming `span`, when spans are exported; `None` otherwise.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    ids_of(span).map(|(trace, id, sampled)| format!("00-{trace}-{id}-{:02}", u8::from(sampled)))
}

/// The `traceparent` for a message sent inside `span` in `trace_id`'s trace: the span's own
/// when spans are exported, else a new span id in the same trace.
pub fn header_for(span: &tracing::Span, trace_id: &str) -> String {
    traceparent_of(span).unwrap_or_else(|| traceparent(trace_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_traceparent_gives_its_trace_id() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_remote_parent_keeps_trace_span_and_sampling() {
        let cx = remote("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(remote("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none());
    }

    #[test]
    fn without_span_export_a_message_still_carries_the_case_trace() {
        let trace = new_trace_id();
        let span = tracing::info_span!("publish");
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(
            trace_id_of(&header_for(&span, &trace)),
            Some(trace.as_str())
        );
    }

    #[test]
    fn a_new_span_keeps_the_trace_and_is_well_formed() {
        let trace = new_trace_id();
        let header = traceparent(&trace);
        assert_eq!(trace_id_of(&header), Some(trace.as_str()));
        assert_ne!(
            traceparent(&trace),
            header,
            "each publish is a span of its own"
        );
    }
}
