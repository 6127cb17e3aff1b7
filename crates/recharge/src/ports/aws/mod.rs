//! The dunning ledger on DynamoDB, through callback-core's client ([`callback_core::ports::aws::dynamodb::DynamoStore`]).

pub mod dynamodb;
