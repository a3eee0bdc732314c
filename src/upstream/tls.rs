//! The TLS side of the upstream clients: the trusted roots (the system's, a CA bundle per
//! upstream), a client certificate, and finding the TLS error behind a failed request.

use rustls::RootCertStore;

use crate::config::MirrorConfig;
use crate::names::RegistryName;
use crate::net::pem;

/// The system's trusted roots, loaded once and shared by every upstream.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "could not load some system CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    tracing::debug!(added, ignored, "loaded system CA certificates");
    roots
}

pub(super) fn tls_config(
    registry: &RegistryName,
    cfg: &MirrorConfig,
    system_roots: &RootCertStore,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = if cfg.system_roots {
        system_roots.clone()
    } else {
        RootCertStore::empty()
    };
    if let Some(path) = &cfg.ca_bundle {
        let certs = pem::read_certs(path)
            .map_err(|e| anyhow::anyhow!("registries.{registry}.ca_bundle: {e}"))?;
        for cert in certs {
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!("registries.{registry}.ca_bundle: {}: {e}", path.display())
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut tls = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = pem::read_certs(cert)
                .map_err(|e| anyhow::anyhow!("registries.{registry}.client_cert_file: {e}"))?;
            let key_der = pem::read_key(key)
                .map_err(|e| anyhow::anyhow!("registries.{registry}.client_key_file: {e}"))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                anyhow::anyhow!(
                    "registries.{registry}: the key in {} does not fit the certificate in {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The TLS error behind a failed request, if that is what failed.
pub(super) fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An I/O error's `source` skips the error it wraps: step into that one instead.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}
