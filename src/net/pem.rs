//! PEM files: certificate chains and private keys, for the TLS listener and the upstream
//! clients alike. Every error names the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PemError(String);

/// Reads every certificate of a PEM file; a file without one is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    std::fs::metadata(path)
        .map_err(|e| PemError(format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            PemError(format!(
                "{} is not a readable PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(PemError(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    std::fs::metadata(path)
        .map_err(|e| PemError(format!("cannot read {}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        PemError(format!(
            "{} holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        ))
    })
}
