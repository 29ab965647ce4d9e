//! Reading an agent's answer defensively: nothing in it (size, headers, bytes) may cost more
//! than a bounded amount of memory and time, or reach a log or a column unchecked.

use std::time::{Duration, SystemTime};

/// Reads at most `limit` bytes of the body as they stream in; the rest is never read (the
/// connection is dropped with the response). `true` when the body was longer.
pub async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3), at most `cap`. A number
/// too large for any integer type means "a very long time" and gets the cap; a date in the
/// past means now; anything else is ignored.
pub fn retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value
            .parse::<u64>()
            .map_or(Duration::MAX, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(cap))
}

/// A peer's text made safe for logs and text columns: control characters (NUL, which Postgres
/// refuses in text, escape sequences, newlines that would forge log lines) become U+FFFD, and
/// at most `max` bytes are kept, cut on a character boundary.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 3);
    for c in text.chars() {
        let c = if c.is_control() { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(3600);

    #[test]
    fn retry_after_accepts_seconds_and_dates_and_caps_both() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("2", now, CAP), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 0 ", now, CAP), Some(Duration::ZERO));
        assert_eq!(retry_after("18446744073709551615", now, CAP), Some(CAP));
        assert_eq!(
            retry_after("99999999999999999999999999999", now, CAP),
            Some(CAP)
        );
        assert_eq!(retry_after("99999999999999", now, CAP), Some(CAP));
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            retry_after(&in_90s, now, CAP),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&past, now, CAP), Some(Duration::ZERO));
        let far = "Fri, 31 Dec 9999 23:59:59 GMT";
        assert_eq!(retry_after(far, now, CAP), Some(CAP));
        for junk in ["", "-5", "1.5", "soon", "2 s", "\u{0}"] {
            assert_eq!(retry_after(junk, now, CAP), None, "{junk:?}");
        }
    }

    #[test]
    fn printable_drops_control_characters_and_cuts_on_a_boundary() {
        assert_eq!(printable("a\u{0}b\nc", 100), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(printable("ééé", 3), "é…");
        assert_eq!(printable("abc", 3), "abc");
    }
}
