//! Time: the clock port, and timestamps written the way the original writes them.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// Where "now" comes from; tests use [`ManualClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(start))
    }
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Python's `datetime.now().isoformat()` on Lambda (UTC, no offset, microseconds):
/// `2026-11-21T13:10:49.123456`. Used for `created_at` / `updated_at`.
/// Like Python, the fraction is left out when it is zero.
pub fn isoformat(at: DateTime<Utc>) -> String {
    let naive = at.naive_utc();
    if naive.and_utc().timestamp_subsec_micros() == 0 {
        naive.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// Reads back a timestamp written by [`isoformat`] (or by the original).
pub fn parse_isoformat(text: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn isoformat_matches_python() {
        // python3 -c "import datetime;print(datetime.datetime(2026,11,21,13,10,49,123456).isoformat())"
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 13, 10, 49).unwrap()
            + Duration::microseconds(123_456);
        assert_eq!(isoformat(at), "2026-11-21T13:10:49.123456");
        // python3 -c "import datetime;print(datetime.datetime(2026,11,21,13,10,49).isoformat())"
        let whole = Utc.with_ymd_and_hms(2026, 11, 21, 13, 10, 49).unwrap();
        assert_eq!(isoformat(whole), "2026-11-21T13:10:49");
    }

    #[test]
    fn isoformat_reads_back() {
        let at =
            Utc.with_ymd_and_hms(2026, 11, 21, 13, 10, 49).unwrap() + Duration::microseconds(7);
        assert_eq!(parse_isoformat(&isoformat(at)), Some(at));
        let whole = Utc.with_ymd_and_hms(2026, 11, 21, 13, 10, 49).unwrap();
        assert_eq!(parse_isoformat(&isoformat(whole)), Some(whole));
        assert_eq!(parse_isoformat("yesterday"), None);
    }

    #[test]
    fn manual_clock_advances() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        clock.advance(Duration::seconds(301));
        assert_eq!(clock.now() - start, Duration::seconds(301));
    }
}
