//! The `aws` credhost plugin: ECR registry tokens and S3 project storage,
//! with credentials from aws-config's default chain. This file is only the
//! export glue; the provider is in [`provider`], its parts in the other
//! modules.

pub mod clients;
pub mod error;
pub mod grant;
pub mod provider;
pub mod registry;
pub mod settings;
pub mod store;
pub mod workload;

credhost_plugin_sdk::export_plugin!(crate::provider::AwsProvider);
