//! The stable plugin interface of credhost.
//!
//! A plugin is a `cdylib` exporting a [`PluginRoot`] through abi_stable. The
//! host loads it, checks the interface version and type layout, asks it for a
//! [`Provider`] built from the plugin's settings, and calls the provider's
//! async methods through [`async_ffi::FfiFuture`]s.
//!
//! Rules of evolution (this crate is versioned from 1.0.0): types and trait
//! methods are only ever appended; released structs never change, new options
//! travel in their `extra` maps; a bump of abi_stable or async-ffi is a new
//! major version.
//!
//! With the `sdk` feature, [`sdk`] lets a plugin author write an ordinary
//! async Rust trait and export it with [`export_plugin!`].
#![warn(missing_docs)]
#![allow(non_camel_case_types, non_local_definitions)]

mod error;
pub mod extra;
mod provider;
mod root;
pub mod rules;
mod secret;
mod types;
pub mod v1_0;
pub mod v1_1;
pub mod v1_2;

#[cfg(feature = "sdk")]
pub mod sdk;

pub use abi_stable;
pub use async_ffi;
pub use async_ffi::FfiFuture;

pub use error::{ErrorKind, PResult, PluginError};
pub use extra::{keys, AuthForm, AuthKind, CreateOnly};
pub use provider::{HostServices, HostServicesBox, HostServices_TO, LogLevel, Provider, ProviderBox, Provider_TO};
pub use root::{Capabilities, PluginInfo, PluginRoot, PluginRoot_Ref, API_VERSION};
pub use secret::{Secret, REDACTED};
pub use types::*;

/// Implements `Debug` for a struct that holds a [`Secret`], listing the
/// fields it shows by name: nothing that holds a secret derives `Debug`, so
/// a field added later is shown only once someone lists it here, knowing
/// what it holds (a `Secret` field prints as the redaction marker).
///
/// ```
/// struct Login { user: String, password: credhost_plugin_api::Secret }
/// credhost_plugin_api::debug_fields!(Login { user, password });
/// let l = Login { user: "u".into(), password: "pw".into() };
/// assert_eq!(format!("{l:?}"), "Login { user: \"u\", password: Secret(<redacted>) }");
/// ```
#[macro_export]
macro_rules! debug_fields {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))$(.field(stringify!($field), &self.$field))*.finish()
            }
        }
    };
}
