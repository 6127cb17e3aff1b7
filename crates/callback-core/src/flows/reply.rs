//! What a flow answers: a status, a content type and a body, in the API Gateway proxy shape
//! that REST v1, HTTP API v2, function URLs and direct callers all read.

use serde_json::{json, Value};

use crate::flows::error::CallbackError;

/// A response, in the API Gateway proxy shape that v1, v2, function URLs and direct callers read.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Reply {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    pub fn html(status: u16, body: String) -> Self {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }

    /// The answer to a failed request: `{"success": false, "error": <public message>, "message"}`
    /// with the failure's status. The error text is the public one (SPEC 6.4).
    pub fn failure(err: &CallbackError, request_id: &str, message: &str) -> Self {
        Reply::json(
            err.status(),
            &json!({
                "success": false,
                "error": err.public_message(request_id),
                "message": message,
            }),
        )
    }

    /// The Lambda response object.
    pub fn into_event(self) -> Value {
        json!({
            "statusCode": self.status,
            "headers": {"Content-Type": self.content_type},
            "body": self.body,
            "isBase64Encoded": false,
        })
    }
}
