//! W3C Trace Context (`traceparent`) for everything that follows a case: the trace id the window
//! sent with `Submit` (or a new one) is kept on the case, and every message published about the
//! case carries it with a span id of its own, so a tracing backend joins the window's request,
//! the departments' work and the results into one trace.
//!
//! Format (W3C Trace Context level 1): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.

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
