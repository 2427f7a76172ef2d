//! The root module every plugin library exports.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{RStr, RString},
    StableAbi,
};

use crate::{Extra, HostServicesBox, PResult, ProviderBox};

/// What a plugin can do, as bit flags (a newtype so later versions can add bits).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Registry credentials.
    pub const REGISTRY: Self = Self(1);
    /// Project upload.
    pub const UPLOAD: Self = Self(1 << 1);
    /// Project download.
    pub const DOWNLOAD: Self = Self(1 << 2);
    /// Build-job credentials.
    pub const CREDENTIALS: Self = Self(1 << 3);
    /// Live probe.
    pub const CHECK: Self = Self(1 << 4);
    /// Presigned URLs (interface 1.1).
    pub const PRESIGN: Self = Self(1 << 5);
    /// Deleting projects (interface 1.1).
    pub const DELETE: Self = Self(1 << 6);
    /// Build-job grants (interface 1.2).
    pub const GRANT: Self = Self(1 << 7);
    /// Registry credentials of a workload's own identity (since 1.3).
    pub const WORKLOAD_IDENTITY: Self = Self(1 << 8);

    /// What interface 1.0 could offer: registry, upload, download, credentials, check.
    pub const V1_0: Self = Self(0b1_1111);
    /// What interface 1.1 could offer: 1.0's, presign and delete.
    pub const V1_1: Self = Self(0b111_1111);
    /// What interface 1.2 could offer: 1.1's and grants.
    pub const V1_2: Self = Self(0b1111_1111);
    /// All of the above.
    pub const ALL: Self = Self(0b1_1111_1111);

    /// Both sets (usable in constants, unlike `|`).
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// This set without `other`'s bits.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Names of the set bits, for display.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::REGISTRY, "registry"),
            (Self::UPLOAD, "upload"),
            (Self::DOWNLOAD, "download"),
            (Self::CREDENTIALS, "credentials"),
            (Self::CHECK, "check"),
            (Self::PRESIGN, "presign"),
            (Self::DELETE, "delete"),
            (Self::GRANT, "grant"),
            (Self::WORKLOAD_IDENTITY, "workload-identity"),
        ]
        .into_iter()
        .filter(|(c, _)| self.contains(*c))
        .map(|(_, n)| n)
        .collect()
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capabilities({})", self.names().join("|"))
    }
}

/// Describes a plugin library.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PluginInfo {
    /// The platform name the plugin serves, e.g. `local`; unique per host.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// The plugin-api version it was built against.
    pub api_version: RString,
    /// What it offers.
    pub capabilities: Capabilities,
    /// Known keys: `description`.
    pub extra: Extra,
}

/// The root module: the one symbol the host looks up in a plugin library.
///
/// A prefix type: fields are only ever appended after the last one, and a host
/// reads a field added later as absent in older plugins.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRoot_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginRoot {
    /// Describes the plugin. Never fails.
    pub info: extern "C" fn() -> PluginInfo,

    /// Creates a provider from the plugin's settings (a JSON object, converted
    /// by the host from the plugin's `settings` table) and the host's services.
    #[sabi(last_prefix_field)]
    pub new_provider: extern "C" fn(settings_json: RStr<'_>, host: HostServicesBox) -> PResult<ProviderBox>,
}

impl RootModule for PluginRoot_Ref {
    declare_root_module_statics! {PluginRoot_Ref}
    const BASE_NAME: &'static str = "credhost_plugin";
    const NAME: &'static str = "credhost_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(API_VERSION);
}

/// The interface version: what plugins report in [`PluginInfo::api_version`]
/// and what the loader checks. It is not the crate's version: additions that
/// change no layout (helpers, constants, accessors) leave it alone; it moves
/// to the next minor only when the interface itself grows.
pub const API_VERSION: &str = "1.3.0";

#[cfg(test)]
mod tests {
    /// The crate's major and minor are the interface's: a release that grows
    /// the interface must also be a new minor of the crate, or a registry (or
    /// a cached unpacking of an earlier package) hands the older sources out
    /// under the same version.
    #[test]
    fn the_crate_version_names_the_interface_minor() {
        let crate_minor = format!("{}.{}.", env!("CARGO_PKG_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MINOR"));
        assert!(
            super::API_VERSION.starts_with(&crate_minor),
            "credhost-plugin-api {} implements interface {}: bump the crate to the interface's minor",
            env!("CARGO_PKG_VERSION"),
            super::API_VERSION
        );
    }
}
