//! The card-path DynamoDB adapter against a real DynamoDB API (moto): the chargeId-index query,
//! the checksumVerified mark, the ledger's conditional writes, and process-paid run twelve times
//! at once for one order with exactly one winner.
//!
//! Needs a local DynamoDB; run with
//! `PAYMENT3_DYNAMODB_ENDPOINT=http://127.0.0.1:5000 cargo test -p callback-core --test card_dynamodb -- --ignored`
//!
//! The endpoint must apply one request at a time. DynamoDB serialises the writes to an item, so a
//! conditional write has one winner; moto's stock server is threaded and checks a condition and
//! writes without a lock, so against it two racing writes can both win (seen: 1 run in 3). Start
//! moto with werkzeug's `run_simple(..., threaded=False)` for this test to mean something.

use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use callback_core::domain::clock::SystemClock;
use callback_core::flows::paid::ProcessPaid;
use callback_core::flows::settings::{ProcessPaidKind, ProcessPaidSettings, Settings};
use callback_core::ports::aws::dynamodb::DynamoStore;
use callback_core::ports::memory::{MemoryAws, MemoryKBank};
use callback_core::ports::{CardStore, PaidOrderLedger};
use callback_core::runtime::start::card_ports;
use serde_json::json;

const KEY: &str = "skey_test_payment3_local";

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

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap()
}

async fn table(client: &Client, name: &str, hash: &str, gsi_on: Option<&str>) {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(hash, KeyType::Hash))
        .attribute_definitions(attr(hash));
    if let Some(g) = gsi_on {
        request = request
            .attribute_definitions(attr(g))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(format!("{g}-index"))
                    .key_schema(key(g, KeyType::Hash))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            );
    }
    request.send().await.expect("create table");
}

/// Tables with a unique suffix, so runs do not see each other.
async fn settings(client: &Client) -> Settings {
    let mut s = Settings::for_branch("dev");
    let run = uuid::Uuid::new_v4().simple().to_string();
    s.tables.order = format!("order-{run}");
    s.tables.paid_order = format!("paid-{run}");
    s.tables.card_payment_record = format!("card-{run}");
    table(client, &s.tables.order, "orderId", None).await;
    table(client, &s.tables.paid_order, "orderId", None).await;
    table(
        client,
        &s.tables.card_payment_record,
        "token",
        Some("chargeId"),
    )
    .await;
    s
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn twelve_process_paid_runs_at_once_have_one_winner_on_dynamodb() {
    let client = client().await;
    let settings = Arc::new(settings(&client).await);
    client
        .put_item()
        .table_name(&settings.tables.order)
        .item("orderId", AttributeValue::S("482500007436".into()))
        .item(
            "data",
            AttributeValue::S(r#"{"grandTotal": 2339.00}"#.into()),
        )
        .send()
        .await
        .unwrap();
    let aws = Arc::new(MemoryAws::default());
    aws.set_secret("kbank-dev", &format!(r#"{{"secretKey": "{KEY}"}}"#));
    let kbank = Arc::new(MemoryKBank::with_key(KEY));
    kbank.set_charge("chrg_1", "2339.00", "success", "Authorized");
    let store = Arc::new(DynamoStore::new(client.clone()));
    let process = Arc::new(ProcessPaid::new(
        settings.clone(),
        Arc::new(ProcessPaidSettings::for_kind(ProcessPaidKind::Card, "dev")),
        aws.ports(Arc::new(SystemClock)),
        card_ports(store.clone()),
        kbank,
    ));

    let runs: Vec<_> = (0..12)
        .map(|i| {
            let p = process.clone();
            tokio::spawn(async move {
                p.handle(
                    json!({"orderId": "482500007436", "chargeId": "chrg_1"}),
                    &format!("r{i}"),
                )
                .await
                .expect("no failure")["outcome"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in runs {
        outcomes.push(r.await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "paid").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "already_paid").count(),
        11,
        "{outcomes:?}"
    );
    assert_eq!(aws.mails().len(), 1, "one paid notice");

    let order = client
        .get_item()
        .table_name(&settings.tables.order)
        .key("orderId", AttributeValue::S("482500007436".into()))
        .send()
        .await
        .unwrap();
    let order = order.item().unwrap();
    assert_eq!(order["paymentStatus"], AttributeValue::S("PAID".into()));
    assert_eq!(order["paymentId"], AttributeValue::S("chrg_1".into()));
    let ledger = store
        .paid_state(&settings.tables.paid_order, "482500007436")
        .await
        .unwrap()
        .unwrap();
    assert!(ledger.effects_done);
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn the_card_record_is_found_through_the_index_and_marked() {
    let client = client().await;
    let settings = settings(&client).await;
    client
        .put_item()
        .table_name(&settings.tables.card_payment_record)
        .item("token", AttributeValue::S("tokn_1".into()))
        .item("chargeId", AttributeValue::S("chrg_9".into()))
        .item("orderId", AttributeValue::S("482500000001".into()))
        .item("callback", AttributeValue::S("https://shop.example".into()))
        .send()
        .await
        .unwrap();
    let store = DynamoStore::new(client.clone());
    let table = &settings.tables.card_payment_record;
    // The index projects keys only: the adapter reads the record itself.
    let found = store
        .card_payment_by_charge(table, "chrg_9")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.order_id.as_deref(), Some("482500000001"));
    assert_eq!(found.callback.as_deref(), Some("https://shop.example"));
    assert!(store
        .card_payment_by_charge(table, "chrg_none")
        .await
        .unwrap()
        .is_none());
    store
        .set_checksum_verified(table, "tokn_1", false)
        .await
        .unwrap();
    let again = store
        .card_payment_by_charge(table, "chrg_9")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.checksum_verified, Some(false));
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn the_ledger_moves_pending_to_failed_to_paid_and_never_out_of_paid() {
    use callback_core::domain::ledger::{PaidClaim, PaidOrderStatus, PaymentType};
    let client = client().await;
    let settings = settings(&client).await;
    let store = DynamoStore::new(client);
    let table = &settings.tables.paid_order;
    let claim = |payment: &str| PaidClaim {
        order_id: "o1".into(),
        payment_type: PaymentType::Card,
        payment_id: payment.into(),
        charge_id: Some(payment.into()),
        amount: Some("10.00".parse().unwrap()),
    };
    let now = chrono::Utc::now();
    store.note_pending(table, &claim("c1"), now).await.unwrap();
    assert_eq!(
        store.paid_state(table, "o1").await.unwrap().unwrap().status,
        PaidOrderStatus::Pending
    );
    assert!(store.mark_failed(table, &claim("c1"), now).await.unwrap());
    assert!(
        !store.mark_failed(table, &claim("c1"), now).await.unwrap(),
        "FAILED -> FAILED is no move"
    );
    assert!(
        store
            .claim_paid(table, &claim("c2"), now, now)
            .await
            .unwrap(),
        "FAILED -> PAID"
    );
    assert!(
        !store
            .claim_paid(table, &claim("c2"), now, now)
            .await
            .unwrap(),
        "claimed, within the lease"
    );
    assert!(
        !store.mark_failed(table, &claim("c3"), now).await.unwrap(),
        "never out of PAID"
    );
    let later = now + chrono::Duration::seconds(120);
    assert!(
        !store
            .claim_paid(table, &claim("c3"), later, later)
            .await
            .unwrap(),
        "another payment never takes over"
    );
    assert!(
        store
            .claim_paid(table, &claim("c2"), later, later)
            .await
            .unwrap(),
        "the same payment, after the lease"
    );
    store.finish_paid(table, "o1", later).await.unwrap();
    let state = store.paid_state(table, "o1").await.unwrap().unwrap();
    assert_eq!(state.status, PaidOrderStatus::Paid);
    assert!(state.effects_done);
    assert!(!store
        .claim_paid(
            table,
            &claim("c2"),
            later + chrono::Duration::seconds(999),
            later + chrono::Duration::seconds(999)
        )
        .await
        .unwrap());
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn notify_records_of_the_same_microsecond_are_all_kept() {
    use callback_core::domain::card::{NotifyBody, NotifyNote, NotifyRecord};
    let client = client().await;
    let table = format!("notify-{}", uuid::Uuid::new_v4().simple());
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("chargeId", KeyType::Hash))
        .key_schema(key("created_at", KeyType::Range))
        .attribute_definitions(attr("chargeId"))
        .attribute_definitions(attr("created_at"))
        .send()
        .await
        .expect("create table");
    let body = NotifyBody::parse(
        r#"{"id":"chrg_same","amount":"10.00","currency":"THB","status":"success",
            "transaction_state":"Authorized","checksum":"ab"}"#,
    )
    .unwrap();
    let record = NotifyRecord::new(
        &body,
        NotifyNote::Notify,
        &json!({}),
        Ok(()),
        "r",
        chrono::Utc::now(),
    );
    let store = DynamoStore::new(client.clone());
    for _ in 0..3 {
        store.save_notify(&table, &record).await.unwrap();
    }
    let items = client
        .query()
        .table_name(&table)
        .key_condition_expression("chargeId = :c")
        .expression_attribute_values(":c", AttributeValue::S("chrg_same".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(items.count(), 3, "three deliveries, three records");
}
