//! The baseline of `make bench` (scripts/bench.py): the floor a function's AWS calls cost.
//!
//! Each invocation carries the calls a function made in one warm invocation, as the bench's
//! proxy saw them (method, URL, headers, body), grouped in stages: calls that overlapped in time
//! form one stage. The stages run one after the other, the calls of a stage at once, over one
//! keep-alive client built at start-up, through the same delaying proxy. No SDK, no logic: what
//! is left of a function's warm time above this is its own cost.

use std::collections::BTreeMap;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Call {
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

#[derive(Deserialize)]
struct Plan {
    stages: Vec<Vec<Call>>,
}

async fn send(client: reqwest::Client, call: Call) -> Result<u16, Error> {
    let method = reqwest::Method::from_bytes(call.method.as_bytes())?;
    let mut request = client.request(method, &call.url).body(call.body);
    for (name, value) in &call.headers {
        request = request.header(name, value);
    }
    Ok(request.send().await?.status().as_u16())
}

async fn handle(client: &reqwest::Client, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let plan: Plan = serde_json::from_value(event.payload)?;
    let mut statuses = Vec::new();
    for stage in plan.stages {
        let mut calls = tokio::task::JoinSet::new();
        for call in stage {
            calls.spawn(send(client.clone(), call));
        }
        while let Some(done) = calls.join_next().await {
            statuses.push(done??);
        }
    }
    Ok(json!({"calls": statuses.len(), "statuses": statuses}))
}

fn main() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        lambda_runtime::run(service_fn(|event| handle(&client, event))).await
    })
}
