//! A Secrets Manager secret, cached per container: the KBank merchant secret (`secretKey`,
//! `skey_...`, [`SecretCache::new`]) or a secret of another shape read by its own parser
//! ([`SecretCache::with_parser`]: the callback signing keys). Cached per
//! container and read again after the refresh interval, so a rotated secret is picked up
//! without a redeploy; a key that was just refused (KBank 401/403, a checksum mismatch) can force
//! one read at once ([`SecretCache::refresh_after_refusal`]). The key never reaches a log line: [`SecretKey`]'s `Debug` is redacted
//! and errors never quote the secret's text.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::domain::clock::Clock;
use crate::domain::secret::SecretKey;
use crate::ports::error::SecretError;
use crate::ports::SecretSource;

/// Reads `secretKey` from the secret's JSON text.
pub fn parse_secret(name: &str, text: &str) -> Result<SecretKey, SecretError> {
    let problem = |message: &str| SecretError {
        name: name.to_string(),
        message: message.to_string(),
    };
    // The serde error could quote the text: only say that it is not JSON.
    let value: Value =
        serde_json::from_str(text).map_err(|_| problem("the secret is not JSON text"))?;
    match value.get("secretKey") {
        Some(Value::String(key)) if !key.trim().is_empty() => Ok(SecretKey::new(key.trim())),
        Some(Value::String(_)) => Err(problem("secretKey is empty")),
        Some(_) => Err(problem("secretKey is not a string")),
        None => Err(problem("the secret has no secretKey")),
    }
}

/// Reads a secret's text into its value; errors name the secret, never quote its text.
pub type SecretParser<T> = fn(name: &str, text: &str) -> Result<T, SecretError>;

struct Cached<T> {
    key: Arc<T>,
    read_at: DateTime<Utc>,
}

/// Forced reads are at most one per this long: anyone can POST a forged notify, and a flood of
/// them must not be a flood of Secrets Manager reads (a genuine rotation is picked up by the first).
pub const FORCED_READ_GAP: Duration = Duration::from_secs(2);

/// One secret, cached: by default the KBank [`SecretKey`].
pub struct SecretCache<T = SecretKey> {
    source: Arc<dyn SecretSource>,
    clock: Arc<dyn Clock>,
    name: String,
    refresh: Duration,
    parse: SecretParser<T>,
    cached: Mutex<Option<Cached<T>>>,
    forced_at: Mutex<Option<DateTime<Utc>>>,
}

impl SecretCache<SecretKey> {
    /// The KBank secret (`secretKey`).
    pub fn new(
        source: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
        name: impl Into<String>,
        refresh: Duration,
    ) -> Self {
        SecretCache::with_parser(source, clock, name, refresh, parse_secret)
    }
}

impl<T: Send + Sync + PartialEq> SecretCache<T> {
    /// A secret read by `parse` (its JSON shape is the parser's business).
    pub fn with_parser(
        source: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
        name: impl Into<String>,
        refresh: Duration,
        parse: SecretParser<T>,
    ) -> Self {
        SecretCache {
            source,
            clock,
            name: name.into(),
            refresh,
            parse,
            cached: Mutex::new(None),
            forced_at: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key: the cached one while it is younger than the refresh interval, else read again.
    /// A failed refresh keeps serving the previous key (logged): a Secrets Manager blip must not
    /// stop payments, and the next call tries again.
    pub async fn get(&self) -> Result<Arc<T>, SecretError> {
        // One reader at a time: concurrent requests in a container wait for the same read.
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        let refresh = chrono::Duration::from_std(self.refresh).unwrap_or(chrono::Duration::MAX);
        if let Some(c) = cached.as_ref() {
            if now.signed_duration_since(c.read_at) < refresh {
                return Ok(c.key.clone());
            }
        }
        let read = async {
            let text = self.source.secret_string(&self.name).await?;
            (self.parse)(&self.name, &text)
        };
        match read.await {
            Ok(key) => {
                let key = Arc::new(key);
                *cached = Some(Cached {
                    key: key.clone(),
                    read_at: now,
                });
                Ok(key)
            }
            Err(e) => match cached.as_ref() {
                Some(c) => {
                    tracing::warn!(secret = %self.name, error = %e, "secret refresh failed; using the cached key");
                    Ok(c.key.clone())
                }
                None => Err(e),
            },
        }
    }
}

impl<T: Send + Sync + PartialEq> SecretCache<T> {
    /// `used` was refused (KBank 401/403, a checksum that does not match): the secret may have
    /// been rotated. Reads it again at once (at most once per [`FORCED_READ_GAP`]) and returns the
    /// key to try again with when it differs from `used`; `None` when there is no other key.
    pub async fn refresh_after_refusal(&self, used: &T) -> Result<Option<Arc<T>>, SecretError> {
        let mut cached = self.cached.lock().await;
        // Another request may have read the rotated key already.
        if let Some(c) = cached.as_ref() {
            if c.key.as_ref() != used {
                return Ok(Some(c.key.clone()));
            }
        }
        let now = self.clock.now();
        {
            let mut forced_at = self.forced_at.lock().await;
            let gap = chrono::Duration::from_std(FORCED_READ_GAP).unwrap_or_default();
            if forced_at.is_some_and(|at| now.signed_duration_since(at) < gap) {
                return Ok(None);
            }
            *forced_at = Some(now);
        }
        let text = self.source.secret_string(&self.name).await?;
        let key = Arc::new((self.parse)(&self.name, &text)?);
        *cached = Some(Cached {
            key: key.clone(),
            read_at: now,
        });
        if key.as_ref() == used {
            Ok(None)
        } else {
            tracing::info!(secret = %self.name, "the secret was rotated; using the new key");
            Ok(Some(key))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;
    use crate::ports::memory::MemoryAws;
    use chrono::TimeZone;

    fn setup() -> (Arc<MemoryAws>, Arc<ManualClock>, SecretCache) {
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret("kbank-dev", r#"{"secretKey": "skey_test_one"}"#);
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap(),
        ));
        let cache = SecretCache::new(
            aws.clone(),
            clock.clone(),
            "kbank-dev",
            Duration::from_secs(300),
        );
        (aws, clock, cache)
    }

    #[tokio::test]
    async fn the_key_is_read_once_per_refresh_interval() {
        // Given a cached secret
        let (aws, clock, cache) = setup();
        assert_eq!(cache.get().await.unwrap().expose(), "skey_test_one");
        // When it is rotated and used again within the interval, the cached key is served
        aws.set_secret("kbank-dev", r#"{"secretKey": "skey_test_two"}"#);
        clock.advance(chrono::Duration::seconds(299));
        assert_eq!(cache.get().await.unwrap().expose(), "skey_test_one");
        assert_eq!(aws.secret_reads(), 1);
        // Then after the interval the rotated key is picked up
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(cache.get().await.unwrap().expose(), "skey_test_two");
        assert_eq!(aws.secret_reads(), 2);
        assert_eq!(cache.get().await.unwrap().expose(), "skey_test_two");
        assert_eq!(aws.secret_reads(), 2);
    }

    #[tokio::test]
    async fn concurrent_first_reads_share_one_read() {
        let (aws, _clock, cache) = setup();
        let cache = Arc::new(cache);
        let reads = (0..10).map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.get().await.map(|k| k.expose().to_string()) })
        });
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), "skey_test_one");
        }
        assert_eq!(aws.secret_reads(), 1);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_previous_key() {
        let (aws, clock, cache) = setup();
        cache.get().await.unwrap();
        aws.set_secret("kbank-dev", "not json");
        clock.advance(chrono::Duration::seconds(301));
        assert_eq!(cache.get().await.unwrap().expose(), "skey_test_one");
    }

    #[tokio::test]
    async fn another_secret_shape_is_cached_the_same_way() {
        // Given a secret of another shape, read by its own parser
        fn names(name: &str, text: &str) -> Result<Vec<String>, SecretError> {
            serde_json::from_str(text).map_err(|_| SecretError {
                name: name.to_string(),
                message: "not a list".to_string(),
            })
        }
        let (aws, clock, _) = setup();
        aws.set_secret("other", r#"["a", "b"]"#);
        let cache = SecretCache::with_parser(
            aws.clone(),
            clock.clone(),
            "other",
            Duration::from_secs(300),
            names,
        );
        // Then it is parsed by that parser and read once per interval
        assert_eq!(*cache.get().await.unwrap(), ["a", "b"]);
        aws.set_secret("other", r#"["c"]"#);
        assert_eq!(*cache.get().await.unwrap(), ["a", "b"]);
        clock.advance(chrono::Duration::seconds(300));
        assert_eq!(*cache.get().await.unwrap(), ["c"]);
        assert_eq!(aws.secret_reads(), 2);
        // and a refused value forces one read at once, like the KBank key's
        aws.set_secret("other", r#"["d"]"#);
        let used = cache.get().await.unwrap();
        let fresh = cache.refresh_after_refusal(&used).await.unwrap().unwrap();
        assert_eq!(*fresh, ["d"]);
    }

    #[tokio::test]
    async fn no_secret_is_an_error_that_does_not_quote_it() {
        let (aws, _clock, cache) = setup();
        aws.set_secret("kbank-dev", r#"{"secretKey": "", "other": "skey_leak"}"#);
        let err = cache.get().await.unwrap_err();
        assert_eq!(err.to_string(), "secret kbank-dev: secretKey is empty");
        let err = parse_secret("s", "{skey_leak").unwrap_err();
        assert!(!err.to_string().contains("skey_leak"));
        assert_eq!(
            format!("{:?}", SecretKey::new("skey_x")),
            "SecretKey([REDACTED])"
        );
    }

    #[tokio::test]
    async fn a_refused_key_forces_one_read_of_a_rotated_secret() {
        // Given a cached key, and the secret rotated in Secrets Manager
        let (aws, clock, cache) = setup();
        let old = cache.get().await.unwrap();
        aws.set_secret("kbank-dev", r#"{"secretKey": "skey_test_two"}"#);
        // When the old key is refused, well within the refresh interval
        clock.advance(chrono::Duration::seconds(1));
        let new = cache.refresh_after_refusal(&old).await.unwrap();
        // Then the rotated key is read at once and served from now on
        assert_eq!(new.unwrap().expose(), "skey_test_two");
        assert_eq!(cache.get().await.unwrap().expose(), "skey_test_two");
        assert_eq!(aws.secret_reads(), 2);
        // A second request refused with the old key gets the new one without another read
        let again = cache.refresh_after_refusal(&old).await.unwrap();
        assert_eq!(again.unwrap().expose(), "skey_test_two");
        assert_eq!(aws.secret_reads(), 2);
    }

    #[tokio::test]
    async fn forged_refusals_force_at_most_one_read_per_gap() {
        let (aws, clock, cache) = setup();
        let key = cache.get().await.unwrap();
        // The key is right; forged checksums keep failing against it.
        assert!(cache.refresh_after_refusal(&key).await.unwrap().is_none());
        for _ in 0..19 {
            clock.advance(chrono::Duration::milliseconds(100));
            assert!(cache.refresh_after_refusal(&key).await.unwrap().is_none());
        }
        assert_eq!(aws.secret_reads(), 2, "one forced read in 1.9 s");
        clock.advance(chrono::Duration::seconds(2));
        assert!(cache.refresh_after_refusal(&key).await.unwrap().is_none());
        assert_eq!(aws.secret_reads(), 3);
    }
}
