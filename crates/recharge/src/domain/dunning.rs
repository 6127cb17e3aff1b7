//! The dunning ledger `payment3-recharge-dunning-<branch>` (hash `chargeId` S, range `attempt` N):
//! one item per failed attempt of a charge, recording what was decided, why, and what Recharge
//! answered. Its states make the reschedule happen once:
//!
//! ```text
//!   (none) --claim--> CLAIMED --Recharge 2xx--> SCHEDULED
//!                       |  \----Recharge 4xx--> REFUSED      (alerted, never retried)
//!                       |   \---no date left--> STOPPED      (the schedule is exhausted)
//!                       \--5xx/timeout--> RETRY --taken over by the next run--> CLAIMED
//!   (none) --charge/max_retries_reached--> MAX_RETRIES_REACHED (alerted)
//! ```
//!
//! A claim carries a random token and a lease. Every later write is conditional on the token, so a
//! run that lost its claim can change nothing. A `RETRY` item, or a `CLAIMED` one whose lease has
//! run out (its run crashed between the claim and the end), is taken over by the next run with
//! one conditional write on the token it saw; a live claim is left alone (that run fails and
//! Lambda retries it later), so two runs never call Recharge for the same attempt at once. The
//! decision is written before Recharge is called, so a run that takes over sends the same date.

use callback_core::domain::clock::isoformat;
use callback_core::{DecodeError, Item, ItemBuilder, ItemReader};
use chrono::{DateTime, Utc};

use crate::domain::charge::ChargeFailure;

/// Key attributes.
pub const CHARGE_ID: &str = "chargeId";
pub const ATTEMPT: &str = "attempt";

/// Where an attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DunningState {
    /// A run holds the claim (until its lease ends) and is deciding or calling Recharge.
    Claimed,
    /// Recharge failed in a way a retry can fix; the next run takes the attempt over.
    Retry,
    /// Recharge accepted the new date.
    Scheduled,
    /// Recharge refused the request (4xx): recorded and alerted, not retried.
    Refused,
    /// No date to send: the built-in schedule is exhausted.
    Stopped,
    /// `charge/max_retries_reached`: Recharge gave up on the charge.
    MaxRetriesReached,
}

impl DunningState {
    pub fn name(self) -> &'static str {
        match self {
            DunningState::Claimed => "CLAIMED",
            DunningState::Retry => "RETRY",
            DunningState::Scheduled => "SCHEDULED",
            DunningState::Refused => "REFUSED",
            DunningState::Stopped => "STOPPED",
            DunningState::MaxRetriesReached => "MAX_RETRIES_REACHED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "CLAIMED" => DunningState::Claimed,
            "RETRY" => DunningState::Retry,
            "SCHEDULED" => DunningState::Scheduled,
            "REFUSED" => DunningState::Refused,
            "STOPPED" => DunningState::Stopped,
            "MAX_RETRIES_REACHED" => DunningState::MaxRetriesReached,
            _ => return None,
        })
    }

    /// Nothing more will happen to this attempt.
    pub fn is_final(self) -> bool {
        !matches!(self, DunningState::Claimed | DunningState::Retry)
    }
}

/// Where a retry date came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateSource {
    DunningService,
    Fallback,
}

impl DateSource {
    pub fn name(self) -> &'static str {
        match self {
            DateSource::DunningService => "dunning-service",
            DateSource::Fallback => "fallback",
        }
    }
}

/// What was decided for an attempt, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `YYYY-MM-DD`, or `None`: no retry (the schedule is exhausted).
    pub retry_date: Option<String>,
    pub source: DateSource,
    /// In words: what the dunning service answered, or why the fallback was used.
    pub reason: String,
}

/// One item of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DunningRecord {
    pub charge: ChargeFailure,
    pub topic: String,
    pub state: DunningState,
    /// The holder of the claim (absent on items that were never claimed).
    pub claim_token: Option<String>,
    /// Epoch seconds until which the claim is its holder's.
    pub lease_until: Option<i64>,
    /// How many runs took the attempt over after the first claim.
    pub takeovers: u32,
    pub retry_date: Option<String>,
    pub date_source: Option<String>,
    pub reason: Option<String>,
    /// Calls made to Recharge's change_next_charge_date for this attempt, and the last status.
    pub recharge_calls: u32,
    pub recharge_status: Option<u16>,
    pub last_error: Option<String>,
    /// The webhook delivery the first claim came from.
    pub request_id: String,
    pub created_at: String,
    pub updated_at: String,
}

impl DunningRecord {
    /// A new claim on a failed attempt.
    pub fn claimed(
        charge: &ChargeFailure,
        topic: &str,
        token: &str,
        lease_until: i64,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Self {
        DunningRecord {
            charge: charge.clone(),
            topic: topic.to_string(),
            state: DunningState::Claimed,
            claim_token: Some(token.to_string()),
            lease_until: Some(lease_until),
            takeovers: 0,
            retry_date: None,
            date_source: None,
            reason: None,
            recharge_calls: 0,
            recharge_status: None,
            last_error: None,
            request_id: request_id.to_string(),
            created_at: isoformat(now),
            updated_at: isoformat(now),
        }
    }

    /// The record of a `charge/max_retries_reached`.
    pub fn max_retries_reached(
        charge: &ChargeFailure,
        topic: &str,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Self {
        DunningRecord {
            state: DunningState::MaxRetriesReached,
            claim_token: None,
            lease_until: None,
            reason: Some("Recharge reached the maximum number of retries; not rescheduled".into()),
            ..DunningRecord::claimed(charge, topic, "", 0, request_id, now)
        }
    }

    /// Whether a run may take this attempt over: it was released for a retry, or its holder's
    /// lease has run out (the holder crashed or timed out).
    pub fn can_take_over(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            DunningState::Retry => true,
            DunningState::Claimed => self.lease_until.is_none_or(|l| l < now.timestamp()),
            _ => false,
        }
    }

    /// The recorded decision, if one was made.
    pub fn decision(&self) -> Option<Decision> {
        let source = match self.date_source.as_deref()? {
            "dunning-service" => DateSource::DunningService,
            "fallback" => DateSource::Fallback,
            _ => return None,
        };
        Some(Decision {
            retry_date: self.retry_date.clone(),
            source,
            reason: self.reason.clone().unwrap_or_default(),
        })
    }

    pub fn to_item(&self) -> Item {
        let c = &self.charge;
        let mut b = ItemBuilder::new()
            .unicode(CHARGE_ID, &c.charge_id)
            .integer(ATTEMPT, c.attempt.into())
            .unicode("topic", &self.topic)
            .unicode("state", self.state.name())
            .unicode_opt("claimToken", self.claim_token.clone())
            .unicode_opt("customerId", c.customer_id.clone())
            .unicode_opt("amount", c.amount.clone())
            .unicode_opt("currency", c.currency.clone())
            .unicode_opt("errorType", c.error_type.clone())
            .unicode_opt("retryDate", self.retry_date.clone())
            .unicode_opt("dateSource", self.date_source.clone())
            .unicode_opt("reason", self.reason.clone())
            .integer("takeovers", self.takeovers.into())
            .integer("rechargeCalls", self.recharge_calls.into())
            .unicode_opt("lastError", self.last_error.clone())
            .unicode("requestId", &self.request_id)
            .unicode("created_at", &self.created_at)
            .unicode("updated_at", &self.updated_at);
        if let Some(lease) = self.lease_until {
            b = b.integer("leaseUntil", lease);
        }
        if let Some(status) = self.recharge_status {
            b = b.integer("rechargeStatus", status.into());
        }
        b.build()
    }

    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        let int = |name: &str| -> Result<Option<i64>, DecodeError> {
            Ok(r.number_opt(name)?.and_then(|n| n.as_i64()))
        };
        let text = |name: &str| -> Result<Option<String>, DecodeError> {
            Ok(r.unicode_opt(name)?.map(String::from))
        };
        let state_text = r.unicode("state")?;
        let state = DunningState::parse(state_text).ok_or_else(|| DecodeError {
            attribute: "state".into(),
            problem: format!("unknown state {state_text:?}"),
        })?;
        Ok(DunningRecord {
            charge: ChargeFailure {
                charge_id: r.unicode(CHARGE_ID)?.to_string(),
                attempt: int(ATTEMPT)?
                    .and_then(|a| u32::try_from(a).ok())
                    .ok_or_else(|| DecodeError {
                        attribute: ATTEMPT.into(),
                        problem: "missing or not a whole number".into(),
                    })?,
                customer_id: text("customerId")?,
                amount: text("amount")?,
                currency: text("currency")?,
                error_type: text("errorType")?,
            },
            topic: r.unicode("topic")?.to_string(),
            state,
            claim_token: text("claimToken")?,
            lease_until: int("leaseUntil")?,
            takeovers: int("takeovers")?.unwrap_or(0) as u32,
            retry_date: text("retryDate")?,
            date_source: text("dateSource")?,
            reason: text("reason")?,
            recharge_calls: int("rechargeCalls")?.unwrap_or(0) as u32,
            recharge_status: int("rechargeStatus")?.and_then(|s| u16::try_from(s).ok()),
            last_error: text("lastError")?,
            request_id: text("requestId")?.unwrap_or_default(),
            created_at: r.unicode("created_at")?.to_string(),
            updated_at: r.unicode("updated_at")?.to_string(),
        })
    }
}

/// Attribute changes for a held claim, as an item of the attributes to set.
#[derive(Default)]
pub struct Changes(ItemBuilder);

impl Changes {
    pub fn new(now: DateTime<Utc>) -> Self {
        Changes(ItemBuilder::new().unicode("updated_at", isoformat(now)))
    }
    pub fn state(self, state: DunningState) -> Self {
        Changes(self.0.unicode("state", state.name()))
    }
    pub fn decision(self, decision: &Decision) -> Self {
        Changes(
            self.0
                .unicode_opt("retryDate", decision.retry_date.clone())
                .unicode("dateSource", decision.source.name())
                .unicode("reason", &decision.reason),
        )
    }
    pub fn recharge_answer(self, calls: u32, status: Option<u16>, error: Option<&str>) -> Self {
        let mut b = self.0.integer("rechargeCalls", calls.into());
        if let Some(s) = status {
            b = b.integer("rechargeStatus", s.into());
        }
        Changes(b.unicode_opt("lastError", error))
    }
    /// A takeover: the new holder's token and lease.
    pub fn claim(self, token: &str, lease_until: i64, takeovers: u32) -> Self {
        Changes(
            self.0
                .unicode("state", DunningState::Claimed.name())
                .unicode("claimToken", token)
                .integer("leaseUntil", lease_until)
                .integer("takeovers", takeovers.into()),
        )
    }
    pub fn into_item(self) -> Item {
        self.0.build()
    }
}

/// The claim a conditional write must still find: this token (and, for a takeover, this state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub token: String,
    pub state: Option<DunningState>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn charge() -> ChargeFailure {
        ChargeFailure {
            charge_id: "389001234".into(),
            attempt: 2,
            customer_id: Some("77001".into()),
            amount: Some("49.90".into()),
            currency: Some("USD".into()),
            error_type: Some("CARD_DECLINED".into()),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    #[test]
    fn a_record_round_trips_with_attempt_as_a_number() {
        let mut r = DunningRecord::claimed(&charge(), "charge/failed", "tok", 1_000, "req", at(0));
        r.retry_date = Some("2026-12-05".into());
        r.date_source = Some("fallback".into());
        r.reason = Some("dunning service unreachable".into());
        r.recharge_status = Some(200);
        r.recharge_calls = 1;
        let item = r.to_item();
        assert_eq!(item[ATTEMPT], callback_core::Attr::N("2".into()));
        assert_eq!(item[CHARGE_ID], callback_core::Attr::S("389001234".into()));
        assert_eq!(DunningRecord::from_item(&item).unwrap(), r);
        assert_eq!(r.decision().unwrap().source, DateSource::Fallback);
    }

    #[test]
    fn only_a_released_or_abandoned_claim_can_be_taken_over() {
        let mut r = DunningRecord::claimed(
            &charge(),
            "charge/failed",
            "t",
            at(60).timestamp(),
            "r",
            at(0),
        );
        assert!(!r.can_take_over(at(59)), "a live lease is its holder's");
        assert!(
            r.can_take_over(at(61)),
            "an expired lease: the holder crashed"
        );
        r.state = DunningState::Retry;
        assert!(r.can_take_over(at(0)));
        for s in [
            DunningState::Scheduled,
            DunningState::Refused,
            DunningState::Stopped,
            DunningState::MaxRetriesReached,
        ] {
            r.state = s;
            assert!(s.is_final());
            assert!(!r.can_take_over(at(10_000)));
        }
    }
}
