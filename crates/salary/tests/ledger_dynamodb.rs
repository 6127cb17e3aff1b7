//! The salary ledger's DynamoDB adapter against a real DynamoDB API (moto): a batch transaction
//! adds and marks; the same batch again is recognised by its marker and adds nothing; six runs of
//! one file at once add each salary once; the file entry keeps the first run's batch size.
//!
//! Needs a local DynamoDB (`make unit` starts one); by hand:
//! `PAYMENT3_DYNAMODB_ENDPOINT=http://127.0.0.1:5000 cargo test -p salary --test ledger_dynamodb -- --ignored`

use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use salary::domain::batch::{Batch, BatchPlanner, ImportId, ObjectVersion};
use salary::domain::row::{EmpId, EmpName, EmployeeKey, Salary, SalaryRow};
use salary::ports::dynamodb::DynamoLedger;
use salary::ports::{BatchOutcome, SalaryLedger};

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

async fn table(client: &Client, name: &str, keys: [(&str, ScalarAttributeType, KeyType); 2]) {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attr, kind, key) in keys {
        request = request
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attr)
                    .key_type(key)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(kind)
                    .build()
                    .unwrap(),
            );
    }
    request.send().await.unwrap();
}

/// A ledger on fresh tables (names unique per test, so tests share one moto).
async fn ledger(test: &str) -> (Client, Arc<DynamoLedger>, String) {
    let client = client().await;
    let salary = format!("payment3-employee-salary-{test}");
    let ledger = format!("payment3-salary-import-ledger-{test}");
    table(
        &client,
        &salary,
        [
            ("EmpID", ScalarAttributeType::N, KeyType::Hash),
            ("EmpName", ScalarAttributeType::S, KeyType::Range),
        ],
    )
    .await;
    table(
        &client,
        &ledger,
        [
            ("ImportId", ScalarAttributeType::S, KeyType::Hash),
            ("Entry", ScalarAttributeType::S, KeyType::Range),
        ],
    )
    .await;
    let adapter = Arc::new(DynamoLedger::new(client.clone(), salary.clone(), ledger));
    (client, adapter, salary)
}

fn rows(count: u64) -> Vec<SalaryRow> {
    (1..=count)
        .map(|id| SalaryRow {
            line: id,
            key: EmployeeKey {
                emp_id: EmpId::parse(&id.to_string()).unwrap(),
                emp_name: EmpName::parse(&format!("Employee, {id} | x")).unwrap(),
            },
            salary: Salary::parse(&format!("{id}.10")).unwrap(),
        })
        .collect()
}

fn batches(rows: Vec<SalaryRow>, size: usize) -> Vec<Batch> {
    let mut planner = BatchPlanner::new(size);
    let mut out: Vec<Batch> = rows.into_iter().filter_map(|r| planner.push(r)).collect();
    out.extend(planner.finish());
    out
}

async fn salary_of(client: &Client, table: &str, id: u64) -> Option<String> {
    let item = client
        .get_item()
        .table_name(table)
        .key("EmpID", AttributeValue::N(id.to_string()))
        .key("EmpName", AttributeValue::S(format!("Employee, {id} | x")))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    Some(item.get("EmpSalary")?.as_n().unwrap().clone())
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn a_batch_is_applied_once_and_its_marker_stops_a_second_time() {
    let (client, ledger, table) = ledger("once").await;
    let import = ImportId::new("b", "salary/a.csv", &ObjectVersion::ETag("e1".into()));
    let entry = ledger.begin(&import, 24, "t1").await.unwrap();
    assert_eq!((entry.batch_rows, entry.done, entry.runs), (24, false, 1));
    let batch = &batches(rows(24), 24)[0];
    assert_eq!(
        ledger.apply(&import, batch).await.unwrap(),
        BatchOutcome::Applied
    );
    assert_eq!(
        ledger.apply(&import, batch).await.unwrap(),
        BatchOutcome::AlreadyApplied
    );
    assert_eq!(salary_of(&client, &table, 7).await.as_deref(), Some("7.1"));
    // A later run keeps the first run's batch size and sees its progress.
    let entry = ledger.begin(&import, 10, "t2").await.unwrap();
    assert_eq!((entry.batch_rows, entry.runs), (24, 2));
    // The same rows under another file version are another import: added again.
    let other = ImportId::new("b", "salary/a.csv", &ObjectVersion::ETag("e2".into()));
    assert_eq!(
        ledger.apply(&other, batch).await.unwrap(),
        BatchOutcome::Applied
    );
    assert_eq!(salary_of(&client, &table, 7).await.as_deref(), Some("14.2"));
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn six_runs_of_one_file_at_once_add_each_salary_once() {
    let (client, ledger, table) = ledger("race").await;
    let import = ImportId::new("b", "salary/race.csv", &ObjectVersion::ETag("e".into()));
    let plan = batches(rows(100), 24);
    assert_eq!(plan.len(), 5);
    let mut runs = Vec::new();
    for _ in 0..6 {
        let (ledger, import, plan) = (ledger.clone(), import.clone(), plan.clone());
        runs.push(tokio::spawn(async move {
            let mut applied = 0;
            for batch in &plan {
                if ledger.apply(&import, batch).await.unwrap() == BatchOutcome::Applied {
                    applied += 1;
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for run in runs {
        applied += run.await.unwrap();
    }
    assert_eq!(applied, 5, "each batch applied by exactly one run");
    for id in [1, 24, 25, 99, 100] {
        assert_eq!(
            salary_of(&client, &table, id).await,
            Some(format!("{id}.1"))
        );
    }
}

#[tokio::test]
#[ignore = "needs a local DynamoDB: PAYMENT3_DYNAMODB_ENDPOINT"]
async fn finish_marks_the_file_done() {
    let (_, ledger, _) = ledger("done").await;
    let import = ImportId::new("b", "salary/d.csv", &ObjectVersion::VersionId("v1".into()));
    ledger.begin(&import, 24, "t1").await.unwrap();
    ledger
        .finish(&import, &Default::default(), "t2")
        .await
        .unwrap();
    let entry = ledger.begin(&import, 24, "t3").await.unwrap();
    assert!(entry.done);
}
