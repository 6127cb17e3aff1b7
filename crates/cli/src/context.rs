//! Where the tool works: the branch, its table and function names (as the functions derive them,
//! `Settings::for_branch`), and the AWS clients built from the usual environment (AWS_PROFILE,
//! AWS_REGION, AWS_ENDPOINT_URL for the local stack).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::ProvideCredentials;
use callback_core::ports::aws::dynamodb::DynamoStore;
use callback_core::ports::aws::lambda::LambdaInvoker;
use callback_core::Settings;

use crate::error::{is_not_found, CliError};

/// The region of the original deployment, when none is configured.
const DEFAULT_REGION: &str = "ap-southeast-1";

pub struct Context {
    pub branch: String,
    /// `""`, or `-rs` for the Rust functions deployed beside the Python ones (docs/deploy.md).
    pub function_suffix: String,
    pub settings: Settings,
    pub region: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub store: DynamoStore,
    pub lambda: LambdaInvoker,
    pub sqs: aws_sdk_sqs::Client,
    /// `PAYMENT3_QUERY_PAGE_SIZE`: items per query page (default: DynamoDB's 1 MB pages); the
    /// end-to-end tests set 1 to prove every page is read.
    pub page_size: Option<i32>,
}

impl Context {
    /// Builds the clients and makes sure there are credentials, before any call is made.
    pub async fn connect(branch: &str, function_suffix: &str) -> Result<Self, CliError> {
        let config = sdk_config().await;
        let provider = config
            .credentials_provider()
            .ok_or_else(|| CliError::NoCredentials("no credential provider".into()))?;
        if let Err(e) = provider.provide_credentials().await {
            return Err(CliError::NoCredentials(e.to_string()));
        }
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| DEFAULT_REGION.into());
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(Context {
            branch: branch.to_string(),
            function_suffix: function_suffix.to_string(),
            settings: Settings::for_branch(branch),
            region,
            store: DynamoStore::new(dynamodb.clone()),
            dynamodb,
            lambda: LambdaInvoker::new(aws_sdk_lambda::Client::new(&config)),
            sqs: aws_sdk_sqs::Client::new(&config),
            page_size: std::env::var("PAYMENT3_QUERY_PAGE_SIZE")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0),
        })
    }

    /// Fails with [`CliError::WrongBranch`] when the branch's inbox table does not exist: every
    /// branch has one (the template creates it whatever `ExistingTables` says).
    pub async fn check_branch(&self) -> Result<(), CliError> {
        let table = &self.settings.tables.callback_inbox;
        match self
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(CliError::WrongBranch {
                branch: self.branch.clone(),
                region: self.region.clone(),
                table: table.clone(),
            }),
            Err(e) => Err(CliError::from_sdk("DescribeTable", table, &e)),
        }
    }

    /// The failed-events queue of the branch (template.yaml `FailedEventsQueue`): the on-failure
    /// destination of delayed notify and the three process-paid functions.
    pub fn failed_events_queue(&self) -> String {
        format!(
            "payment3-failed-events-{}{}",
            self.branch, self.function_suffix
        )
    }
}

/// The SDK configuration from the environment. Reads fail fast; an invoke may run as long as
/// the longest function (delayed notify: 240 s).
async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(
            aws_config::meta::region::RegionProviderChain::default_provider()
                .or_else(Region::new(DEFAULT_REGION)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(300))
                .build(),
        )
        .load()
        .await
}
