//! The custom resources.

/// Every CRD as a multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    Ok(String::new())
}
