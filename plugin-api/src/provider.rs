//! The provider trait: what every platform plugin implements.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RStr, RString},
    StableAbi,
};
use async_ffi::FfiFuture;

use crate::{
    CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, DeleteRequest, DownloadRequest, Grant,
    GrantRequest, PResult, PluginError, PresignRequest, Presigned, RegistryAuth, RegistryRequest, TransferResult,
    UploadRequest, WorkloadAuthRequest,
};
use abi_stable::std_types::RVec;

/// A platform's credentials and storage, as seen by the host.
///
/// Interface evolution: **add methods only at the end**, after the current last
/// one, each with a default body answering [`crate::ErrorKind::UNSUPPORTED`];
/// never reorder, remove or change a method. 1.0 ended with `wait_idle`;
/// 1.1 added `presign` and `delete`; 1.2 added `grant`; 1.3 added
/// `workload_registry_auth`. Every I/O method returns an
/// [`FfiFuture`] that the host may poll from any executor and may drop to
/// cancel the work.
#[sabi_trait]
pub trait Provider: Send + Sync {
    /// Credentials for a registry, or `None` when the registry needs none.
    fn registry_auth(&self, req: RegistryRequest) -> FfiFuture<PResult<ROption<RegistryAuth>>>;

    /// Stores a project archive in the projects bucket. Either the whole
    /// object becomes visible under its name, or nothing does.
    fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<TransferResult>>;

    /// Fetches a project archive. On success the destination holds exactly the
    /// object's bytes (size and checksum verified where the store allows).
    fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>>;

    /// The environment-style entries a build job needs.
    fn credentials(&self, req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>>;

    /// A cheap live probe: storage reachable and bucket present, registry
    /// reachable and credentials accepted.
    fn check(&self, req: CheckRequest) -> FfiFuture<PResult<CheckReport>>;

    /// Completes once the clean-up work of cancelled operations (aborting
    /// multipart uploads, removing temporary objects) has finished, so a host
    /// that is about to exit after a cancellation leaves nothing behind. Hosts
    /// bound the wait with a timeout.
    #[sabi(last_prefix_field)]
    fn wait_idle(&self) -> FfiFuture<PResult<()>>;

    // ---- interface 1.1 --------------------------------------------------

    /// A time-limited URL (and the headers a client must send with it) to
    /// GET `bucket`/`name`, or to PUT an object `name` into the projects
    /// bucket, with no other credentials. The URL is a credential itself:
    /// whoever holds it can read (or write) the object until it expires.
    /// Since 1.1; plugins built for 1.0 answer "unsupported".
    fn presign(&self, req: PresignRequest) -> FfiFuture<PResult<Presigned>> {
        let _ = req;
        async_ffi::FutureExt::into_ffi(async {
            abi_stable::std_types::RResult::RErr(PluginError::unsupported("presigned URLs"))
        })
    }

    /// Deletes `bucket`/`name`. Idempotent: deleting an object that does not
    /// exist succeeds. Since 1.1; plugins built for 1.0 answer "unsupported".
    fn delete(&self, req: DeleteRequest) -> FfiFuture<PResult<()>> {
        let _ = req;
        async_ffi::FutureExt::into_ffi(async {
            abi_stable::std_types::RResult::RErr(PluginError::unsupported("deleting projects"))
        })
    }

    // ---- interface 1.2 --------------------------------------------------

    /// A build-job grant: a URL reading one project object, a registry
    /// credential for the requested repositories, optionally storage keys
    /// limited to that object, all expiring together, each narrowed by the
    /// platform itself (see [`GrantRequest`]). Since 1.2; plugins built for
    /// 1.0 and 1.1 answer "unsupported".
    fn grant(&self, req: GrantRequest) -> FfiFuture<PResult<Grant>> {
        let _ = req;
        async_ffi::FutureExt::into_ffi(async {
            abi_stable::std_types::RResult::RErr(PluginError::unsupported("build-job grants"))
        })
    }

    // ---- interface 1.3 --------------------------------------------------

    /// Registry credentials of a workload rather than of the node: the
    /// platform verifies the workload's token (a Kubernetes service-account
    /// token) and answers with what that identity may pull, never with the
    /// plugin's own credentials in its place (see [`WorkloadAuthRequest`]).
    /// `None` when the registry needs no credentials. Plugins without
    /// workload identity (and every plugin built for 1.0 to 1.2) answer
    /// "unsupported". Since 1.3.
    fn workload_registry_auth(&self, req: WorkloadAuthRequest) -> FfiFuture<PResult<ROption<RegistryAuth>>> {
        let _ = req;
        async_ffi::FutureExt::into_ffi(async {
            abi_stable::std_types::RResult::RErr(PluginError::unsupported("workload identity (service-account tokens)"))
        })
    }
}

/// An owned provider trait object, as returned by a plugin's constructor.
pub type ProviderBox = Provider_TO<'static, RBox<()>>;

/// Severity of a log record sent from a plugin to the host.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct LogLevel(pub u8);

impl LogLevel {
    /// Errors.
    pub const ERROR: Self = Self(1);
    /// Warnings.
    pub const WARN: Self = Self(2);
    /// Information.
    pub const INFO: Self = Self(3);
    /// Debugging detail.
    pub const DEBUG: Self = Self(4);
    /// Very verbose detail.
    pub const TRACE: Self = Self(5);
}

/// Services the host offers every provider it constructs.
///
/// Add methods only at the end, with a default body.
#[sabi_trait]
pub trait HostServices: Send + Sync {
    /// The most verbose level the host will record; plugins skip formatting
    /// records above it.
    fn max_log_level(&self) -> LogLevel;

    /// The directory relative paths in the plugin's settings are resolved
    /// against (the directory of the host's configuration file).
    fn base_dir(&self) -> RString;

    /// Records one log line from the plugin in the host's log, attributed to
    /// the plugin. `target` is the plugin-side module path. Never contains secrets.
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);
}

/// An owned [`HostServices`] trait object.
pub type HostServicesBox = HostServices_TO<'static, RBox<()>>;
