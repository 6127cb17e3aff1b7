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
    use callback_core::domain::ledger::{ClaimResult, PaidClaim, PaidOrderStatus, PaymentType};
    let client = client().await;
    let settings = settings(&client).await;
    let store = DynamoStore::new(client.clone());
    let table = &settings.tables.paid_order;
    let claim = |payment: &str, token: &str| PaidClaim {
        order_id: "o1".into(),
        payment_type: PaymentType::Card,
        payment_id: payment.into(),
        charge_id: Some(payment.into()),
        amount: Some("10.00".parse().unwrap()),
        token: token.into(),
    };
    let won = |r: ClaimResult| r == ClaimResult::Won;
    // 09:00:00.100: the lease is compared to the millisecond.
    let now = chrono::DateTime::from_timestamp_millis(1_795_251_600_100).unwrap();
    store
        .note_pending(table, &claim("c1", "t0"), now)
        .await
        .unwrap();
    assert_eq!(
        store.paid_state(table, "o1").await.unwrap().unwrap().status,
        PaidOrderStatus::Pending
    );
    assert!(store
        .mark_failed(table, &claim("c1", "t0"), now)
        .await
        .unwrap());
    assert!(
        !store
            .mark_failed(table, &claim("c1", "t0"), now)
            .await
            .unwrap(),
        "FAILED -> FAILED is no move"
    );
    // A wallet payment moves it out of FAILED and does not keep the card's chargeId.
    let mut wallet = claim("w1", "t1");
    wallet.charge_id = None;
    wallet.payment_type = PaymentType::BankApp;
    assert!(
        won(store.claim_paid(table, &wallet, now, now).await.unwrap()),
        "FAILED -> PAID"
    );
    let item = client
        .get_item()
        .table_name(table)
        .key("orderId", AttributeValue::S("o1".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert!(!item.contains_key("chargeId"), "{item:?}");
    assert_eq!(
        item["effectsClaimedAt"],
        AttributeValue::N("1795251600.100".into())
    );
    // The SDK retrying the write that succeeded: the failed condition returns the entry
    // (ALL_OLD), which carries this run's token.
    match store.claim_paid(table, &wallet, now, now).await.unwrap() {
        ClaimResult::Held(Some(state)) => {
            assert_eq!(state.claim_token.as_deref(), Some("t1"));
            assert!(!state.effects_done);
            assert_eq!(state.effects_claimed_at, Some(now));
        }
        other => panic!("{other:?}"),
    }
    // Another run of the same payment, within the lease: held, by another token.
    match store
        .claim_paid(table, &claim("w1", "t2"), now, now)
        .await
        .unwrap()
    {
        ClaimResult::Held(Some(state)) => assert!(state.held_by_another_run("w1", "t2")),
        other => panic!("{other:?}"),
    }
    assert!(
        !store
            .mark_failed(table, &claim("c3", "t3"), now)
            .await
            .unwrap(),
        "never out of PAID"
    );
    // 60.6 s later the lease (60 s) is over, to the millisecond: stale_before = now + 0.6 s.
    let later = now + chrono::Duration::milliseconds(60_600);
    let stale_before = later - chrono::Duration::seconds(60);
    assert!(
        !won(store
            .claim_paid(table, &claim("c3", "t3"), later, stale_before)
            .await
            .unwrap()),
        "another payment never takes over"
    );
    let mut takeover = wallet.clone();
    takeover.token = "t4".into();
    assert!(
        won(store
            .claim_paid(table, &takeover, later, stale_before)
            .await
            .unwrap()),
        "the same payment, after the lease"
    );
    // The run taken over cannot finish; the one holding the claim can.
    assert!(!store.finish_paid(table, "o1", "t1", later).await.unwrap());
    assert!(store.finish_paid(table, "o1", "t4", later).await.unwrap());
    let state = store.paid_state(table, "o1").await.unwrap().unwrap();
    assert_eq!(state.status, PaidOrderStatus::Paid);
    assert!(state.effects_done);
    let much_later = later + chrono::Duration::seconds(999);
    assert!(!won(store
        .claim_paid(table, &takeover, much_later, much_later)
        .await
        .unwrap()));
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn the_order_update_never_goes_over_a_paid_order() {
    use callback_core::domain::ledger::{OrderMark, OrderPaidUpdate};
    use callback_core::ports::OrderStore;
    let client = client().await;
    let settings = settings(&client).await;
    let store = DynamoStore::new(client.clone());
    let table = &settings.tables.order;
    let update = |payment: &str| OrderPaidUpdate {
        order_id: "o2".into(),
        payment_status: "PAID".into(),
        paid_at: "2026-11-21T09:00:00".into(),
        payment_type: "card".into(),
        payment_id: payment.into(),
    };
    assert_eq!(
        store.mark_order_paid(table, &update("c1")).await.unwrap(),
        OrderMark::Missing
    );
    // An order the Python stack paid (no ledger entry).
    client
        .put_item()
        .table_name(table)
        .item("orderId", AttributeValue::S("o2".into()))
        .item("paymentStatus", AttributeValue::S("PAID".into()))
        .item("paymentId", AttributeValue::S("pay_py".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.mark_order_paid(table, &update("c1")).await.unwrap(),
        OrderMark::AlreadyPaid {
            payment_id: Some("pay_py".into())
        }
    );
    let item = store.order_item(table, "o2").await.unwrap().unwrap();
    assert_eq!(
        item["paymentId"],
        callback_core::domain::item::Attr::S("pay_py".into())
    );
    // An unpaid order is marked once.
    client
        .put_item()
        .table_name(table)
        .item("orderId", AttributeValue::S("o2".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.mark_order_paid(table, &update("c1")).await.unwrap(),
        OrderMark::Marked
    );
    assert_eq!(
        store.mark_order_paid(table, &update("c1")).await.unwrap(),
        OrderMark::AlreadyPaid {
            payment_id: Some("c1".into())
        }
    );
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
