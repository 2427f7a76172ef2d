//! The `local` credhost plugin: a self-hosted registry (open, htpasswd or
//! token auth) and project storage in a directory or on any S3-compatible
//! endpoint. This file is only the export glue; the provider is in
//! [`provider`], its parts in the other modules.

pub mod error;
pub mod provider;
pub mod registry;
pub mod settings;
pub mod store;

credhost_plugin_sdk::export_plugin!(crate::provider::LocalProvider);
