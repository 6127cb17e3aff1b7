//! Every fixture in `events/` fed through its handler with in-memory ports, checked against
//! `tests/expected_events.json` (the same manifest the end-to-end tests replay on the local
//! stack). A fixture missing from the manifest, or a manifest entry without a file, fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use callback_core::domain::clock::SystemClock;
use callback_core::domain::item::{Attr, Item};
use callback_core::domain::signature::WebhookKey;
use callback_core::flows::loopback::LoopbackInvoker;
use callback_core::flows::notify::CardNotify;
use callback_core::flows::paid::ProcessPaid;
use callback_core::flows::settings::{
    CardSettings, ProcessPaidKind, ProcessPaidSettings, Settings,
};
use callback_core::ports::memory::{MemoryAws, MemoryKBank};
use callback_core::ports::Ports;
use callback_core::{AmexRecords, BankAppRecords, CallbackProcessor, RecordTable, WalletRecords};
use serde_json::{Map, Value};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifest() -> Map<String, Value> {
    let text = std::fs::read_to_string(workspace().join("tests/expected_events.json"))
        .expect("tests/expected_events.json is readable");
    serde_json::from_str(&text).expect("the manifest is JSON")
}

fn fixture_files() -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let events = workspace().join("events");
    for dir in std::fs::read_dir(&events).expect("events/ exists") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                files.insert(
                    file.strip_prefix(&events)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    files
}

/// Settings as the local stack has them: functions addressed by binary name.
fn local_settings() -> Settings {
    let mut s = Settings::for_branch("local");
    s.functions.process_paid_card = "process-paid".into();
    s.functions.process_paid_wallet = "process-paid-wallet".into();
    s.functions.process_paid_amex = "process-paid-amex".into();
    s.functions.delayed_notify = "delayed-notify".into();
    s
}

fn ports(aws: &Arc<MemoryAws>) -> Ports {
    aws.ports(Arc::new(SystemClock))
}

/// The callback signing keys the local stack seeds (scripts/stack.py `CALLBACK_KEYS`).
const CALLBACK_KEYS: [(&str, &str); 3] = [
    ("wallet", "whsec_cGF5bWVudDMtbG9jYWwtd2FsbGV0LWtleSE="),
    ("bankapp", "whsec_cGF5bWVudDMtbG9jYWwtYmFua2FwcC1rZXkh"),
    ("amex", "whsec_cGF5bWVudDMtbG9jYWwtYW1leC1rZXkh"),
];

/// Signs a fixture as its gateway would, now (SPEC 4.5): signatures expire after 300 s, so the
/// fixtures are signed when they are replayed, as the local stack's harness does.
fn sign(event: &mut Value, gateway: &str) {
    use base64::Engine as _;
    let Some(body) = event.get("body") else {
        return;
    };
    let raw = match body {
        Value::String(text) if event["isBase64Encoded"] == Value::Bool(true) => {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default()
        }
        Value::String(text) => text.clone().into_bytes(),
        _ => return, // an already-parsed object has no bytes to sign
    };
    let key = CALLBACK_KEYS.iter().find(|(g, _)| *g == gateway).unwrap().1;
    let now = chrono::Utc::now().timestamp();
    let id = format!("msg_fixture_{}", uuid_like(&raw));
    let signature = WebhookKey::parse(key).unwrap().sign(&id, now, &raw);
    if !event.get("headers").is_some_and(Value::is_object) {
        event["headers"] = serde_json::json!({});
    }
    event["headers"]["webhook-id"] = Value::String(id);
    event["headers"]["webhook-timestamp"] = Value::String(now.to_string());
    event["headers"]["webhook-signature"] = Value::String(signature);
}

/// A stable id per body, so that each fixture is its own webhook message.
fn uuid_like(raw: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(raw)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn run_callback<R: RecordTable>(aws: &Arc<MemoryAws>, mut event: Value) -> Value {
    aws.set_secret(
        "payment3-callback-keys-local",
        &serde_json::json!({
            "wallet": [CALLBACK_KEYS[0].1], "bankapp": [CALLBACK_KEYS[1].1], "amex": [CALLBACK_KEYS[2].1]
        })
        .to_string(),
    );
    sign(&mut event, R::GATEWAY);
    CallbackProcessor::<R>::new(Arc::new(local_settings()), ports(aws))
        .handle(event, "fixture-request")
        .await
}

/// The KBank secret the local stack seeds (`kbank-dev`), which the notify fixtures are signed with.
const DEMO_SECRET_KEY: &str = "skey_test_payment3_local";

/// Seeds what a fixture's `given` describes: orders, card payment records, KBank charges.
fn seed(aws: &Arc<MemoryAws>, given: &Value) -> Arc<MemoryKBank> {
    let settings = local_settings();
    aws.set_secret(
        "kbank-dev",
        &format!(r#"{{"secretKey": "{DEMO_SECRET_KEY}"}}"#),
    );
    let kbank = Arc::new(MemoryKBank::with_key(DEMO_SECRET_KEY));
    let list = |name: &str| {
        given
            .get(name)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    for order in list("orders") {
        let data: Item = [(
            "grandTotal".to_string(),
            Attr::N(text(&order, "grandTotal")),
        )]
        .into();
        let item: Item = [
            ("orderId".to_string(), Attr::S(text(&order, "orderId"))),
            ("data".to_string(), Attr::M(data)),
        ]
        .into();
        aws.put_item(&settings.tables.order, &text(&order, "orderId"), item);
    }
    for card in list("card_payments") {
        let item: Item = card
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), Attr::S(v.as_str().unwrap_or_default().into())))
            .collect();
        aws.put_item(
            &settings.tables.card_payment_record,
            &text(&card, "token"),
            item,
        );
    }
    for charge in list("charges") {
        kbank.set_charge(
            &text(&charge, "id"),
            &text(&charge, "amount"),
            &text(&charge, "status"),
            &text(&charge, "transaction_state"),
        );
    }
    kbank
}

fn process_paid(
    aws: &Arc<MemoryAws>,
    kbank: Arc<MemoryKBank>,
    kind: ProcessPaidKind,
) -> Arc<ProcessPaid> {
    Arc::new(ProcessPaid::new(
        Arc::new(local_settings()),
        Arc::new(ProcessPaidSettings::for_kind(kind, "local")),
        ports(aws),
        aws.card_ports(),
        kbank,
    ))
}

/// Notify and delayed notify, with process-paid run in memory when they invoke it.
fn card_notify(aws: &Arc<MemoryAws>, kbank: Arc<MemoryKBank>) -> CardNotify {
    let settings = local_settings();
    let mut p = ports(aws);
    p.invoker = Arc::new(LoopbackInvoker {
        aws: aws.clone(),
        function: settings.functions.process_paid_card.clone(),
        process_paid: process_paid(aws, kbank, ProcessPaidKind::Card),
    });
    let mut card = CardSettings::for_branch("local");
    card.delayed_notify_wait = std::time::Duration::ZERO;
    CardNotify::new(Arc::new(settings), Arc::new(card), p, aws.card_ports())
}

fn json_attr(attr: &Attr) -> Value {
    match attr {
        Attr::S(s) => Value::String(s.clone()),
        Attr::Bool(b) => Value::Bool(*b),
        Attr::N(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        other => serde_json::to_value(other).unwrap(),
    }
}

fn check_record(aws: &MemoryAws, name: &str, expected: &Value) {
    let settings = local_settings();
    let Some(record) = expected.as_object() else {
        return;
    };
    let table = format!(
        "payment3-{}-{}",
        record["table"].as_str().unwrap(),
        settings.branch
    );
    let key: Vec<&str> = record["key"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    let item: Item = aws
        .item(&table, &key.join("|"))
        .unwrap_or_else(|| panic!("{name}: no item {key:?} in {table}"));
    for (attr, want) in record["attributes"].as_object().unwrap() {
        let got = item.get(attr).map(json_attr);
        assert_eq!(got.as_ref(), Some(want), "{name}: attribute {attr}");
    }
}

#[tokio::test]
async fn every_fixture_has_an_expectation_and_meets_it() {
    let manifest = manifest();
    let listed: BTreeSet<String> = manifest.keys().cloned().collect();
    assert_eq!(
        fixture_files(),
        listed,
        "events/ and tests/expected_events.json differ"
    );

    for (name, expected) in &manifest {
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(workspace().join("events").join(name)).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        let aws = Arc::new(MemoryAws::default());
        let kbank = seed(&aws, &expected["given"]);
        let function = expected["function"].as_str().unwrap();
        let reply: Result<Value, String> = match function {
            "wallet" => Ok(run_callback::<WalletRecords>(&aws, event).await),
            "bankapp" => Ok(run_callback::<BankAppRecords>(&aws, event).await),
            "amex" => Ok(run_callback::<AmexRecords>(&aws, event).await),
            "notify" => Ok(card_notify(&aws, kbank)
                .notify(event, "fixture-request")
                .await),
            "delayed-notify" => card_notify(&aws, kbank)
                .delayed_notify(event, "fixture-request")
                .await
                .map_err(|e| e.to_string()),
            "process-paid" | "process-paid-wallet" | "process-paid-amex" => {
                let kind = ProcessPaidKind::from_function_name(function);
                process_paid(&aws, kbank, kind)
                    .handle(event, "fixture-request")
                    .await
                    .map_err(|e| e.to_string())
            }
            // Another system's function: its crate replays these (crates/recharge/tests/fixtures.rs).
            "recharge-webhook" => continue,
            // Another system's function: its crate replays it (crates/salary/tests/fixtures.rs).
            "salary-import" => continue,
            other => panic!("{name}: no handler for function {other} in this test: add it"),
        };
        let reply = match reply {
            Ok(v) => v,
            Err(e) => panic!("{name}: {e}"),
        };

        assert_eq!(reply["statusCode"], expected["status"], "{name}: status");
        let body: Value =
            serde_json::from_str(reply["body"].as_str().unwrap_or_default()).unwrap_or(Value::Null);
        if let Some(want) = expected.get("body") {
            assert_eq!(&body, want, "{name}: body");
        }
        if let Some(want) = expected.get("body_includes").and_then(Value::as_object) {
            for (k, v) in want {
                assert_eq!(&body[k], v, "{name}: body.{k}");
            }
        }
        if let Some(prefix) = expected.get("error_starts_with").and_then(Value::as_str) {
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.starts_with(prefix), "{name}: error {error:?}");
        }
        if let Some(text) = expected.get("body_contains").and_then(Value::as_str) {
            let raw = reply["body"].as_str().unwrap_or_default();
            assert!(raw.contains(text), "{name}: body {raw:?} lacks {text:?}");
        }
        if let Some(outcome) = expected.get("outcome") {
            assert_eq!(&reply["outcome"], outcome, "{name}: outcome");
        }
        check_record(&aws, name, &expected["record"]);
        for record in expected["records"].as_array().into_iter().flatten() {
            check_record(&aws, name, record);
        }

        let dispatched: Vec<String> = aws.invocations().into_iter().map(|i| i.function).collect();
        match &expected["dispatch"] {
            Value::String(target) => {
                assert_eq!(dispatched, vec![target.clone()], "{name}: dispatch")
            }
            Value::Array(targets) => {
                let targets: Vec<String> = targets
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect();
                assert_eq!(dispatched, targets, "{name}: dispatch");
            }
            _ => assert!(dispatched.is_empty(), "{name}: dispatched {dispatched:?}"),
        }
        let errors = aws.error_log("payment3-callback-error-log-local");
        assert_eq!(
            !errors.is_empty(),
            expected["error_log"].as_bool().unwrap_or(false),
            "{name}: error log {errors:?}"
        );
        // Every delivery is in the inbox, whatever its outcome (internal invokes are not deliveries).
        assert_eq!(
            aws.inbox("payment3-callback-inbox-local").len() as u64,
            expected["inbox"].as_u64().unwrap_or(1),
            "{name}: inbox"
        );
    }
}
