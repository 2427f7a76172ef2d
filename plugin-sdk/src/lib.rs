//! The kit for writing credhost provider plugins.
//!
//! A provider is an ordinary Rust type: implement [`Plugin`] (its name,
//! version and a constructor from its settings) and [`Provider`] (async
//! methods with std types, each answering "unsupported" unless you write
//! it), then export it:
//!
//! ```text
//! struct MyProvider { /* what the settings said */ }
//! impl credhost_plugin_sdk::Plugin for MyProvider { /* NAME, VERSION, new() */ }
//! impl credhost_plugin_sdk::Provider for MyProvider { /* the operations it offers */ }
//! credhost_plugin_sdk::export_plugin!(MyProvider);
//! ```
//!
//! Build the crate as a `cdylib` with `panic = "unwind"` (the default; a
//! plugin built with `panic = "abort"` is refused by the host, because one
//! panic would end the service that loaded it). The only dependency a
//! plugin needs is this crate: [`abi_stable`], [`serde_json`] and [`serde`]
//! are re-exported for the export macro and for settings.
//!
//! What the kit keeps for you, so that every plugin keeps the interface's
//! rules:
//! - each plugin library owns a small tokio runtime (one per process, built
//!   again after a `fork()`); every call runs there, and the host gets a
//!   future it may poll from any executor and drop to cancel the call;
//! - no panic crosses the boundary: the constructor, every method and every
//!   task is guarded, and a panic becomes an error of kind `panicked`;
//! - the plugin's `tracing` events go to the host's log;
//! - host byte streams become tokio `AsyncRead` / `AsyncWrite`, and the
//!   helpers in this crate turn any [`Source`] into a reader, copy with a
//!   CRC32C and progress, write a [`Dest`] and finish it only once the
//!   object was verified, and store files atomically.
#![warn(missing_docs)]

mod adapter;
mod io;
mod types;

pub mod testing;

use std::future::Future;

pub use credhost_plugin_api as api;
pub use credhost_plugin_api::{
    abi_stable,
    rules::{check_http_url, format_rfc3339, parse_rfc3339, registry_host, unix_now},
    sdk::{
        error_chain, parse_settings, secret_from_env, spawn_cleanup, Context, ProgressHandle as Progress, SinkWriter,
        SourceReader as StreamReader,
    },
    AuthForm, AuthKind, Capabilities, CreateOnly, ErrorKind, PluginError as Error, Secret,
};
pub use serde;
pub use serde_json;
pub use tokio;

pub use io::{copy, AtomicFile, Copied, DestWriter, IoContext};
pub use types::{
    expires_in, DeleteRequest, Dest, Download, Entry, Grant, GrantPart, GrantRequest, Method, PresignRequest,
    Presigned, Probe, RegistryAuth, RegistryRequest, Source, Stored, Upload, WorkloadRequest,
};

/// The result of every provider operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A plugin library: its identity, what it declares to the host, and how to
/// build a provider from an instance's settings.
pub trait Plugin: Provider + Sized {
    /// The plugin's name (`[plugins.NAME]`, or `plugin = "NAME"` for a named
    /// instance); the library file is `libcredhost_NAME.so` (with `-` as `_`).
    const NAME: &'static str;
    /// The plugin's own version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// What the provider offers; the host refuses other operations before
    /// calling the plugin. Leave out what you do not implement. The default
    /// is the operations of interface 1.1 (everything but
    /// [`Provider::grant`] and [`Provider::workload_registry_auth`]): a
    /// plugin that grants says `Capabilities::V1_1.union(Capabilities::GRANT)`,
    /// one that serves workloads adds `Capabilities::WORKLOAD_IDENTITY` (or
    /// `ALL` for everything).
    const CAPABILITIES: Capabilities = Capabilities::V1_1;
    /// One line describing the plugin, shown by `credhost plugins`.
    const DESCRIPTION: &'static str = "";
    /// The dotted path of the setting holding the registry an instance
    /// serves (a host or a URL), e.g. `"registry"` or `"registry.url"`, so
    /// that registry clients (the docker credential helper) are sent to it.
    const REGISTRY_SETTING: Option<&'static str> = None;
    /// Environment variables the credentials depend on without a setting
    /// naming them (a trailing `*` matches a prefix: `"AWS_*"`). They make
    /// up, with the settings, the identity under which the credential
    /// helper may cache answers on disk.
    const IDENTITY_ENV: &'static [&'static str] = &[];
    /// Dotted paths of settings whose values name environment variables
    /// holding credentials (e.g. `"password_env"`).
    const IDENTITY_ENV_SETTINGS: &'static [&'static str] = &[];
    /// Whether the plugin honours create-only writes: [`Upload::if_absent`]
    /// and [`PresignRequest::if_absent`] (since 1.3.1). The host asks for
    /// them only of plugins that say so, and checks with a canary object
    /// whether the store enforces them.
    const CREATE_ONLY: bool = false;
    /// Whether the plugin honours [`Upload::multi_part`]: writes an object
    /// by the store's multi-part path (an S3 multipart upload, a GCS
    /// resumable session) when asked, whatever its size (since 1.3.2). Set
    /// it when uploads take two paths by size: the host then probes the
    /// create-only check of both, since some servers enforce it on one only.
    const MULTI_PART: bool = false;

    /// Builds a provider from the instance's settings (a JSON object; see
    /// [`parse_settings`]). Runs on the plugin runtime: it may await I/O but
    /// must not block. Relative paths in settings resolve against
    /// [`Context::resolve`].
    fn new(settings: serde_json::Value, ctx: Context) -> impl Future<Output = Result<Self>> + Send;
}

/// The operations of a provider. Each one has a default body answering
/// [`ErrorKind::UNSUPPORTED`]: implement what the plugin offers and say so
/// in [`Plugin::CAPABILITIES`].
///
/// Errors say what the caller should do next through their kind (see
/// [`ErrorKind`]); `?` works on `std::io::Error`, which maps to the matching
/// kind. Messages are one line, lower case, and never contain secrets.
pub trait Provider: Send + Sync + 'static {
    /// Credentials for a registry, `None` when it needs none.
    ///
    /// `req.registry` is `None` for the instance's own registry: the one
    /// [`Plugin::REGISTRY_SETTING`] names, and every host the user's
    /// configuration maps to the instance (`registries = [...]` of its
    /// table, `[registries]` entries), which the host asks for as the
    /// instance's own and hands on under the mapped name; a plugin never
    /// needs to know those hosts. It is `Some(host)` (normalized
    /// `host[:port]`) only for a host the configuration does not map to the
    /// instance: answer it when the platform's credentials work there (a
    /// GCP token works for every Artifact Registry host), else
    /// [`ErrorKind::NOT_FOUND`] ([`RegistryRequest::ensure_for`] does that
    /// for one registry). (Hosts before this rule named mapped hosts too for
    /// `credhost token --registry`, where a plugin answering `NOT_FOUND`
    /// failed that command, as every plugin did; their credential helper
    /// never named them.)
    fn registry_auth(&self, req: RegistryRequest) -> impl Future<Output = Result<Option<RegistryAuth>>> + Send {
        let _ = req;
        async { Err(Error::unsupported("registry credentials")) }
    }

    /// Stores a project archive under `req.name` in the instance's projects
    /// bucket: all or nothing. The host sends a [`Source::Path`] for local
    /// files and a [`Source::Stream`] for everything else (request bodies,
    /// pipes). Names are validated by the host; they may contain `/`. If the
    /// call is cancelled (its future dropped), nothing may become visible:
    /// write to a temporary place and publish at the end ([`AtomicFile`]),
    /// or abort the multipart upload.
    fn upload(&self, req: Upload) -> impl Future<Output = Result<Stored>> + Send {
        let _ = req;
        async { Err(Error::unsupported("upload")) }
    }

    /// Writes the object `req.bucket`/`req.name` to `req.dest`, verified (at
    /// least its size; its checksum where the store keeps one). A missing
    /// object is [`ErrorKind::NOT_FOUND`]. For a [`Dest::Path`] the host
    /// passes a temporary file it renames once the call succeeded; a
    /// [`Dest::Sink`] counts as complete only after [`DestWriter::commit`].
    fn download(&self, req: Download) -> impl Future<Output = Result<Stored>> + Send {
        let _ = req;
        async { Err(Error::unsupported("download")) }
    }

    /// The environment-style entries a build job needs; mark secrets with
    /// [`Entry::secret`].
    fn credentials(&self) -> impl Future<Output = Result<Vec<Entry>>> + Send {
        async { Err(Error::unsupported("build-job credentials")) }
    }

    /// A cheap live probe: one [`Probe`] per component (storage, registry).
    fn check(&self) -> impl Future<Output = Result<Vec<Probe>>> + Send {
        async { Err(Error::unsupported("check")) }
    }

    /// A time-limited URL to GET `req.bucket`/`req.name`, or to PUT an
    /// object `req.name` into the projects bucket, usable without any other
    /// credentials (interface 1.1). A store that has no URLs answers
    /// [`ErrorKind::UNSUPPORTED`] saying so.
    fn presign(&self, req: PresignRequest) -> impl Future<Output = Result<Presigned>> + Send {
        let _ = req;
        async { Err(Error::unsupported("presigned URLs")) }
    }

    /// Deletes `req.bucket`/`req.name` (interface 1.1). Idempotent: an
    /// object that does not exist is not an error.
    fn delete(&self, req: DeleteRequest) -> impl Future<Output = Result<()>> + Send {
        let _ = req;
        async { Err(Error::unsupported("deleting projects")) }
    }

    /// A build-job grant (interface 1.2): a URL reading `req.name`, a
    /// registry credential for the requested repositories and, with
    /// `req.with_keys`, storage keys limited to reading that object, each
    /// narrowed by the platform itself and expiring after `req.ttl`. What
    /// the platform cannot narrow is refused, naming what is missing, never
    /// handed out wider in silence (see [`GrantRequest`]).
    fn grant(&self, req: GrantRequest) -> impl Future<Output = Result<Grant>> + Send {
        let _ = req;
        async { Err(Error::unsupported("build-job grants")) }
    }

    /// Registry credentials of a workload's own identity (interface 1.3):
    /// a kubelet pulling for a pod sends the pod's service-account token,
    /// which the platform verifies and exchanges for that identity's
    /// credentials (STS `AssumeRoleWithWebIdentity`, a workload identity
    /// pool). Answer with those credentials or an error, never with the
    /// instance's own credentials in their place, and never with the token
    /// itself as a password. `req.registry` is as for
    /// [`Provider::registry_auth`]. Say
    /// [`Capabilities::WORKLOAD_IDENTITY`] in [`Plugin::CAPABILITIES`].
    fn workload_registry_auth(
        &self,
        req: WorkloadRequest,
    ) -> impl Future<Output = Result<Option<RegistryAuth>>> + Send {
        let _ = req;
        async { Err(Error::unsupported("workload identity (service-account tokens)")) }
    }
}

/// Plumbing used by [`export_plugin!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::adapter::{info, new_provider};
}

/// Exports a type implementing [`Plugin`] as the library's root module.
///
/// Writes the one symbol the host looks up; the plugin crate needs no
/// dependency besides this crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs, unsafe_code)]
        pub mod __credhost_plugin {
            #[allow(unused_imports)]
            use super::*;

            extern "C" fn info() -> $crate::api::PluginInfo {
                // The panic strategy is read here, where the plugin is compiled.
                $crate::__private::info::<$plugin>(cfg!(panic = "abort"))
            }

            extern "C" fn new_provider(
                settings: $crate::abi_stable::std_types::RStr<'_>,
                host: $crate::api::HostServicesBox,
            ) -> $crate::api::PResult<$crate::api::ProviderBox> {
                $crate::__private::new_provider::<$plugin>(settings.as_str(), host)
            }

            fn root_module() -> $crate::api::PluginRoot_Ref {
                use $crate::abi_stable::prefix_type::PrefixTypeTrait as _;
                $crate::api::PluginRoot { info, new_provider }.leak_into_prefix()
            }

            /// The library header the host looks up (abi_stable's root
            /// module loader symbol, checked by a test of this crate).
            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            pub static ROOT_MODULE_LOADER: $crate::abi_stable::library::LibHeader = {
                extern "C" fn load() -> $crate::abi_stable::library::RootModuleResult {
                    $crate::abi_stable::library::__call_root_module_loader(root_module)
                }
                // SAFETY: `load` returns the root module of type `PluginRoot_Ref`,
                // the type named here, and the layout is checked by the loader.
                unsafe {
                    $crate::abi_stable::library::LibHeader::from_constructor::<$crate::api::PluginRoot_Ref>(
                        load,
                        $crate::abi_stable::library::CheckTypeLayout::Yes,
                    )
                }
            };
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_export_symbol_is_abi_stables() {
        assert_eq!(crate::abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }
}
