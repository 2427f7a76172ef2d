//! End-to-end tests: the built `credhost` binary and plugin libraries against
//! the real services started by `tests/services/up.sh`.

mod audit;
mod aws;
mod bad_input;
mod conformance;
mod contract;
mod create_only;
mod credhelper;
mod distribution;
mod evolution;
mod fs_store;
mod gcp;
mod grant;
mod hardening;
mod hostile;
mod isolation;
mod job_env;
mod kit;
mod kubelet;
mod load;
mod loading;
mod registry;
mod retries;
mod s3;
mod service;
mod switching;
