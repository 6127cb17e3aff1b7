//! One delivery as received: the raw body, headers (secrets redacted), source IP, request id
//! and the redacted event. Reading it from a Lambda event is the runtime's job
//! (`runtime::inbound`); every flow starts from one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::callback::parse_object;
use crate::domain::error::ValidationError;

/// Bodies larger than this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How the function was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// API Gateway REST proxy (payload v1).
    RestV1,
    /// HTTP API or function URL (payload v2).
    HttpV2,
    /// `lambda invoke` / another function, without an HTTP envelope.
    Direct,
}

/// The body as received.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Empty,
    /// UTF-8 text (a base64 body is decoded first).
    Text(String),
    /// Bytes that are not UTF-8.
    Binary(Vec<u8>),
    /// An already-parsed object (direct invocation).
    Object(Map<String, Value>),
    /// Flagged base64 but not base64: the text as received.
    NotBase64(String),
}

/// A body a parser can read.
#[derive(Clone, Copy, Debug)]
pub enum Readable<'a> {
    Text(&'a str),
    Object(&'a Map<String, Value>),
}

/// One delivery of a callback, as read from the Lambda event.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub request_id: String,
    pub received_at: DateTime<Utc>,
    pub kind: EventKind,
    /// Header names lower-cased, secret values redacted.
    pub headers: BTreeMap<String, String>,
    /// The Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`)
    /// exactly as received: what the signature covers. Only for verifying it; never stored or
    /// logged (`headers` and `event` are). Redacting them first broke genuine signatures: a
    /// webhook id such as `msg_8782831843704110b0...` holds a digit run that passes the card
    /// check, and its redacted form is not what the gateway signed (about 1 in 200 deliveries).
    pub signature_headers: BTreeMap<String, String>,
    pub source_ip: Option<String>,
    pub body: Body,
    /// The whole event, redacted: what goes into records and the error log. For a replay, the
    /// event inside the envelope.
    pub event: Value,
    /// An operator's replay (the envelope of notes/REPLAY_ENVELOPE.md, honoured only on a direct
    /// invoke): the original inbox entry's `receivedAt#requestId`.
    pub replay_of: Option<String>,
    /// The original's `signatureVerified` as the replay envelope states it: a replay whose
    /// original was verified counts as verified (its timestamp is stale by design).
    pub replay_verified: bool,
    /// Who ran the replay.
    pub replay_operator: Option<String>,
}

/// A body over [`MAX_BODY_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    pub size: usize,
    pub limit: usize,
}

impl Delivery {
    /// Size of the body in bytes (the JSON text length for a parsed object).
    pub fn body_len(&self) -> usize {
        match &self.body {
            Body::Empty => 0,
            Body::Text(t) | Body::NotBase64(t) => t.len(),
            Body::Binary(b) => b.len(),
            Body::Object(o) => Value::Object(o.clone()).to_string().len(),
        }
    }

    /// SPEC 4: over 64 KiB is refused before parsing.
    pub fn check_size(&self) -> Result<(), BodyTooLarge> {
        let size = self.body_len();
        if size > MAX_BODY_BYTES {
            return Err(BodyTooLarge {
                size,
                limit: MAX_BODY_BYTES,
            });
        }
        Ok(())
    }

    /// The body in a form a parser can read: text or an object; the other bodies are refused
    /// here, with the reason.
    pub fn readable(&self) -> Result<Readable<'_>, ValidationError> {
        match &self.body {
            Body::Empty => Err(ValidationError::new("body", "body is empty")),
            Body::Text(t) => Ok(Readable::Text(t)),
            Body::Binary(_) => Err(ValidationError::new("body", "body is not UTF-8 text")),
            Body::NotBase64(_) => Err(ValidationError::new(
                "body",
                "body is marked base64-encoded but is not valid base64",
            )),
            Body::Object(o) => Ok(Readable::Object(o)),
        }
    }

    /// The body as a JSON object.
    pub fn body_object(&self) -> Result<Map<String, Value>, ValidationError> {
        match self.readable()? {
            Readable::Text(t) => parse_object(t),
            Readable::Object(o) => Ok(o.clone()),
        }
    }

    /// The bytes a gateway signed (SPEC 4.5): the body as received, base64 decoded. `None` for
    /// an already-parsed object (a direct invoke), whose bytes are gone.
    pub fn raw_body(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Empty => Some(b""),
            Body::Text(t) | Body::NotBase64(t) => Some(t.as_bytes()),
            Body::Binary(b) => Some(b),
            Body::Object(_) => None,
        }
    }

    /// The body as text for storage: text as received, an object as JSON, bytes as base64.
    pub fn body_text(&self) -> (String, &'static str) {
        use base64::Engine as _;
        match &self.body {
            Body::Empty => (String::new(), "text"),
            Body::Text(t) | Body::NotBase64(t) => (t.clone(), "text"),
            Body::Binary(b) => (
                base64::engine::general_purpose::STANDARD.encode(b),
                "base64",
            ),
            Body::Object(o) => (Value::Object(o.clone()).to_string(), "json"),
        }
    }
}
