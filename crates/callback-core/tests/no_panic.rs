//! No input makes a handler panic (issue 2, SPEC "bad input gets a clear error"): generated
//! events — arbitrary JSON, bodies with the real field names holding arbitrary values, as raw
//! text, base64, REST v1 events or direct objects — go through every handler with in-memory
//! ports. Each must answer with a status (callbacks, notify) or a result (delayed notify,
//! process-paid); a 5xx would mean the input was taken for an outage, so callbacks and notify
//! must stay below 500 while the ports are healthy.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use callback_core::domain::clock::SystemClock;
use callback_core::flows::notify::CardNotify;
use callback_core::flows::paid::ProcessPaid;
use callback_core::flows::settings::{
    CardSettings, ProcessPaidKind, ProcessPaidSettings, Settings,
};
use callback_core::ports::memory::{MemoryAws, MemoryKBank};
use callback_core::ports::Ports;
use callback_core::{CallbackProcessor, WalletRecords};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const FIELDS: &[&str] = &[
    "orderId",
    "order_id",
    "paymentId",
    "payment_id",
    "success",
    "userId",
    "user_id",
    "amount",
    "message",
    "id",
    "objectId",
    "currency",
    "status",
    "transaction_state",
    "checksum",
    "chargeId",
    "charge_id",
    "paymentType",
    "payment_type",
    "body",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        "[0-9]{1,20}(\\.[0-9]{0,6})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object using the fields the handlers look for, with arbitrary values.
fn callback_like() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(FIELDS), any_json(), 0..10).prop_map(|m| {
        Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Map<String, Value>>(),
        )
    })
}

fn rest_event(body: Value, base64: bool) -> Value {
    json!({
        "resource": "/x", "path": "/x", "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"resourcePath": "/x", "httpMethod": "POST", "stage": "dev",
            "requestId": "gw", "identity": {"sourceIp": "203.0.113.1"}},
        "body": body, "isBase64Encoded": base64
    })
}

/// An event as a handler may receive it.
fn any_event() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_json(),
        callback_like(),
        callback_like().prop_map(|b| json!({"body": b})),
        callback_like().prop_map(|b| json!({"body": b.to_string()})),
        callback_like().prop_map(|b| rest_event(Value::String(b.to_string()), false)),
        callback_like().prop_map(|b| {
            let text = base64::engine::general_purpose::STANDARD.encode(b.to_string());
            rest_event(Value::String(text), true)
        }),
        ".{0,64}".prop_map(|t| rest_event(Value::String(t), false)),
        ".{0,64}".prop_map(|t| rest_event(Value::String(t), true)),
        any_json().prop_map(|b| rest_event(b, false)),
    ]
}

fn ports(aws: &Arc<MemoryAws>) -> Ports {
    aws.ports(Arc::new(SystemClock))
}

fn status(reply: &Value) -> u64 {
    reply["statusCode"].as_u64().unwrap_or(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn callbacks_answer_every_event(event in any_event()) {
        let aws = Arc::new(MemoryAws::default());
        let p = CallbackProcessor::<WalletRecords>::new(Arc::new(Settings::for_branch("dev")), ports(&aws));
        let reply = runtime().block_on(p.handle(event, "r"));
        prop_assert!((200..500).contains(&status(&reply)), "{reply}");
    }

    #[test]
    fn notify_and_delayed_notify_answer_every_event(event in any_event()) {
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret("kbank-dev", r#"{"secretKey": "skey_test"}"#);
        let mut card = CardSettings::for_branch("dev");
        card.delayed_notify_wait = Duration::ZERO;
        let notify = CardNotify::new(
            Arc::new(Settings::for_branch("dev")),
            Arc::new(card),
            ports(&aws),
            aws.card_ports(),
        );
        let rt = runtime();
        let reply = rt.block_on(notify.notify(event.clone(), "r"));
        prop_assert!((200..500).contains(&status(&reply)), "{reply}");
        // Delayed notify may fail for a retry; it must not panic.
        let _ = rt.block_on(notify.delayed_notify(event, "r"));
    }

    #[test]
    fn process_paid_answers_every_event(event in any_event()) {
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret("kbank-dev", r#"{"secretKey": "skey_test"}"#);
        for kind in [ProcessPaidKind::Card, ProcessPaidKind::Wallet, ProcessPaidKind::Amex] {
            let p = ProcessPaid::new(
                Arc::new(Settings::for_branch("dev")),
                Arc::new(ProcessPaidSettings::for_kind(kind, "dev")),
                ports(&aws),
                aws.card_ports(),
                Arc::new(MemoryKBank::with_key("skey_test")),
            );
            // Ok (an outcome) or Err (retry): either is an answer.
            let _ = runtime().block_on(p.handle(event.clone(), "r"));
        }
    }
}
