//! `payment3 tables`: every table of the branch and its item count (DescribeTable's `ItemCount`,
//! which DynamoDB refreshes about every six hours). The tables are the ones the functions derive
//! from the branch, plus any other `payment3-*-<branch>` table in the account (other systems').

use std::collections::BTreeMap;

use serde::Serialize;

use crate::context::Context;
use crate::error::{is_not_found, CliError};

#[derive(Clone, Debug, Serialize)]
pub struct TableCount {
    pub name: String,
    /// `None`: the table does not exist.
    pub item_count: Option<i64>,
    pub status: String,
}

pub async fn run(ctx: &Context, json: bool) -> Result<(), CliError> {
    let t = &ctx.settings.tables;
    let mut names: BTreeMap<String, ()> = [
        &t.wallet_callback_record,
        &t.amex_callback_record,
        &t.callback_inbox,
        &t.callback_error_log,
        &t.alert_cooldown,
        &t.credit_card_notify,
        &t.card_payment_record,
        &t.paid_order,
        &t.order,
    ]
    .into_iter()
    .map(|n| (n.clone(), ()))
    .collect();
    // Other systems' tables of the branch: ListTables is paged (names only, no data read).
    let suffix = format!("-{}", ctx.branch);
    let mut start: Option<String> = None;
    loop {
        let out = ctx
            .dynamodb
            .list_tables()
            .set_exclusive_start_table_name(start.take())
            .send()
            .await
            .map_err(|e| CliError::from_sdk("ListTables", "the account's tables", &e))?;
        for n in out.table_names() {
            if n.starts_with("payment3-") && n.ends_with(&suffix) {
                names.insert(n.clone(), ());
            }
        }
        match out.last_evaluated_table_name() {
            Some(last) => start = Some(last.to_string()),
            None => break,
        }
    }
    let mut rows = Vec::new();
    for name in names.into_keys() {
        let row = match ctx.dynamodb.describe_table().table_name(&name).send().await {
            Ok(out) => {
                let table = out.table();
                TableCount {
                    name,
                    item_count: table.and_then(|t| t.item_count()),
                    status: table
                        .and_then(|t| t.table_status())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                }
            }
            Err(e) if is_not_found(&e) => TableCount {
                name,
                item_count: None,
                status: "MISSING".into(),
            },
            Err(e) => return Err(CliError::from_sdk("DescribeTable", &name, &e)),
        };
        rows.push(row);
    }
    if rows.iter().all(|r| r.item_count.is_none()) {
        return Err(CliError::WrongBranch {
            branch: ctx.branch.clone(),
            region: ctx.region.clone(),
            table: ctx.settings.tables.callback_inbox.clone(),
        });
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serialises")
        );
        return Ok(());
    }
    println!("tables of branch {} ({}):", ctx.branch, ctx.region);
    for r in &rows {
        match r.item_count {
            Some(n) => println!("  {:<48} {:>10}  {}", r.name, n, r.status),
            None => println!(
                "  {:<48} {:>10}  (not in this account/region: owned by another stack?)",
                r.name, "-"
            ),
        }
    }
    println!("item counts are DynamoDB's ItemCount, refreshed about every six hours on AWS");
    Ok(())
}
