//! The named entries of the `extra` maps, and typed accessors for them.
//!
//! Released structs cannot grow, so options and results added after 1.0
//! travel in their `extra` string maps. Every key that carries behaviour is
//! named here once and read or written through the accessors below, never
//! spelled by hand: a misspelt key would silently do nothing.

use abi_stable::std_types::RString;

use crate::{
    CheckReport, Extra, PluginError, PluginInfo, RegistryAuth, RegistryRequest, TransferResult, UploadRequest,
};

/// The keys, by the struct whose `extra` map holds them.
pub mod keys {
    /// [`RegistryRequest`](crate::RegistryRequest): a registry token scope,
    /// e.g. `repository:demo:pull,push`.
    pub const SCOPE: &str = "scope";
    /// [`RegistryRequest`](crate::RegistryRequest): shorthand for the scope
    /// `repository:NAME:pull,push`.
    pub const REPOSITORY: &str = "repository";
    /// [`RegistryRequest`](crate::RegistryRequest): the form the caller can
    /// hand on (see [`AuthForm`](super::AuthForm)).
    pub const AUTH_FORM: &str = "auth_form";
    /// [`RegistryAuth`](crate::RegistryAuth): `basic` or `bearer` (see [`AuthKind`](super::AuthKind)).
    pub const KIND: &str = "kind";
    /// [`UploadRequest`](crate::UploadRequest): the object's media type.
    pub const CONTENT_TYPE: &str = "content_type";
    /// [`UploadRequest`](crate::UploadRequest),
    /// [`PresignRequest`](crate::PresignRequest): create only, `required`
    /// or `best-effort` (see [`CreateOnly`](super::CreateOnly)). Sent only to
    /// plugins that declare [`CREATE_ONLY`].
    pub const IF_ABSENT: &str = "if_absent";
    /// [`PluginInfo`](crate::PluginInfo): `1` when the plugin honours
    /// [`IF_ABSENT`] (since plugin-api 1.3.1).
    pub const CREATE_ONLY: &str = "create_only";
    /// [`UploadRequest`](crate::UploadRequest): `1` to write the object by
    /// the store's multi-part path (an S3 multipart upload, a GCS resumable
    /// session) whatever its size, so that the host can probe that path's
    /// create-only check too. [`PluginInfo`](crate::PluginInfo): `1` when
    /// the plugin honours it; the host asks it only of such plugins (since
    /// plugin-api 1.3.2).
    pub const MULTI_PART: &str = "multi_part";
    /// [`TransferResult`](crate::TransferResult): where the object is, as a
    /// URL (`s3://b/k`, `gs://b/k`) or a path.
    pub const LOCATION: &str = "location";
    /// [`TransferResult`](crate::TransferResult): the store's version of the
    /// object (GCS generation).
    pub const GENERATION: &str = "generation";
    /// [`PluginError`](crate::PluginError): the setting at fault, a dotted path.
    pub const KEY: &str = "key";
    /// [`PluginInfo`](crate::PluginInfo): one line describing the plugin.
    pub const DESCRIPTION: &str = "description";
    /// [`PluginInfo`](crate::PluginInfo): the plugin's panic strategy,
    /// `unwind` or `abort`, as compiled.
    pub const PANIC: &str = "panic";
    /// [`PluginInfo`](crate::PluginInfo): the dotted path of the setting that
    /// holds the registry an instance serves (a host or a URL).
    pub const REGISTRY_SETTING: &str = "registry_setting";
    /// [`PluginInfo`](crate::PluginInfo): comma-separated environment
    /// variables the plugin's credentials depend on without any setting
    /// naming them; a trailing `*` matches a prefix (`AWS_*`).
    pub const IDENTITY_ENV: &str = "identity_env";
    /// [`PluginInfo`](crate::PluginInfo): comma-separated dotted paths of
    /// settings whose values name environment variables holding credentials.
    pub const IDENTITY_ENV_SETTINGS: &str = "identity_env_settings";
}

fn get<'a>(extra: &'a Extra, key: &str) -> Option<&'a str> {
    extra.get(key).map(RString::as_str).filter(|v| !v.is_empty())
}

fn set(extra: &mut Extra, key: &str, value: impl Into<String>) {
    extra.insert(RString::from(key), RString::from(value.into()));
}

fn list(extra: &Extra, key: &str) -> Vec<String> {
    get(extra, key)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// What a registry client can be handed ([`keys::AUTH_FORM`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthForm {
    /// Any credentials, registry bearer tokens included.
    #[default]
    Any,
    /// Only a user name and password: docker credential helpers, whose
    /// protocol cannot carry a registry bearer token. A plugin that would
    /// answer with a bearer token answers with the user name and password it
    /// exchanges for tokens instead.
    Basic,
}

/// How a create-only write is asked for ([`keys::IF_ABSENT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateOnly {
    /// The store itself must refuse the write when the name exists
    /// (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`, a link that does
    /// not replace): a lost race is
    /// [`ErrorKind::ALREADY_EXISTS`](crate::ErrorKind::ALREADY_EXISTS),
    /// nothing of the loser stored.
    Required,
    /// The store is known to ignore preconditions: look for the name first,
    /// then write (racy; the caller accepted that).
    BestEffort,
}

impl CreateOnly {
    /// The value of [`keys::IF_ABSENT`].
    pub fn as_str(self) -> &'static str {
        match self {
            CreateOnly::Required => "required",
            CreateOnly::BestEffort => "best-effort",
        }
    }

    /// Reads a value of [`keys::IF_ABSENT`]; an unknown value counts as
    /// [`CreateOnly::Required`] (never as no precondition).
    pub fn parse(value: &str) -> Self {
        match value {
            "best-effort" => CreateOnly::BestEffort,
            _ => CreateOnly::Required,
        }
    }
}

/// What the secret of a [`RegistryAuth`] is ([`keys::KIND`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// A password (or a token used as one) for HTTP basic authentication.
    Basic,
    /// A registry bearer token.
    Bearer,
}

impl AuthKind {
    fn as_str(self) -> &'static str {
        match self {
            AuthKind::Basic => "basic",
            AuthKind::Bearer => "bearer",
        }
    }
}

impl RegistryRequest {
    /// A request for `registry` (`None`: the plugin's own registry).
    pub fn for_registry(registry: Option<&str>) -> Self {
        Self { registry: registry.map(RString::from).into(), extra: Extra::new() }
    }

    /// The requested token scope: [`keys::SCOPE`], else the one
    /// [`keys::REPOSITORY`] stands for.
    pub fn scope(&self) -> Option<String> {
        get(&self.extra, keys::SCOPE)
            .map(str::to_owned)
            .or_else(|| get(&self.extra, keys::REPOSITORY).map(|r| format!("repository:{r}:pull,push")))
    }

    /// Asks for a token scope.
    pub fn with_scope(mut self, scope: &str) -> Self {
        set(&mut self.extra, keys::SCOPE, scope);
        self
    }

    /// The form the caller can hand on.
    pub fn auth_form(&self) -> AuthForm {
        match get(&self.extra, keys::AUTH_FORM) {
            Some(v) if v.eq_ignore_ascii_case("basic") => AuthForm::Basic,
            _ => AuthForm::Any,
        }
    }

    /// Says which form the caller can hand on.
    pub fn with_auth_form(mut self, form: AuthForm) -> Self {
        match form {
            AuthForm::Any => {
                self.extra.remove(keys::AUTH_FORM);
            }
            AuthForm::Basic => set(&mut self.extra, keys::AUTH_FORM, "basic"),
        }
        self
    }
}

impl RegistryAuth {
    /// What the secret is; `None` when the plugin did not say.
    pub fn kind(&self) -> Option<AuthKind> {
        match get(&self.extra, keys::KIND) {
            Some(k) if k.eq_ignore_ascii_case("basic") => Some(AuthKind::Basic),
            Some(k) if k.eq_ignore_ascii_case("bearer") => Some(AuthKind::Bearer),
            _ => None,
        }
    }

    /// Says what the secret is.
    pub fn with_kind(mut self, kind: AuthKind) -> Self {
        set(&mut self.extra, keys::KIND, kind.as_str());
        self
    }
}

impl UploadRequest {
    /// The media type the caller asked for.
    pub fn content_type(&self) -> Option<&str> {
        get(&self.extra, keys::CONTENT_TYPE)
    }

    /// Whether the object may only be created, not replaced.
    pub fn if_absent(&self) -> Option<CreateOnly> {
        get(&self.extra, keys::IF_ABSENT).map(CreateOnly::parse)
    }

    /// Asks for a create-only write.
    pub fn with_if_absent(mut self, mode: CreateOnly) -> Self {
        set(&mut self.extra, keys::IF_ABSENT, mode.as_str());
        self
    }

    /// Whether the object is to be written by the store's multi-part path
    /// whatever its size ([`keys::MULTI_PART`]).
    pub fn multi_part(&self) -> bool {
        get(&self.extra, keys::MULTI_PART) == Some("1")
    }

    /// Asks for the store's multi-part path whatever the size.
    pub fn with_multi_part(mut self) -> Self {
        set(&mut self.extra, keys::MULTI_PART, "1");
        self
    }
}

impl crate::PresignRequest {
    /// Whether the URL may only create the object (a PUT), never replace it.
    pub fn if_absent(&self) -> Option<CreateOnly> {
        get(&self.extra, keys::IF_ABSENT).map(CreateOnly::parse)
    }

    /// Asks for a URL that can only create the object.
    pub fn with_if_absent(mut self, mode: CreateOnly) -> Self {
        set(&mut self.extra, keys::IF_ABSENT, mode.as_str());
        self
    }
}

impl TransferResult {
    /// Where the object is (a URL or a path).
    pub fn location(&self) -> Option<&str> {
        get(&self.extra, keys::LOCATION)
    }

    /// Says where the object is.
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        set(&mut self.extra, keys::LOCATION, location);
        self
    }

    /// The store's version of the object.
    pub fn generation(&self) -> Option<&str> {
        get(&self.extra, keys::GENERATION)
    }

    /// Records the store's version of the object.
    pub fn with_generation(mut self, generation: impl Into<String>) -> Self {
        set(&mut self.extra, keys::GENERATION, generation);
        self
    }
}

impl PluginError {
    /// Names the setting at fault (a dotted path).
    pub fn with_config_key(mut self, key: &str) -> Self {
        set(&mut self.extra, keys::KEY, key);
        self
    }
}

impl PluginInfo {
    /// Whether the plugin honours create-only writes ([`keys::IF_ABSENT`]).
    pub fn create_only(&self) -> bool {
        get(&self.extra, keys::CREATE_ONLY) == Some("1")
    }

    /// Whether the plugin honours [`keys::MULTI_PART`] in upload requests.
    pub fn multi_part(&self) -> bool {
        get(&self.extra, keys::MULTI_PART) == Some("1")
    }

    /// One line describing the plugin.
    pub fn description(&self) -> Option<&str> {
        get(&self.extra, keys::DESCRIPTION)
    }

    /// The panic strategy the plugin was compiled with (`unwind` or
    /// `abort`); `None` for plugins that do not record it.
    pub fn panic_strategy(&self) -> Option<&str> {
        get(&self.extra, keys::PANIC)
    }

    /// The dotted path of the setting holding the registry an instance serves.
    pub fn registry_setting(&self) -> Option<&str> {
        get(&self.extra, keys::REGISTRY_SETTING)
    }

    /// Environment variables (or `PREFIX*` patterns) the plugin's
    /// credentials depend on without a setting naming them.
    pub fn identity_env(&self) -> Vec<String> {
        list(&self.extra, keys::IDENTITY_ENV)
    }

    /// Dotted paths of settings that name environment variables holding credentials.
    pub fn identity_env_settings(&self) -> Vec<String> {
        list(&self.extra, keys::IDENTITY_ENV_SETTINGS)
    }

    /// Sets an `extra` entry (used by plugin kits to fill in declarations).
    pub fn with_extra(mut self, key: &str, value: impl Into<String>) -> Self {
        set(&mut self.extra, key, value);
        self
    }
}

impl CheckReport {
    /// A report of `items`.
    pub fn of(items: impl IntoIterator<Item = crate::CheckItem>) -> Self {
        Self { items: items.into_iter().collect(), extra: Extra::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    #[test]
    fn registry_request_options() {
        let r = RegistryRequest::for_registry(Some("r:5000"));
        assert_eq!((r.scope(), r.auth_form()), (None, AuthForm::Any));
        let r = r.with_scope("repository:a:pull").with_auth_form(AuthForm::Basic);
        assert_eq!(r.scope().as_deref(), Some("repository:a:pull"));
        assert_eq!(r.auth_form(), AuthForm::Basic);
        let mut r = RegistryRequest::default();
        r.extra.insert(keys::REPOSITORY.into(), "demo".into());
        assert_eq!(r.scope().as_deref(), Some("repository:demo:pull,push"));
    }

    #[test]
    fn auth_kind_round_trips() {
        let a = RegistryAuth::new("r", "u", Secret::new("s"), None);
        assert_eq!(a.kind(), None);
        assert_eq!(a.with_kind(AuthKind::Bearer).kind(), Some(AuthKind::Bearer));
    }

    #[test]
    fn info_lists() {
        let i = PluginInfo {
            name: "x".into(),
            version: "1".into(),
            api_version: "1.0.0".into(),
            capabilities: crate::Capabilities::ALL,
            extra: Extra::new(),
        }
        .with_extra(keys::IDENTITY_ENV, "AWS_*, HOME,");
        assert_eq!(i.identity_env(), ["AWS_*", "HOME"]);
        assert!(i.identity_env_settings().is_empty());
    }
}
