//! S3 "object created" notifications, in every shape they arrive in:
//!
//! - the S3 event (`{"Records": [{"eventSource": "aws:s3", "s3": {...}}]}`), as AWS sends it and
//!   as moto sends it (no `userIdentity`/`requestParameters`, `eventTime` with or without a zone);
//! - `s3:TestEvent`, which S3 sends once when a notification is configured: ignored;
//! - wrapped in SQS (`{"Records": [{"eventSource": "aws:sqs", "body": "<S3 event JSON>"}]}`), the
//!   local stack's path and a common production one, and in SNS (`Records[].Sns.Message`);
//! - EventBridge's `Object Created` (`detail.bucket.name`, `detail.object.key`, key not encoded).
//!
//! Keys in S3 and SQS/SNS notifications are URL-encoded with `+` for a space (AWS) or with
//! Python's `quote_plus` (moto: `/` as `%2F` too); both decode the same way here.

use serde_json::Value;

/// One object that was created (or overwritten).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    /// The decoded key, as GetObject takes it.
    pub key: String,
    pub size: Option<u64>,
    /// Without quotes. Identifies the content: a second event for the same content has the same eTag.
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
    /// As sent (AWS: `2026-11-30T07:00:00.000Z`; moto may omit the zone).
    pub event_time: Option<String>,
    /// `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`, ...
    pub event_name: String,
}

/// What a notification held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    pub created: Vec<ObjectCreated>,
    /// Test events, removals and other records that are not an object creation.
    pub ignored: Vec<String>,
}

/// A notification that is none of the shapes above.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an S3 notification: {0}")]
pub struct EventError(pub String);

/// Parses a Lambda event into the objects it reports created.
pub fn parse_notification(event: &Value) -> Result<Notification, EventError> {
    let mut out = Notification::default();
    collect(event, &mut out, 0)?;
    Ok(out)
}

fn collect(event: &Value, out: &mut Notification, depth: u8) -> Result<(), EventError> {
    if depth > 3 {
        return Err(EventError("notification nested too deeply".into()));
    }
    if let Some(name) = event.get("Event").and_then(Value::as_str) {
        // {"Service":"Amazon S3","Event":"s3:TestEvent",...}
        out.ignored.push(name.to_string());
        return Ok(());
    }
    if event.get("detail-type").is_some()
        && event.get("source").and_then(Value::as_str) == Some("aws.s3")
    {
        return eventbridge(event, out);
    }
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| EventError("no Records".into()))?;
    for record in records {
        let source = record
            .get("eventSource")
            .or_else(|| record.get("EventSource"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match source {
            "aws:s3" => s3_record(record, out)?,
            "aws:sqs" => {
                let body = record.get("body").and_then(Value::as_str).unwrap_or("");
                let inner: Value = serde_json::from_str(body)
                    .map_err(|e| EventError(format!("SQS body is not JSON: {e}")))?;
                collect(&inner, out, depth + 1)?;
            }
            "aws:sns" => {
                let message = record
                    .pointer("/Sns/Message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let inner: Value = serde_json::from_str(message)
                    .map_err(|e| EventError(format!("SNS message is not JSON: {e}")))?;
                collect(&inner, out, depth + 1)?;
            }
            other => out.ignored.push(format!("record from {other:?}")),
        }
    }
    Ok(())
}

fn s3_record(record: &Value, out: &mut Notification) -> Result<(), EventError> {
    let event_name = record
        .get("eventName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !event_name.starts_with("ObjectCreated:") && !event_name.starts_with("s3:ObjectCreated:") {
        out.ignored.push(event_name.to_string());
        return Ok(());
    }
    let bucket = record
        .pointer("/s3/bucket/name")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| EventError("S3 record without s3.bucket.name".into()))?;
    let raw_key = record
        .pointer("/s3/object/key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| EventError("S3 record without s3.object.key".into()))?;
    let object = record.pointer("/s3/object").unwrap_or(&Value::Null);
    out.created.push(ObjectCreated {
        bucket: bucket.to_string(),
        key: decode_key(raw_key)?,
        size: object.get("size").and_then(Value::as_u64),
        etag: text(object, "eTag")
            .or_else(|| text(object, "etag"))
            .map(unquote),
        version_id: text(object, "versionId"),
        sequencer: text(object, "sequencer"),
        event_time: text(record, "eventTime"),
        event_name: event_name.trim_start_matches("s3:").to_string(),
    });
    Ok(())
}

fn eventbridge(event: &Value, out: &mut Notification) -> Result<(), EventError> {
    let kind = event
        .get("detail-type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "Object Created" {
        out.ignored.push(kind.to_string());
        return Ok(());
    }
    let detail = event.get("detail").unwrap_or(&Value::Null);
    let bucket = detail.pointer("/bucket/name").and_then(Value::as_str);
    let key = detail.pointer("/object/key").and_then(Value::as_str);
    let (Some(bucket), Some(key)) = (bucket, key) else {
        return Err(EventError("EventBridge event without bucket or key".into()));
    };
    let object = detail.get("object").unwrap_or(&Value::Null);
    out.created.push(ObjectCreated {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size: object.get("size").and_then(Value::as_u64),
        etag: text(object, "etag").map(unquote),
        version_id: text(object, "version-id"),
        sequencer: text(object, "sequencer"),
        event_time: text(event, "time"),
        event_name: "ObjectCreated".to_string(),
    });
    Ok(())
}

fn text(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(String::from)
}

fn unquote(s: String) -> String {
    s.trim_matches('"').to_string()
}

/// Decodes a notification key: `+` is a space, then `%XX` escapes (AWS and moto's `quote_plus`).
pub fn decode_key(raw: &str) -> Result<String, EventError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| EventError(format!("key {raw:?} does not decode to UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn aws_record(key: &str) -> Value {
        json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "ap-southeast-1",
            "eventTime": "2026-11-30T07:00:00.000Z", "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "10.0.0.1"},
            "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "I"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "bills",
                   "bucket": {"name": "payment3-bills-dev-123", "arn": "arn:aws:s3:::payment3-bills-dev-123",
                              "ownerIdentity": {"principalId": "A"}},
                   "object": {"key": key, "size": 42, "eTag": "0123abcd", "sequencer": "0055AED6DCD90281E5"}}
        })
    }

    #[test]
    fn real_s3_event_with_plus_encoded_key() {
        let n = parse_notification(
            &json!({"Records": [aws_record("bills/due+2026-11-30%281%29.csv")]}),
        )
        .unwrap();
        assert_eq!(n.created.len(), 1);
        let o = &n.created[0];
        assert_eq!(o.bucket, "payment3-bills-dev-123");
        assert_eq!(o.key, "bills/due 2026-11-30(1).csv");
        assert_eq!(o.size, Some(42));
        assert_eq!(o.etag.as_deref(), Some("0123abcd"));
        assert_eq!(o.sequencer.as_deref(), Some("0055AED6DCD90281E5"));
    }

    #[test]
    fn moto_event_without_user_identity_zone_and_quote_plus_key() {
        // moto: no userIdentity, eTag without quotes, eventTime without a zone, key via quote_plus.
        let event = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "ap-southeast-1",
            "eventTime": "2026-11-30T07:00:00.000", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "x",
                   "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
                   "object": {"key": "incoming%2Fa+b%2Bc.csv", "size": 7, "eTag": "\"e1\""}}}]});
        let n = parse_notification(&event).unwrap();
        assert_eq!(n.created[0].key, "incoming/a b+c.csv");
        assert_eq!(n.created[0].etag.as_deref(), Some("e1"));
        assert_eq!(
            n.created[0].event_time.as_deref(),
            Some("2026-11-30T07:00:00.000")
        );
    }

    #[test]
    fn test_event_is_ignored_not_an_error() {
        let n = parse_notification(&json!({"Service": "Amazon S3", "Event": "s3:TestEvent",
            "Time": "2026-11-30T07:00:00.000Z", "Bucket": "b", "RequestId": "r", "HostId": "h"}))
        .unwrap();
        assert!(n.created.is_empty());
        assert_eq!(n.ignored, vec!["s3:TestEvent"]);
    }

    #[test]
    fn sqs_wrapped_test_event_then_object() {
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        let real = json!({"Records": [aws_record("x.csv")]});
        let event = json!({"Records": [
            {"eventSource": "aws:sqs", "messageId": "1", "body": test.to_string()},
            {"eventSource": "aws:sqs", "messageId": "2", "body": real.to_string()},
        ]});
        let n = parse_notification(&event).unwrap();
        assert_eq!(n.created.len(), 1);
        assert_eq!(n.created[0].key, "x.csv");
        assert_eq!(n.ignored.len(), 1);
    }

    #[test]
    fn sns_and_eventbridge_forms() {
        let real = json!({"Records": [aws_record("y.csv")]});
        let sns =
            json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": real.to_string()}}]});
        assert_eq!(parse_notification(&sns).unwrap().created[0].key, "y.csv");
        let eb = json!({"detail-type": "Object Created", "source": "aws.s3", "time": "t",
            "detail": {"bucket": {"name": "b"}, "object": {"key": "a b.csv", "size": 3, "etag": "e"}}});
        let n = parse_notification(&eb).unwrap();
        assert_eq!(n.created[0].key, "a b.csv");
    }

    #[test]
    fn removals_are_ignored_and_garbage_is_an_error() {
        let mut r = aws_record("x.csv");
        r["eventName"] = json!("ObjectRemoved:Delete");
        let n = parse_notification(&json!({"Records": [r]})).unwrap();
        assert!(n.created.is_empty());
        assert!(parse_notification(&json!({"hello": 1})).is_err());
        let mut r = aws_record("x.csv");
        r["s3"]["bucket"] = json!({});
        assert!(parse_notification(&json!({"Records": [r]})).is_err());
        let bad_sqs = json!({"Records": [{"eventSource": "aws:sqs", "body": "not json"}]});
        assert!(parse_notification(&bad_sqs).is_err());
    }

    #[test]
    fn bad_percent_encoding_is_an_error() {
        assert!(decode_key("%FF%FE.csv").is_err());
        assert_eq!(decode_key("100%25.csv").unwrap(), "100%.csv");
    }
}
