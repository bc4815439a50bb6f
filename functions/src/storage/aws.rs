//! How the functions reach AWS services (S3 for the store, KMS for the vault): a region and the role's
//! credentials, read once from the environment Lambda gives, never logged.

use std::time::Duration;

use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::config::timeout::TimeoutConfig;

/// A region and credentials. `Debug` prints the secret parts redacted.
#[derive(Clone)]
pub struct AwsAccess {
    /// Region, e.g. `eu-central-1`.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key. Never logged.
    pub secret_access_key: String,
    /// Session token of temporary credentials (Lambda's role credentials have one). Never logged.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsAccess")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AwsAccess {
    /// From the environment a Lambda function has: `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self, shared::Invalid> {
        Ok(Self {
            region: required_env("AWS_REGION")?,
            access_key_id: required_env("AWS_ACCESS_KEY_ID")?,
            secret_access_key: required_env("AWS_SECRET_ACCESS_KEY")?,
            session_token: optional_env("AWS_SESSION_TOKEN"),
        })
    }

    /// The credentials for an SDK client.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            None,
            "cdp-settings",
        )
    }
}

/// Fail fast: a collector answering 503 quickly lets the client retry; a hung call helps no one.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build()
}

/// The environment variable `name`, or what is missing.
pub fn required_env(name: &str) -> Result<String, shared::Invalid> {
    std::env::var(name).map_err(|_| shared::Invalid(format!("environment variable {name} is not set")))
}

/// The environment variable `name` when set and not empty.
pub fn optional_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret_or_the_session_token() {
        let access = AwsAccess {
            region: "eu-central-1".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG".into(),
            session_token: Some("IQoJb3JpZ2luX2Vj".into()),
        };
        let shown = format!(
            "{access:?} {:?}",
            crate::storage::S3Settings { endpoint: None, bucket: "b".into(), access: access.clone() }
        );
        assert!(shown.contains("AKIAEXAMPLE") && shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("IQoJb3JpZ2luX2Vj"), "{shown}");
    }
}
