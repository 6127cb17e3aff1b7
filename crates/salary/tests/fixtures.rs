//! The salary-import fixtures of tests/expected_events.json, replayed in memory through the
//! handler the binary runs: the object the event names is the CSV beside the fixture (as the
//! local stack seeds it), and the salaries the manifest lists are what the table holds after.
//! A second delivery of the same event adds nothing. (The local stack replays them through the
//! real binary: tests/test_e2e_fixtures.py.)

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use callback_core::domain::clock::SystemClock;
use callback_core::ports::memory::MemoryAws;
use callback_core::{IncidentReporter, Settings};
use rust_decimal::Decimal;
use s3_import::event::parse_notification;
use s3_import::objects::MemoryObjects;
use salary::ports::memory::MemoryLedger;
use salary::runtime::entry::SalaryHandler;
use serde_json::{Map, Value};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifest() -> Map<String, Value> {
    let text = std::fs::read_to_string(workspace().join("tests/expected_events.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn salary_import_fixtures_meet_the_manifest() {
    let mut replayed = 0;
    for (name, expected) in manifest() {
        if expected["function"] != "salary-import" {
            continue;
        }
        replayed += 1;
        let path = workspace().join("events").join(&name);
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // Given the bucket holds the CSV beside the fixture under the event's key (the in-memory
        // store names its own eTags: the event is pointed at it; the local stack's is the MD5)
        let objects = Arc::new(MemoryObjects::new());
        let mut event = event;
        let created = parse_notification(&event).unwrap().created;
        for (record, object) in event["Records"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip(created)
        {
            let file = path.with_file_name(object.key.rsplit('/').next().unwrap());
            let etag = objects.insert(&object.bucket, &object.key, std::fs::read(&file).unwrap());
            record["s3"]["object"]["eTag"] = Value::String(etag);
        }
        let aws = Arc::new(MemoryAws::default());
        let ports = aws.ports(Arc::new(SystemClock));
        let ledger = Arc::new(MemoryLedger::new());
        let handler = SalaryHandler {
            objects,
            ledger: ledger.clone(),
            incidents: IncidentReporter::new(
                Arc::new(Settings::for_branch("local")),
                ports.errors,
                ports.alert_gate,
                ports.mailer,
            ),
        };
        // When the event is delivered twice
        let first = handler.handle(event.clone(), "fixture-1").await.unwrap();
        let second = handler.handle(event.clone(), "fixture-2").await.unwrap();
        assert_eq!(first["files"][0]["outcome"], "imported", "{name}: {first}");
        assert_eq!(
            second["files"][0]["outcome"], "already_imported",
            "{name}: {second}"
        );
        // Then each listed salary is in, once
        for record in expected["records"].as_array().unwrap() {
            let key = &record["key"];
            let want = Decimal::from_str(&record["attributes"]["EmpSalary"].to_string()).unwrap();
            let got = ledger.salary(
                key["EmpID"].as_u64().unwrap(),
                key["EmpName"].as_str().unwrap(),
            );
            assert_eq!(got, Some(want), "{name}: {key}");
        }
    }
    assert!(replayed > 0, "no salary-import fixture in the manifest");
}
