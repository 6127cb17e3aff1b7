//! Every fixture in `events/` fed through its handler with in-memory ports, checked against
//! `tests/expected_events.json` (the same manifest the end-to-end tests replay on the local
//! stack). A fixture missing from the manifest, or a manifest entry without a file, fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use callback_core::clock::SystemClock;
use callback_core::config::Settings;
use callback_core::item::{Attr, Item};
use callback_core::memory::MemoryAws;
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
    Ports {
        records: aws.clone(),
        inbox: aws.clone(),
        errors: aws.clone(),
        alert_gate: aws.clone(),
        invoker: aws.clone(),
        mailer: aws.clone(),
        secrets: aws.clone(),
        clock: Arc::new(SystemClock),
    }
}

async fn run_callback<R: RecordTable>(aws: &Arc<MemoryAws>, event: Value) -> Value {
    CallbackProcessor::<R>::new(Arc::new(local_settings()), ports(aws))
        .handle(event, "fixture-request")
        .await
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
        let function = expected["function"].as_str().unwrap();
        let reply = match function {
            "wallet" => run_callback::<WalletRecords>(&aws, event).await,
            "bankapp" => run_callback::<BankAppRecords>(&aws, event).await,
            "amex" => run_callback::<AmexRecords>(&aws, event).await,
            other => panic!("{name}: no handler for function {other} in this test: add it"),
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
        check_record(&aws, name, &expected["record"]);

        let dispatched: Vec<String> = aws.invocations().into_iter().map(|i| i.function).collect();
        match expected["dispatch"].as_str() {
            Some(target) => assert_eq!(dispatched, vec![target.to_string()], "{name}: dispatch"),
            None => assert!(dispatched.is_empty(), "{name}: dispatched {dispatched:?}"),
        }
        let errors = aws.error_log("payment3-callback-error-log-local");
        assert_eq!(
            !errors.is_empty(),
            expected["error_log"].as_bool().unwrap_or(false),
            "{name}: error log {errors:?}"
        );
        // Every delivery is in the inbox, whatever its outcome.
        assert_eq!(
            aws.inbox("payment3-callback-inbox-local").len(),
            1,
            "{name}: inbox"
        );
    }
}
