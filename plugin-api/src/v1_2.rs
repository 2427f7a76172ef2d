//! The released 1.2 interface, frozen: the types that grew since, as they
//! were in 1.2, under the same names (abi_stable's layout check compares
//! names and the package, not module paths). See [`crate::v1_0`] for how the
//! host falls back to it.
//!
//! Never edit this module; a later minor adds a module like it for 1.3.

#![allow(missing_docs)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RStr, RVec},
    StableAbi,
};
use async_ffi::FfiFuture;

use crate::{
    CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, DeleteRequest, DownloadRequest, Grant,
    GrantRequest, HostServicesBox, PResult, PluginError, PluginInfo, PresignRequest, Presigned, RegistryAuth,
    RegistryRequest, TransferResult, UploadRequest,
};

/// The 1.2 provider trait.
#[sabi_trait]
pub trait Provider: Send + Sync {
    fn registry_auth(&self, req: RegistryRequest) -> FfiFuture<PResult<ROption<RegistryAuth>>>;

    fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<TransferResult>>;

    fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>>;

    fn credentials(&self, req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>>;

    fn check(&self, req: CheckRequest) -> FfiFuture<PResult<CheckReport>>;

    #[sabi(last_prefix_field)]
    fn wait_idle(&self) -> FfiFuture<PResult<()>>;

    fn presign(&self, req: PresignRequest) -> FfiFuture<PResult<Presigned>> {
        let _ = req;
        async_ffi::FutureExt::into_ffi(async {
            abi_stable::std_types::RResult::RErr(PluginError::unsupported("presigned URLs"))
        })
    }

    fn delete(&self, req: DeleteRequest) -> FfiFuture<PResult<()>> {
        let _ = req;
        async_ffi::FutureExt::into_ffi(async {
            abi_stable::std_types::RResult::RErr(PluginError::unsupported("deleting projects"))
        })
    }

    fn grant(&self, req: GrantRequest) -> FfiFuture<PResult<Grant>> {
        let _ = req;
        async_ffi::FutureExt::into_ffi(async {
            abi_stable::std_types::RResult::RErr(PluginError::unsupported("build-job grants"))
        })
    }
}

/// An owned 1.2 provider.
pub type ProviderBox = Provider_TO<'static, RBox<()>>;

/// The 1.2 root module.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRoot_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginRoot {
    pub info: extern "C" fn() -> PluginInfo,

    #[sabi(last_prefix_field)]
    pub new_provider: extern "C" fn(settings_json: RStr<'_>, host: HostServicesBox) -> PResult<ProviderBox>,
}

impl RootModule for PluginRoot_Ref {
    declare_root_module_statics! {PluginRoot_Ref}
    const BASE_NAME: &'static str = "credhost_plugin";
    const NAME: &'static str = "credhost_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.2.0");
}
