//! Timestamps as Kubernetes writes them.

use jiff::Timestamp;

/// RFC 3339 with second precision in UTC, the form of `metav1.Time`.
pub fn format_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 with microseconds in UTC, the form of `metav1.MicroTime` (Lease `renewTime`).
pub fn format_micro_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses either form; `None` when the text is not a timestamp.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// A duration as `kubectl` shows ages (Go's `duration.HumanDuration`): `5s`, `3m20s`, `4h`, `3d4h`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < 0 {
        return "<invalid>".into();
    }
    let s = seconds;
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rest = s % 60;
        return if rest == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rest}s")
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        let rest = m % 60;
        return if rest == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rest}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let rest = h % 24;
        return if rest == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{rest}h", h / 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    format!("{}y", h / (24 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600 + 120), "4h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(-1), "<invalid>");
    }

    #[test]
    fn timestamps_round_trip() {
        let ts: Timestamp = "2025-01-01T10:00:00.123456Z".parse().expect("valid");
        assert_eq!(format_time(ts), "2025-01-01T10:00:00Z");
        assert_eq!(format_micro_time(ts), "2025-01-01T10:00:00.123456Z");
        assert_eq!(parse_time(&format_micro_time(ts)), Some(ts));
    }
}
