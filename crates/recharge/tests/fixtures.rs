//! Every `events/recharge-webhook` fixture through the webhook with in-memory ports, the hand-off
//! run through the dunning function in memory, checked against `tests/expected_events.json`
//! (the manifest the end-to-end tests replay on the local stack; callback-core's fixture test
//! leaves these entries to this one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use callback_core::domain::item::Attr;
use callback_core::ports::memory::MemoryAws;
use callback_core::{Settings, SystemClock};
use recharge::flows::dunning::{DunningPorts, RechargeDunning};
use recharge::flows::settings::{DunningSettings, WebhookSettings};
use recharge::flows::webhook::RechargeWebhook;
use recharge::ports::memory::{MemoryLedger, ScriptedAdvisor, ScriptedRecharge};
use serde_json::{Map, Value};

/// The client secret the local stack seeds (scripts/stack.py); the fixtures are signed with it.
const DEMO_CLIENT_SECRET: &str = "rcs_local_payment3_demo";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifest() -> Map<String, Value> {
    let text = std::fs::read_to_string(workspace().join("tests/expected_events.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn json_attr(attr: &Attr) -> Value {
    match attr {
        Attr::S(s) => Value::String(s.clone()),
        Attr::N(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        Attr::Bool(b) => Value::Bool(*b),
        other => serde_json::to_value(other).unwrap(),
    }
}

#[tokio::test]
async fn every_recharge_fixture_meets_its_expectation() {
    let mut seen = 0;
    for (name, expected) in manifest() {
        if expected["function"] != "recharge-webhook" {
            continue;
        }
        seen += 1;
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(workspace().join("events").join(&name)).unwrap(),
        )
        .unwrap();
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret(
            "recharge-local",
            &format!(r#"{{"clientSecret": "{DEMO_CLIENT_SECRET}", "apiToken": "tok"}}"#),
        );
        let settings = Arc::new(Settings::for_branch("local"));
        let mut webhook_settings = WebhookSettings::for_branch("local");
        webhook_settings.dunning_function = "recharge-dunning".into();
        let ports = aws.ports(Arc::new(SystemClock));
        let webhook =
            RechargeWebhook::new(settings.clone(), Arc::new(webhook_settings), ports.clone());
        let reply = webhook.handle(event, "fixture-request").await;

        assert_eq!(reply["statusCode"], expected["status"], "{name}: status");
        let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        if let Some(want) = expected.get("body") {
            assert_eq!(&body, want, "{name}: body");
        }
        if let Some(Value::Object(fields)) = expected.get("body_includes") {
            for (k, want) in fields {
                assert_eq!(&body[k], want, "{name}: body.{k}");
            }
        }
        let invoked: Vec<String> = aws
            .invocations()
            .iter()
            .map(|i| i.function.clone())
            .collect();
        let want: Vec<String> = match &expected["dispatch"] {
            Value::String(f) => vec![f.clone()],
            _ => vec![],
        };
        assert_eq!(invoked, want, "{name}: dispatch");
        let errors = aws.error_log("payment3-callback-error-log-local");
        assert_eq!(
            !errors.is_empty(),
            expected["error_log"] == true,
            "{name}: error log"
        );
        assert_eq!(
            aws.inbox("payment3-callback-inbox-local").len(),
            1,
            "{name}: inbox"
        );

        // The hand-off, run by the dunning function against scripted services.
        let ledger = Arc::new(MemoryLedger::default());
        let today = chrono::Utc::now().date_naive() + chrono::Days::new(4);
        let dunning = RechargeDunning::new(
            settings.clone(),
            Arc::new(DunningSettings::for_branch("local")),
            ports.clone(),
            DunningPorts {
                ledger: ledger.clone(),
                advisor: Some(Arc::new(ScriptedAdvisor::answering(vec![Ok(
                    today.to_string()
                )]))),
                recharge: Arc::new(ScriptedRecharge::default()),
            },
        );
        for invocation in aws.invocations() {
            let job: Value = serde_json::from_slice(&invocation.payload).unwrap();
            dunning.handle(job, "fixture-run").await.unwrap();
        }
        if let Some(record) = expected.get("record").filter(|r| r.is_object()) {
            let key = &record["key"];
            let item = ledger
                .record(
                    "payment3-recharge-dunning-local",
                    key["chargeId"].as_str().unwrap(),
                    key["attempt"].as_u64().unwrap() as u32,
                )
                .unwrap_or_else(|| panic!("{name}: no ledger item {key}"))
                .to_item();
            for (attr, want) in record["attributes"].as_object().unwrap() {
                assert_eq!(
                    item.get(attr).map(json_attr).as_ref(),
                    Some(want),
                    "{name}: {attr}"
                );
            }
        }
    }
    assert!(seen >= 5, "the manifest lists {seen} Recharge fixtures");
}
