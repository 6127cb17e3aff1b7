//! The dunning ledger's DynamoDB adapter against a real DynamoDB API (moto, one request at a
//! time as DynamoDB serialises writes to an item): the claim, the token-conditional updates, the
//! numeric range key, and ten dunning runs at once for one failed attempt with one Recharge call.
//!
//! Needs a local DynamoDB; `make unit` runs it through `scripts/stack.py with-aws`, or:
//! `PAYMENT3_DYNAMODB_ENDPOINT=http://127.0.0.1:5000 cargo test -p recharge --test dunning_dynamodb -- --ignored`

use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use callback_core::ports::aws::dynamodb::DynamoStore;
use callback_core::ports::memory::MemoryAws;
use callback_core::{Settings, SystemClock};
use chrono::Utc;
use recharge::domain::charge::ChargeFailure;
use recharge::domain::dunning::{Changes, DunningRecord, DunningState, Held};
use recharge::flows::dunning::{DunningPorts, RechargeDunning};
use recharge::flows::settings::DunningSettings;
use recharge::ports::memory::{ScriptedAdvisor, ScriptedRecharge};
use recharge::ports::DunningLedger;
use serde_json::json;

async fn client() -> Client {
    let endpoint = std::env::var("PAYMENT3_DYNAMODB_ENDPOINT")
        .expect("set PAYMENT3_DYNAMODB_ENDPOINT to a local DynamoDB (moto) URL");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("ap-southeast-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .load()
        .await;
    Client::new(&config)
}

/// A ledger table shaped like template.yaml's RechargeDunningTable, under a fresh name.
async fn table(client: &Client) -> String {
    let name = format!(
        "payment3-recharge-dunning-t{}",
        uuid::Uuid::new_v4().simple()
    );
    let key = |n: &str, k: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(k)
            .build()
            .unwrap()
    };
    let attr = |n: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(t)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("chargeId", KeyType::Hash))
        .key_schema(key("attempt", KeyType::Range))
        .attribute_definitions(attr("chargeId", ScalarAttributeType::S))
        .attribute_definitions(attr("attempt", ScalarAttributeType::N))
        .send()
        .await
        .unwrap();
    name
}

fn charge(attempt: u32) -> ChargeFailure {
    ChargeFailure {
        charge_id: "389009999".into(),
        attempt,
        customer_id: Some("77001".into()),
        amount: Some("49.90".into()),
        currency: Some("USD".into()),
        error_type: Some("CARD_DECLINED".into()),
    }
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT (make unit)"]
async fn claims_and_updates_are_conditional_on_the_token() {
    let client = client().await;
    let table = table(&client).await;
    let store = DynamoStore::new(client);
    let now = Utc::now();
    let record = DunningRecord::claimed(
        &charge(2),
        "charge/failed",
        "tok-a",
        now.timestamp() + 60,
        "r",
        now,
    );
    assert!(store.insert_dunning(&table, &record).await.unwrap());
    assert!(
        !store.insert_dunning(&table, &record).await.unwrap(),
        "one claim per attempt"
    );
    // Another attempt of the same charge is another item (attempt is the numeric range key).
    assert!(store
        .insert_dunning(
            &table,
            &DunningRecord {
                charge: charge(3),
                ..record.clone()
            }
        )
        .await
        .unwrap());

    let done = Changes::new(now).state(DunningState::Scheduled).into_item();
    let other = Held {
        token: "tok-b".into(),
        state: None,
    };
    assert!(!store
        .update_dunning(&table, "389009999", 2, &other, &done)
        .await
        .unwrap());
    let mine = Held {
        token: "tok-a".into(),
        state: Some(DunningState::Claimed),
    };
    assert!(store
        .update_dunning(&table, "389009999", 2, &mine, &done)
        .await
        .unwrap());
    // The state moved on: a takeover that expected CLAIMED fails.
    assert!(!store
        .update_dunning(&table, "389009999", 2, &mine, &done)
        .await
        .unwrap());
    let back = store
        .load_dunning(&table, "389009999", 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.state, DunningState::Scheduled);
    assert_eq!(back.charge, charge(2));
    assert!(store
        .load_dunning(&table, "389009999", 7)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT (make unit)"]
async fn ten_runs_at_once_call_recharge_once() {
    let client = client().await;
    let table = table(&client).await;
    let aws = Arc::new(MemoryAws::default());
    aws.set_secret("recharge-dev", r#"{"clientSecret": "c", "apiToken": "t"}"#);
    let recharge = Arc::new(ScriptedRecharge::default());
    let date = (Utc::now().date_naive() + chrono::Days::new(4)).to_string();
    let mut settings = DunningSettings::for_branch("dev");
    settings.tables.recharge_dunning = table.clone();
    let dunning = Arc::new(RechargeDunning::new(
        Arc::new(Settings::for_branch("dev")),
        Arc::new(settings),
        aws.ports(Arc::new(SystemClock)),
        DunningPorts {
            ledger: Arc::new(DynamoStore::new(client)),
            advisor: Some(Arc::new(ScriptedAdvisor::answering(vec![Ok(date.clone())]))),
            recharge: recharge.clone(),
        },
    ));
    let job = json!({"topic": "charge/failed", "charge": {"chargeId": "389009999", "attempt": 1},
                     "requestId": "r", "receivedAt": "2026-11-30T08:00:00"});
    let runs: Vec<_> = (0..10)
        .map(|i| {
            let (d, j) = (dunning.clone(), job.clone());
            tokio::spawn(async move { d.handle(j, &format!("r{i}")).await })
        })
        .collect();
    let mut scheduled = 0;
    for run in runs {
        match run.await.unwrap() {
            Ok(v) if v["outcome"] == "scheduled" => scheduled += 1,
            Ok(v) => assert_eq!(v["outcome"], "duplicate"),
            Err(e) => assert!(e.retryable(), "{e}"),
        }
    }
    assert_eq!(scheduled, 1);
    let calls = recharge.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].date, date);
}
