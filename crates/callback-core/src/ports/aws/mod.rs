//! The real adapters of the ports, on the AWS SDK. Clients are built once per container by
//! [`crate::runtime::start`] and shared; `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_<SERVICE>`) points them at
//! a local AWS such as moto.

pub mod card;
pub mod dynamodb;
pub mod lambda;
pub mod secrets;
pub mod ses;
