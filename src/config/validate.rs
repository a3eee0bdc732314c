//! Checks of a merged configuration that its types cannot express: names, URLs, ranges.

use super::{ClientAuth, Config, ConfigError, PrivateConfig, RegistryConfig};
use crate::names::RegistryName;

impl Config {
    /// Checks what serde cannot: names, URLs and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.server.public_url.is_empty() {
            let u = &self.server.public_url;
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.parse::<http::Uri>().is_err()
            {
                return invalid(format!(
                    "server.public_url `{u}` must be an absolute http:// or https:// URL"
                ));
            }
        }
        if let Some(tls) = &self.server.tls {
            if tls.client_auth != ClientAuth::Off && tls.client_ca_file.is_none() {
                return invalid(
                    "server.tls.client_ca_file is needed when server.tls.client_auth is not off"
                        .into(),
                );
            }
            if tls.listen == self.server.listen && tls.listen.port() != 0 {
                return invalid("server.tls.listen and server.listen are the same address".into());
            }
            for (i, rule) in tls.principals.iter().enumerate() {
                if rule.subject_cn.is_some() == rule.san.is_some() || rule.principal.is_empty() {
                    return invalid(format!(
                        "server.tls.principals[{i}] needs a principal and exactly one of subject_cn or san"
                    ));
                }
            }
            if tls.reload_interval_ms == 0 || tls.handshake_timeout_ms == 0 {
                return invalid(
                    "server.tls.reload_interval_ms and handshake_timeout_ms must be positive"
                        .into(),
                );
            }
        }
        super::policy::validate_source(&self.advisories).map_err(ConfigError::Invalid)?;
        for (name, r) in &self.registries {
            super::policy::validate(name, &r.policy()).map_err(ConfigError::Invalid)?;
        }
        if self.server.send_timeout_ms == 0 {
            return invalid("server.send_timeout_ms must be positive".into());
        }
        if self.server.idle_timeout_ms == 0 {
            return invalid("server.idle_timeout_ms must be positive".into());
        }
        if self.server.max_connections == 0 || self.server.header_read_timeout_ms == 0 {
            return invalid(
                "server.max_connections and server.header_read_timeout_ms must be positive".into(),
            );
        }
        if self.cache.memory_max_item_bytes > self.cache.memory_max_bytes {
            return invalid(
                "cache.memory_max_item_bytes is larger than cache.memory_max_bytes".into(),
            );
        }
        let c = &self.cache;
        if !(1..=100).contains(&c.evict_high_percent) || c.evict_low_percent >= c.evict_high_percent
        {
            return Err(ConfigError::Invalid(
                "cache.evict_low_percent must be below cache.evict_high_percent, which is 1 to 100"
                    .into(),
            ));
        }
        if c.usage_write_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "cache.usage_write_interval_ms must be positive".into(),
            ));
        }
        if self.cache.max_crate_bytes == 0 || self.cache.coalesce_wait_ms == 0 {
            return invalid(
                "cache.max_crate_bytes and cache.coalesce_wait_ms must be positive".into(),
            );
        }
        if self.auth.identity_cache_entries == 0 || self.auth.last_used_write_interval_ms == 0 {
            return invalid(
                "auth.identity_cache_entries and auth.last_used_write_interval_ms must be positive"
                    .into(),
            );
        }
        if self.auth.admin_contact.chars().count() > 500 {
            return invalid("auth.admin_contact is longer than 500 characters".into());
        }
        if self.registries.is_empty() {
            return invalid("no registries are configured".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(format!(
                "log.level `{}` is not a valid filter",
                self.log.level
            ));
        }
        for (name, registry) in &self.registries {
            RegistryName::new(name)
                .map_err(|e| ConfigError::Invalid(format!("registries.{name}: {e}")))?;
            let m = match registry {
                RegistryConfig::Mirror(m) => m,
                RegistryConfig::Private(p) => {
                    self.validate_private(name, p)?;
                    continue;
                }
            };
            let u = &m.upstream;
            let scheme_ok = u.starts_with("http://") || u.starts_with("https://");
            if !scheme_ok || !u.ends_with('/') || u.parse::<http::Uri>().is_err() {
                return invalid(format!(
                    "registries.{name}.upstream `{u}` must be an http:// or https:// sparse index URL ending in `/` (without the `sparse+` prefix)"
                ));
            }
            for (key, v) in [
                ("connect_timeout_ms", m.connect_timeout_ms),
                ("request_timeout_ms", m.request_timeout_ms),
                ("download_timeout_ms", m.download_timeout_ms),
            ] {
                if v == 0 {
                    return invalid(format!("registries.{name}.{key} must be positive"));
                }
            }
            if m.client_cert_file.is_some() != m.client_key_file.is_some() {
                return invalid(format!(
                    "registries.{name}: client_cert_file and client_key_file go together"
                ));
            }
            if !m.system_roots && m.ca_bundle.is_none() && u.starts_with("https://") {
                return invalid(format!(
                    "registries.{name}: system_roots = false needs a ca_bundle to trust"
                ));
            }
            if m.max_connections == 0 || m.max_connections > 4096 {
                return invalid(format!(
                    "registries.{name}.max_connections must be between 1 and 4096"
                ));
            }
            if m.retries > 10 {
                return invalid(format!("registries.{name}.retries is at most 10"));
            }
        }
        Ok(())
    }

    fn validate_private(&self, name: &str, p: &PrivateConfig) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if p.max_upload_bytes == 0 || p.max_upload_bytes > u64::from(u32::MAX) {
            return invalid(format!(
                "registries.{name}.max_upload_bytes must be between 1 and {} (cargo sends the length as 32 bits)",
                u32::MAX
            ));
        }
        if p.max_concurrent_publishes == 0 || p.max_concurrent_publishes > 1024 {
            return invalid(format!(
                "registries.{name}.max_concurrent_publishes must be between 1 and 1024"
            ));
        }
        if p.upload_timeout_ms == 0 {
            return invalid(format!(
                "registries.{name}.upload_timeout_ms must be positive"
            ));
        }
        if p.max_unpacked_bytes == 0 {
            return invalid(format!(
                "registries.{name}.max_unpacked_bytes must be positive"
            ));
        }
        for dep in p.dependency_registries.iter().flatten() {
            let is_url = ["sparse+http://", "sparse+https://", "http://", "https://"]
                .iter()
                .any(|s| dep.starts_with(s));
            if dep == name {
                return invalid(format!(
                    "registries.{name}.dependency_registries names the registry itself (its own crates are always allowed)"
                ));
            }
            if !is_url && !self.registries.contains_key(dep) {
                return invalid(format!(
                    "registries.{name}.dependency_registries: `{dep}` is neither a registry of this configuration nor an index URL"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CliOverrides;

    #[test]
    fn bad_values_are_refused_with_the_key() {
        for (text, needle) in [
            (
                "[registries.x]\nkind = \"mirror\"\nupstream = \"https://a/index\"\n",
                "registries.x.upstream",
            ),
            (
                "[registries.metrics]\nkind = \"mirror\"\nupstream = \"https://a/\"\n",
                "registries.metrics",
            ),
            (
                "[registries.x]\nkind = \"private\"\ndependency_registries = [\"nope\"]\n",
                "registries.x.dependency_registries",
            ),
            (
                "[registries.x]\nkind = \"private\"\nmax_upload_bytes = 5000000000\n",
                "registries.x.max_upload_bytes",
            ),
            (
                "[registries.x]\nkind = \"private\"\nallow_upstream_names = [\"a*b\"]\n",
                "not a crate-name glob",
            ),
            ("[server]\npublic_url = \"ftp://x\"\n", "server.public_url"),
            ("[cache]\nmemory_max_bytes = -1\n", "memory_max_bytes"),
        ] {
            let e = Config::merge("test.toml", text, &[], &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
