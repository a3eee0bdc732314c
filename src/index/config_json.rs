//! `config.json`: the upstream's (its `dl` template) and the one cratedock serves.

use serde::Deserialize;

use super::prefix_of;

/// What cratedock reads of an upstream's `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UpstreamConfig {
    pub dl: String,
}

/// The `config.json` cratedock serves for `registry`: downloads and API calls come back to
/// cratedock at `base` (scheme, host and optional path, without a trailing slash).
pub(crate) fn served_config(base: &str, registry: &str, auth_required: bool) -> String {
    let mut config = serde_json::json!({
        "dl": format!("{base}/{registry}/api/v1/crates"),
        "api": format!("{base}/{registry}"),
    });
    if auth_required {
        // Tells cargo to send its token on every index request and download.
        config["auth-required"] = serde_json::Value::Bool(true);
    }
    config.to_string()
}

/// Fills a `dl` template the way cargo does (markers, or the legacy suffix).
pub(crate) fn download_url(dl: &str, name: &str, version: &str, cksum: &str) -> String {
    const MARKERS: [&str; 5] = [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    if !MARKERS.iter().any(|m| dl.contains(m)) {
        return format!("{dl}/{name}/{version}/download");
    }
    let prefix = prefix_of(name);
    dl.replace("{crate}", name)
        .replace("{version}", version)
        .replace("{prefix}", &prefix)
        .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
        .replace("{sha256-checksum}", cksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_urls_follow_cargo_rules() {
        assert_eq!(
            download_url("https://x/api/v1/crates", "serde", "1.0.0", "ab"),
            "https://x/api/v1/crates/serde/1.0.0/download"
        );
        assert_eq!(
            download_url(
                "https://x/{prefix}/{lowerprefix}/{crate}-{version}.crate?{sha256-checksum}",
                "MyCrate",
                "1.0.0+m",
                "ab"
            ),
            "https://x/My/Cr/my/cr/MyCrate-1.0.0+m.crate?ab"
        );
    }

    #[test]
    fn the_served_config_points_back_at_cratedock() {
        let v: serde_json::Value = serde_json::from_str(&served_config(
            "https://cd.example/base",
            "crates-io",
            false,
        ))
        .unwrap();
        assert_eq!(v["dl"], "https://cd.example/base/crates-io/api/v1/crates");
        assert_eq!(v["api"], "https://cd.example/base/crates-io");
        assert!(v.get("auth-required").is_none());
        let v: serde_json::Value =
            serde_json::from_str(&served_config("https://x", "internal", true)).unwrap();
        assert_eq!(v["auth-required"], true);
    }
}
