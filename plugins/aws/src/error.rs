//! AWS SDK errors as plugin errors, by what the caller should do next (the
//! shared transfer crate's mapping, used for ECR and STS alike).

pub use credhost_s3_transfer::grant::sdk_error;
