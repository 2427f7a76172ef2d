//! The interface's `Provider` over a [`crate::Provider`]: converts requests
//! and answers between the ABI types and std types, and runs every call on
//! the plugin runtime through the interface crate's guarded plumbing.

use std::{path::PathBuf, sync::Arc};

use credhost_plugin_api::{
    abi_stable::std_types::{ROption, RString, RVec},
    keys,
    sdk::{extra_to_map, spawn_guarded},
    CheckItem, CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, DownloadDest, DownloadRequest, Extra,
    FfiFuture, HostServicesBox, PResult, PluginInfo, ProviderBox, TransferResult, UploadRequest, UploadSource,
    API_VERSION,
};

use crate::{
    DeleteRequest, Dest, Download, Entry, GrantRequest, Method, Plugin, PresignRequest, Probe, Progress, Provider,
    RegistryAuth, RegistryRequest, Source, Stored, StreamReader, Upload, WorkloadRequest,
};

struct Adapter<P>(Arc<P>);

/// The plugin's self-description, with its declarations.
pub fn info<P: Plugin>(aborts_on_panic: bool) -> PluginInfo {
    let mut info = PluginInfo {
        name: P::NAME.into(),
        version: P::VERSION.into(),
        api_version: API_VERSION.into(),
        capabilities: P::CAPABILITIES,
        extra: Extra::new(),
    }
    .with_extra(keys::PANIC, credhost_plugin_api::sdk::panic_strategy(aborts_on_panic));
    if !P::DESCRIPTION.is_empty() {
        info = info.with_extra(keys::DESCRIPTION, P::DESCRIPTION);
    }
    if let Some(setting) = P::REGISTRY_SETTING {
        info = info.with_extra(keys::REGISTRY_SETTING, setting);
    }
    if !P::IDENTITY_ENV.is_empty() {
        info = info.with_extra(keys::IDENTITY_ENV, P::IDENTITY_ENV.join(","));
    }
    if P::CREATE_ONLY {
        info = info.with_extra(keys::CREATE_ONLY, "1");
    }
    if P::MULTI_PART {
        info = info.with_extra(keys::MULTI_PART, "1");
    }
    if !P::IDENTITY_ENV_SETTINGS.is_empty() {
        info = info.with_extra(keys::IDENTITY_ENV_SETTINGS, P::IDENTITY_ENV_SETTINGS.join(","));
    }
    info
}

/// Builds a provider of plugin `P` from the settings JSON the host sent.
pub fn new_provider<P: Plugin>(settings_json: &str, host: HostServicesBox) -> PResult<ProviderBox> {
    credhost_plugin_api::sdk::construct(P::NAME, settings_json, host, |settings, ctx| async move {
        P::new(settings, ctx).await.map(|p| Adapter(Arc::new(p)))
    })
}

fn stored(s: Stored) -> TransferResult {
    let mut r = TransferResult::new(s.bucket, s.name, s.size, s.checksum);
    if let Some(l) = s.location {
        r = r.with_location(l);
    }
    if let Some(g) = s.generation {
        r = r.with_generation(g);
    }
    r
}

/// One line in the host's log for each transfer, the same for every plugin
/// built with the kit.
fn log_transfer(what: &str, s: &Stored, started: std::time::Instant) {
    tracing::info!("{what} {}/{} ({} bytes, {}) in {:.2?}", s.bucket, s.name, s.size, s.checksum, started.elapsed());
}

fn entry(e: Entry) -> CredentialEntry {
    CredentialEntry { key: RString::from(e.key), value: e.value, secret: e.secret }
}

fn registry_auth(a: RegistryAuth) -> credhost_plugin_api::RegistryAuth {
    credhost_plugin_api::RegistryAuth::new(a.server, a.username, a.secret, a.expires_at).with_kind(a.kind)
}

fn registry_request(req: credhost_plugin_api::RegistryRequest) -> RegistryRequest {
    RegistryRequest {
        registry: req.registry.as_ref().into_option().map(|r| r.to_string()),
        scope: req.scope(),
        form: req.auth_form(),
        extra: extra_to_map(req.extra),
    }
}

fn probe(p: Probe) -> CheckItem {
    CheckItem { component: p.component.into(), ok: p.ok, detail: p.detail.into() }
}

impl<P: Provider> credhost_plugin_api::Provider for Adapter<P> {
    fn registry_auth(
        &self,
        req: credhost_plugin_api::RegistryRequest,
    ) -> FfiFuture<PResult<ROption<credhost_plugin_api::RegistryAuth>>> {
        let p = self.0.clone();
        spawn_guarded("registry_auth", move || async move {
            Ok(p.registry_auth(registry_request(req)).await?.map(registry_auth).into())
        })
    }

    fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.0.clone();
        spawn_guarded("upload", move || async move {
            let content_type = req.content_type().map(str::to_owned);
            let source = match req.source {
                UploadSource::Path(path) => Source::Path(PathBuf::from(path.as_str())),
                UploadSource::Stream(s) => Source::Stream(StreamReader::new(s)),
            };
            let upload = Upload {
                name: req.name.into_string(),
                source,
                size_hint: req.size_hint.into_option(),
                progress: Progress::new(req.progress.into_option()),
                content_type,
                extra: extra_to_map(req.extra),
            };
            let started = std::time::Instant::now();
            let done = p.upload(upload).await?;
            log_transfer("stored", &done, started);
            Ok(stored(done))
        })
    }

    fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.0.clone();
        spawn_guarded("download", move || async move {
            let dest = match req.dest {
                DownloadDest::Path(path) => Dest::Path(PathBuf::from(path.as_str())),
                DownloadDest::Sink(s) => Dest::Sink(crate::SinkWriter::new(s)),
            };
            let download = Download {
                bucket: req.bucket.into_string(),
                name: req.name.into_string(),
                dest,
                progress: Progress::new(req.progress.into_option()),
                extra: extra_to_map(req.extra),
            };
            let started = std::time::Instant::now();
            let done = p.download(download).await?;
            log_transfer("fetched", &done, started);
            Ok(stored(done))
        })
    }

    fn credentials(&self, _req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>> {
        let p = self.0.clone();
        spawn_guarded("credentials", move || async move { Ok(p.credentials().await?.into_iter().map(entry).collect()) })
    }

    fn check(&self, _req: CheckRequest) -> FfiFuture<PResult<CheckReport>> {
        let p = self.0.clone();
        spawn_guarded("check", move || async move { Ok(CheckReport::of(p.check().await?.into_iter().map(probe))) })
    }

    fn wait_idle(&self) -> FfiFuture<PResult<()>> {
        credhost_plugin_api::sdk::wait_idle()
    }

    fn presign(&self, req: credhost_plugin_api::PresignRequest) -> FfiFuture<PResult<credhost_plugin_api::Presigned>> {
        let p = self.0.clone();
        spawn_guarded("presign", move || async move {
            let method = if req.method == credhost_plugin_api::PresignMethod::PUT { Method::Put } else { Method::Get };
            let request = PresignRequest {
                method,
                bucket: req.bucket.into_string(),
                name: req.name.into_string(),
                expires: std::time::Duration::from_secs(req.expires_secs),
                extra: extra_to_map(req.extra),
            };
            let signed = p.presign(request).await?;
            Ok(credhost_plugin_api::Presigned {
                method: match signed.method {
                    Method::Get => "GET".into(),
                    Method::Put => "PUT".into(),
                },
                url: signed.url,
                headers: signed
                    .headers
                    .into_iter()
                    .map(|(name, value)| credhost_plugin_api::Header { name: name.into(), value: value.into() })
                    .collect(),
                expires_at: signed.expires_at,
                extra: Extra::new(),
            })
        })
    }

    fn delete(&self, req: credhost_plugin_api::DeleteRequest) -> FfiFuture<PResult<()>> {
        let p = self.0.clone();
        spawn_guarded("delete", move || async move {
            let request = DeleteRequest {
                bucket: req.bucket.into_string(),
                name: req.name.into_string(),
                extra: extra_to_map(req.extra),
            };
            p.delete(request).await
        })
    }

    fn grant(&self, req: credhost_plugin_api::GrantRequest) -> FfiFuture<PResult<credhost_plugin_api::Grant>> {
        let p = self.0.clone();
        spawn_guarded("grant", move || async move {
            let request = GrantRequest {
                bucket: req.bucket.into_string(),
                name: req.name.into_string(),
                repository: req.repository.into_option().map(RString::into_string),
                pull: req.pull.into_iter().map(RString::into_string).collect(),
                ttl: std::time::Duration::from_secs(req.ttl_secs),
                with_keys: req.with_keys,
                allow_unscoped_registry: req.allow_unscoped_registry,
                session_name: req.session_name.into_string(),
                extra: extra_to_map(req.extra),
            };
            let g = p.grant(request).await?;
            Ok(credhost_plugin_api::Grant {
                project_url: g.project_url.into(),
                registry: g.registry.map(registry_auth).into(),
                entries: g.entries.into_iter().map(entry).collect(),
                parts: g
                    .parts
                    .into_iter()
                    .map(|part| {
                        credhost_plugin_api::GrantPart::new(&part.part, &part.scope, part.detail, part.expires_at)
                    })
                    .collect(),
                expires_at: g.expires_at,
                extra: Extra::new(),
            })
        })
    }

    fn workload_registry_auth(
        &self,
        req: credhost_plugin_api::WorkloadAuthRequest,
    ) -> FfiFuture<PResult<ROption<credhost_plugin_api::RegistryAuth>>> {
        let p = self.0.clone();
        spawn_guarded("workload_registry_auth", move || async move {
            let request = WorkloadRequest {
                registry: registry_request(req.registry),
                token: req.token,
                namespace: req.namespace.into_string(),
                service_account: req.service_account.into_string(),
                annotations: extra_to_map(req.annotations),
                extra: extra_to_map(req.extra),
            };
            Ok(p.workload_registry_auth(request).await?.map(registry_auth).into())
        })
    }
}
