//! `credhost plugins push` and `credhost plugins install`: plugins through
//! OCI registries (see [`credhost::oci`]).

use std::path::{Path, PathBuf};

use credhost::{
    oci::{self, ArtifactRef, Platform},
    ErrorKind, Host,
};

use crate::{
    error::{exit, Error, Result},
    output::{print_json, println},
};

/// The configuration, when there is one to read; a missing default file
/// is no error for these commands (they work without one).
fn host_if_any(config: &Path, platform: Option<&str>) -> Result<Option<Host>> {
    match Host::from_file(config, platform) {
        Ok(host) => Ok(Some(host)),
        Err(e) if e.kind() == ErrorKind::NotFound || !config.exists() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `credhost plugins push FILE... REFERENCE`.
pub async fn push(
    config: &Path,
    platform_flag: Option<&str>,
    files: &[PathBuf],
    reference: &str,
    platforms: &[String],
    json: bool,
    quiet: bool,
) -> Result<i32> {
    let reference = ArtifactRef::parse(reference)?;
    let host = host_if_any(config, platform_flag)?;
    let policy = host.as_ref().map(Host::policy).unwrap_or_default();
    let mut vetted = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let platform = match platforms {
            [] => None,
            [one] => Some(Platform::parse(one)?),
            many => Some(Platform::parse(&many[i])?),
        };
        // Vetting loads the file: in a child process, as `inspect` does.
        let report = crate::inspect::inspect(file, policy).await?;
        if let Some(r) = report.refused {
            return Err(Error::Lib(credhost::Error::InvalidInput(format!(
                "{}: not pushed: {}",
                file.display(),
                r.message
            ))));
        }
        let (Some(info), Some(sha256)) = (report.info, report.sha256) else {
            return Err(Error::Lib(credhost::Error::InvalidInput(format!("{}: not a plugin", file.display()))));
        };
        let here = Platform::current();
        if let Some(p) = platform.filter(|p| *p != here) {
            return Err(Error::Lib(credhost::Error::InvalidInput(format!(
                "{}: --platform {p}, but it loads on this machine, which is {here}",
                file.display()
            ))));
        }
        vetted.push(oci::PushFile { path: file.clone(), platform: here, info, sha256 });
    }
    let auth = oci::registry_credentials(host.as_ref().map(Host::config), reference.registry()).await?;
    let pushed = oci::push(&vetted, &reference, &auth).await?;
    if json {
        let files: Vec<_> = vetted
            .iter()
            .map(|f| {
                serde_json::json!({
                    "file": f.path, "plugin": f.info.name, "version": f.info.version,
                    "api_version": f.info.api_version, "platform": f.platform.to_string(), "sha256": f.sha256,
                })
            })
            .collect();
        let manifests: Vec<_> = pushed
            .manifests
            .iter()
            .map(|(p, d)| serde_json::json!({ "platform": p.to_string(), "digest": d }))
            .collect();
        print_json(&serde_json::json!({
            "digest": pushed.digest, "pinned": pushed.pinned, "manifests": manifests, "files": files,
        }))?;
    } else {
        if !quiet {
            eprintln!("credhost: pushed {} plugin file(s) to {reference} {}", vetted.len(), auth.describe());
        }
        println(&pushed.digest)?;
    }
    Ok(exit::OK)
}

/// `credhost plugins install REFERENCE`.
#[allow(clippy::too_many_arguments)]
pub async fn install(
    config: &Path,
    platform_flag: Option<&str>,
    reference: &str,
    instance: Option<&str>,
    dir: Option<&Path>,
    plugin: Option<&str>,
    write_config: bool,
    json: bool,
    quiet: bool,
) -> Result<i32> {
    let reference = ArtifactRef::parse(reference)?;
    let host = host_if_any(config, platform_flag)?;
    if write_config && host.is_none() && config.exists() {
        return Err(Error::Usage(format!("--write-config: {} cannot be read", config.display())));
    }
    let dir = match (dir, &host) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(h)) => h.config().plugin_dir.clone(),
        (None, None) => PathBuf::from("."),
    };
    if let Some(name) = instance.filter(|n| n.is_empty() || n.contains(['.', '"', '\n', '[', ']'])) {
        return Err(Error::Usage(format!("--as `{}` is not an instance name", name.escape_debug())));
    }
    // `--as` an instance of the configuration: its plugin, and its pin.
    let configured = instance.and_then(|name| host.as_ref()?.config().instances.get(name));
    let opts = oci::InstallOptions {
        dir: dir.clone(),
        plugin: plugin
            .map(str::to_owned)
            .or_else(|| configured.map(|i| i.plugin.clone()))
            .or_else(|| instance.map(str::to_owned)),
        max_bytes: host.as_ref().map_or(oci::DEFAULT_MAX_DOWNLOAD_MIB << 20, |h| h.config().plugin_download_max),
        policy: host.as_ref().map(Host::policy).unwrap_or_default(),
        expect_sha256: None,
    };
    let auth = oci::registry_credentials(host.as_ref().map(Host::config), reference.registry()).await?;
    let fetched = match oci::fetch(&reference, &auth, &opts).await {
        // `--as` names an instance, not necessarily a plugin: without
        // `--plugin`, an artifact holding one plugin is taken whatever its name.
        Err(e) if plugin.is_none() && instance.is_some() && e.kind() == ErrorKind::NotFound => {
            let opts = oci::InstallOptions { plugin: None, ..opts.clone() };
            oci::fetch(&reference, &auth, &opts).await.map_err(|_| e)?
        }
        other => other?,
    };
    if reference.digest().is_none() && !quiet {
        eprintln!("credhost: {reference} resolved to {}", fetched.digest);
    }
    // Vetted as `inspect` vets: loaded in a child process.
    let report = crate::inspect::inspect(fetched.path(), opts.policy).await?;
    if let Some(r) = report.refused {
        return Err(Error::Lib(credhost::Error::Registry {
            kind: ErrorKind::PluginRefused,
            message: format!("{reference}: the fetched plugin is refused: {}; nothing was written", r.message),
        }));
    }
    let vetted_name = report.info.map(|i| i.name).unwrap_or_default();
    let installed = fetched.place(&vetted_name)?;
    let instance = instance.unwrap_or(&installed.name).to_owned();
    let stale_pin =
        configured.and_then(|i| i.sha256.as_deref()).filter(|pin| !pin.eq_ignore_ascii_case(&installed.sha256));
    if let (Some(pin), false) = (stale_pin, write_config) {
        eprintln!(
            "credhost: warning: plugins.{}.sha256 pins {pin}, not this file ({}): the host refuses to load it until the pin is updated (--write-config does)",
            instance,
            installed.sha256
        );
    }
    if write_config {
        let path = config.to_path_buf();
        let (inst, done) = (instance.clone(), installed.clone());
        tokio::task::spawn_blocking(move || oci::write_config(&path, &inst, &done))
            .await
            .map_err(|e| Error::Lib(credhost::Error::Internal(format!("{e}"))))??;
    }
    if !quiet {
        eprintln!(
            "credhost: installed {} {} at {} (from {} {})",
            installed.name,
            installed.version,
            installed.file.display(),
            installed.pinned,
            auth.describe()
        );
        if write_config {
            eprintln!("credhost: pinned [plugins.{instance}] in {}", config.display());
        }
    }
    if json {
        print_json(&serde_json::json!({
            "instance": instance, "plugin": installed.name, "version": installed.version,
            "oci": installed.pinned, "sha256": installed.sha256, "file": installed.file, "digest": installed.digest,
        }))?;
    } else {
        crate::output::print(&oci::pins_toml(&instance, &installed))?;
    }
    Ok(exit::OK)
}
