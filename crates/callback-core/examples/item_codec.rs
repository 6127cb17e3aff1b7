//! Encodes a callback body into the record item this project writes, or decodes a record item
//! (as the original's PynamoDB model writes it) into the record this project reads. DynamoDB
//! JSON on stdin and stdout; used by `tests/test_pynamodb_compat.py`.
//!
//! ```text
//! echo '{"orderId":"1",...}' | cargo run -q -p callback-core --example item_codec -- encode
//! echo '{"orderId":{"S":"1"},...}' | cargo run -q -p callback-core --example item_codec -- decode
//! ```

use std::io::Read;
use std::process::ExitCode;

use callback_core::domain::callback::CallbackPayload;
use callback_core::domain::item::Item;
use callback_core::domain::record::CallbackRecord;
use chrono::Utc;
use serde_json::json;

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let result = match std::env::args().nth(1).as_deref() {
        Some("encode") => encode(&input),
        Some("decode") => decode(&input),
        _ => Err("usage: item_codec encode|decode < input".to_string()),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn encode(body: &str) -> Result<String, String> {
    let payload = CallbackPayload::parse(body).map_err(|e| e.to_string())?;
    let event = json!({"body": body});
    let item = CallbackRecord::new(&payload, event, Utc::now()).to_item();
    serde_json::to_string(&item).map_err(|e| e.to_string())
}

fn decode(item: &str) -> Result<String, String> {
    let item: Item = serde_json::from_str(item).map_err(|e| format!("not DynamoDB JSON: {e}"))?;
    let r = CallbackRecord::from_item(&item).map_err(|e| e.to_string())?;
    Ok(json!({
        "orderId": r.order_id, "paymentId": r.payment_id, "success": r.success,
        "userId": r.user_id, "message": r.message, "amount": r.amount,
        "event": r.event, "body": r.body, "created_at": r.created_at, "updated_at": r.updated_at,
    })
    .to_string())
}
