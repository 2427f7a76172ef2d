//! Artifact Registry and Container Registry credentials: the user
//! `oauth2accesstoken` with an OAuth2 access token as its password.

use credhost_plugin_sdk::{registry_host, Error as PluginError, ErrorKind, RegistryAuth};

use crate::auth::token::AccessToken;

/// The user name Google's registries accept with an access token.
pub const USERNAME: &str = "oauth2accesstoken";

/// Whether `host` is served by Google's registries, which all accept the
/// same access token: `*.pkg.dev` (Artifact Registry) and `gcr.io` with its
/// regional variants.
pub fn is_google_registry(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let host = host.split(':').next().unwrap_or_default();
    host.ends_with(".pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io")
}

/// The registry a request is for: the configured one when `requested` is
/// `None`, otherwise `requested` (scheme and trailing `/` ignored) when it is
/// the configured registry or one of Google's.
pub fn server_for(configured: &str, requested: Option<&str>) -> Result<String, PluginError> {
    let Some(r) = requested else {
        return Ok(configured.to_owned());
    };
    let r = registry_host(r);
    if r == registry_host(configured) || is_google_registry(&r) {
        Ok(r)
    } else {
        Err(PluginError::new(
            ErrorKind::NOT_FOUND,
            format!(
                "{r} is not an Artifact Registry or Container Registry host; this platform's registry is {configured}"
            ),
        ))
    }
}

/// Credentials for `server` from `token`.
pub fn auth(server: String, token: AccessToken) -> RegistryAuth {
    RegistryAuth::basic(server, USERNAME, token.secret).expires_at(token.expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_hosts() {
        for h in [
            "us-central1-docker.pkg.dev",
            "europe-docker.pkg.dev",
            "gcr.io",
            "eu.gcr.io",
            "GCR.IO",
            "us-docker.pkg.dev:443",
        ] {
            assert!(is_google_registry(h), "{h}");
        }
        for h in ["docker.io", "evilgcr.io", "pkg.dev.example.com", "127.0.0.1:5000"] {
            assert!(!is_google_registry(h), "{h}");
        }
    }

    #[test]
    fn requested_servers() {
        let c = "us-central1-docker.pkg.dev";
        assert_eq!(server_for(c, None).unwrap(), c);
        assert_eq!(server_for(c, Some("https://eu.gcr.io/")).unwrap(), "eu.gcr.io");
        assert_eq!(
            server_for("registry.internal:5000", Some("registry.internal:5000")).unwrap(),
            "registry.internal:5000"
        );
        let e = server_for(c, Some("docker.io")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NOT_FOUND);
        assert!(e.message.contains("this platform's registry is us-central1-docker.pkg.dev"), "{}", e.message);
    }
}
