//! What every Lambda binary starts with: its logging and its store.

/// Plain log lines, without ANSI colours or timestamps (CloudWatch stamps each line); the level
/// from `RUST_LOG`, default `info`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(false)
        .without_time()
        .init();
}

/// The bucket of a deployed function (`S3Settings::from_env`), with the data key that seals personal traits
/// made or checked (`CDP_KMS_KEY_ID`, else `CDP_MASTER_KEY_FILE`): a function without either does not start,
/// so nothing is ever stored in clear for want of a setting.
pub async fn store() -> Result<crate::storage::S3Store, Box<dyn std::error::Error + Send + Sync>> {
    let store = crate::storage::S3Store::new(crate::storage::S3Settings::from_env()?);
    let source = crate::vault::KeySource::required_from_env()?;
    crate::vault::ensure(&store, &source).await?;
    Ok(store)
}
