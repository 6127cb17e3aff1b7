//! When to retry a failed charge: the rules every date must meet, and the built-in schedule
//! used when the dunning service cannot answer (SPEC 9).
//!
//! A retry date is a calendar day (`YYYY-MM-DD`, as Recharge takes it), counted in UTC. It must
//! lie after today (Recharge has just tried today; a date in the past is never sent) and at most
//! [`MAX_DAYS_AHEAD`] days ahead.

use chrono::{Days, NaiveDate};

/// The latest retry date allowed, in days after today.
pub const MAX_DAYS_AHEAD: u64 = 30;

/// The built-in schedule: attempt 1 -> +3 days, 2 -> +5, 3 -> +7, then no more retries.
pub const FALLBACK_DAYS: [u64; 3] = [3, 5, 7];

/// Why a proposed date cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("{0:?} is not a date written YYYY-MM-DD")]
    NotADate(String),
    #[error("{date} is not after today ({today})")]
    NotInFuture { date: NaiveDate, today: NaiveDate },
    #[error("{date} is more than {MAX_DAYS_AHEAD} days after today ({today})")]
    TooFar { date: NaiveDate, today: NaiveDate },
}

/// A day Recharge may be told to retry on: after `today`, at most 30 days ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryDate(NaiveDate);

impl RetryDate {
    /// Checks a date against the rules, relative to `today`.
    pub fn new(date: NaiveDate, today: NaiveDate) -> Result<Self, DateError> {
        if date <= today {
            return Err(DateError::NotInFuture { date, today });
        }
        let latest = today
            .checked_add_days(Days::new(MAX_DAYS_AHEAD))
            .unwrap_or(NaiveDate::MAX);
        if date > latest {
            return Err(DateError::TooFar { date, today });
        }
        Ok(RetryDate(date))
    }

    /// Reads `YYYY-MM-DD` (exactly that form) and checks it.
    pub fn parse(text: &str, today: NaiveDate) -> Result<Self, DateError> {
        let not_a_date = || DateError::NotADate(text.chars().take(40).collect());
        let well_formed = text.len() == 10
            && text.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if !well_formed {
            return Err(not_a_date());
        }
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| not_a_date())?;
        RetryDate::new(date, today)
    }

    pub fn date(&self) -> NaiveDate {
        self.0
    }
}

impl std::fmt::Display for RetryDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// The built-in schedule's date for a failed attempt (1-based), or `None` once it is exhausted.
pub fn fallback_date(attempt: u32, today: NaiveDate) -> Option<RetryDate> {
    let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
    let days = *FALLBACK_DAYS.get(index)?;
    let date = today.checked_add_days(Days::new(days))?;
    RetryDate::new(date, today).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn the_fallback_schedule_is_3_5_7_days_then_stops() {
        let today = day(2026, 11, 30);
        let dates: Vec<Option<String>> = (0..=5)
            .map(|a| fallback_date(a, today).map(|d| d.to_string()))
            .collect();
        assert_eq!(
            dates,
            [
                None,
                Some("2026-12-03".into()),
                Some("2026-12-05".into()),
                Some("2026-12-07".into()),
                None,
                None
            ]
        );
        assert_eq!(fallback_date(u32::MAX, today), None);
    }

    #[test]
    fn the_schedule_crosses_month_and_leap_year_ends() {
        assert_eq!(
            fallback_date(3, day(2028, 2, 25)).unwrap().to_string(),
            "2028-03-03"
        );
        assert_eq!(
            fallback_date(2, day(2026, 12, 29)).unwrap().to_string(),
            "2027-01-03"
        );
    }

    #[test]
    fn a_date_must_be_after_today_and_at_most_30_days_ahead() {
        let today = day(2026, 11, 30);
        assert!(matches!(
            RetryDate::parse("2026-11-29", today),
            Err(DateError::NotInFuture { .. })
        ));
        assert!(matches!(
            RetryDate::parse("2026-11-30", today),
            Err(DateError::NotInFuture { .. })
        ));
        assert_eq!(
            RetryDate::parse("2026-12-01", today).unwrap().to_string(),
            "2026-12-01"
        );
        // 30 days after 30 November is 30 December: the last day allowed.
        assert_eq!(
            RetryDate::parse("2026-12-30", today).unwrap().to_string(),
            "2026-12-30"
        );
        assert!(matches!(
            RetryDate::parse("2026-12-31", today),
            Err(DateError::TooFar { .. })
        ));
    }

    #[test]
    fn only_yyyy_mm_dd_is_a_date() {
        let today = day(2026, 11, 30);
        for text in [
            "",
            "2026-12-1",
            "2026/12/01",
            "01-12-2026",
            "2026-12-01T00:00:00",
            "2026-02-30",
            "tomorrow",
            "+2026-12-01",
            "２０２６-12-01",
        ] {
            assert!(
                matches!(RetryDate::parse(text, today), Err(DateError::NotADate(_))),
                "{text:?}"
            );
        }
    }
}
