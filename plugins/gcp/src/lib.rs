//! The `gcp` credhost plugin: Artifact Registry / Container Registry tokens
//! and project storage in a GCS bucket, with service-account, Application
//! Default and metadata-server credentials. This file is only the export glue;
//! the provider is in [`provider`], its parts in the other modules.
//!
//! GCS is spoken through its JSON API over the workspace's `reqwest`, and
//! tokens are made here (`key`, `token`), rather than through the official
//! google-cloud-rust crates, object_store's gcp backend or gcp_auth:
//! - resumable uploads must resume from the offset the *server* reports
//!   after a failure, with bounded memory; object_store sends GCS uploads
//!   through the XML multipart API (which the emulator lacks), and none of
//!   them expose that recovery;
//! - the endpoint override has to reach every request (including the session
//!   URIs of resumable uploads), and token refresh timing and the credential
//!   order have to be ours to control and test;
//! - the alternatives add large dependency trees (gRPC, their own HTTP
//!   stacks) to a plugin that needs a dozen requests.
//!
//! RS256 signing uses `ring`, already compiled for rustls, so it costs no
//! build time; the `rsa` crate would add a second, slower implementation,
//! and `jsonwebtoken` would bring a crypto backend of its own.
#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod grant;
pub mod provider;
pub mod registry;
pub mod retry;
pub mod settings;
pub mod store;
pub mod workload;

pub use provider::GcpProvider;

credhost_plugin_sdk::export_plugin!(crate::provider::GcpProvider);
