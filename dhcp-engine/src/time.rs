//! Time as the engine passes it around: nanoseconds since the Unix epoch (`i128`, as the
//! kernel's boot clock converted by the agent), written as RFC 3339 in events and files.

/// RFC 3339 UTC with microseconds (`2026-11-25T19:57:58.325229Z`), the time format of every
/// JSON record, event and file.
pub fn rfc3339(unix_ns: i128) -> String {
    jiff::Timestamp::from_nanosecond(unix_ns)
        .map(|t| format!("{t:.6}"))
        .unwrap_or_default()
}

/// The inverse of [`rfc3339`].
pub fn parse_rfc3339(text: &str) -> Option<i128> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_nanosecond())
}
