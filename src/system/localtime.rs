//! Unix times shown to people as local date-times. Machine output (JSON)
//! keeps the exact milliseconds; only human output goes through here.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// `ms` (unix milliseconds) as a local date-time with its UTC offset,
/// e.g. `2026-11-25 19:04:05 +01:00`, in the system's time zone (`TZ` or
/// `/etc/localtime`; UTC when neither is usable). A time outside the
/// representable range is shown as its raw milliseconds rather than
/// failing, because it comes from a peer or a file.
pub fn local_datetime_ms(ms: u64) -> String {
    match zoned(ms) {
        Some(z) => z.strftime("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => format!("{ms} ms"),
    }
}

/// `ms` in the system's time zone; `None` outside the representable range.
fn zoned(ms: u64) -> Option<jiff::Zoned> {
    let ms = i64::try_from(ms).ok()?;
    let ts = Timestamp::from_millisecond(ms).ok()?;
    Some(ts.to_zoned(TimeZone::system()))
}

/// `ms` as a local date-time in RFC 3339 with milliseconds and the zone's
/// offset, e.g. `2026-11-25T19:04:05.123+01:00`, for statements that
/// spreadsheets and scripts read; empty when out of range.
pub fn local_rfc3339_ms(ms: u64) -> String {
    zoned(ms).map_or_else(String::new, |z| {
        z.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
    })
}

/// `s` (unix seconds) the same way.
pub fn local_datetime_s(s: u64) -> String {
    match s.checked_mul(1000) {
        Some(ms) => local_datetime_ms(ms),
        None => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_offset_and_survives_out_of_range() {
        let shown = local_datetime_ms(1_764_097_445_000);
        // The zone is the machine's; the shape is fixed.
        assert_eq!(shown.len(), "2025-11-25 19:04:05 +00:00".len(), "{shown}");
        assert!(shown.starts_with("2025-11-2"), "{shown}");
        assert_eq!(local_datetime_ms(u64::MAX), format!("{} ms", u64::MAX));
        assert_eq!(local_datetime_s(u64::MAX), format!("{} s", u64::MAX));
    }
}
