//! The released 1.0 interface, frozen: the types that grew since, as they
//! were in 1.0, under the same names (abi_stable's layout check compares
//! names and the package, not module paths).
//!
//! A host loads a plugin with the current interface first; a plugin built
//! against 1.0 fails that check (its provider's table of methods is shorter),
//! and the host retries with [`PluginRoot_Ref`] from here. The newer methods
//! then answer "unsupported" on the host's side. Every type that did not
//! change is shared with the current interface.
//!
//! Never edit this module; a later minor adds a module like it for 1.1.

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
    CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, DownloadRequest, HostServicesBox, PResult,
    PluginInfo, RegistryAuth, RegistryRequest, TransferResult, UploadRequest,
};

/// The 1.0 provider trait.
#[sabi_trait]
pub trait Provider: Send + Sync {
    fn registry_auth(&self, req: RegistryRequest) -> FfiFuture<PResult<ROption<RegistryAuth>>>;

    fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<TransferResult>>;

    fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>>;

    fn credentials(&self, req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>>;

    fn check(&self, req: CheckRequest) -> FfiFuture<PResult<CheckReport>>;

    #[sabi(last_prefix_field)]
    fn wait_idle(&self) -> FfiFuture<PResult<()>>;
}

/// An owned 1.0 provider.
pub type ProviderBox = Provider_TO<'static, RBox<()>>;

/// The 1.0 root module.
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
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}
