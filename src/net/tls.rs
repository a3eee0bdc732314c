//! TLS termination with rustls: certificate chain and key from PEM files, rotated without a
//! restart; client certificates verified against a CA and mapped to principals.
//!
//! The rules this module keeps: every broken TLS input is refused with an error naming the
//! file; a broken rotation never replaces a working certificate; only TLS 1.3 and 1.2, with
//! ALPN `h2` and `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, PrincipalRule, TlsConfig};
use crate::metrics::Metrics;

use super::pem::{PemError, read_certs, read_key};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn err(msg: String) -> TlsError {
    TlsError(msg)
}

impl From<PemError> for TlsError {
    fn from(e: PemError) -> Self {
        TlsError(e.to_string())
    }
}

/// When the leaf certificate stops being valid, as seconds since the epoch; an error when it
/// is not valid now.
fn check_validity(cert: &CertificateDer<'_>, path: &Path) -> Result<i64, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| {
        err(format!(
            "cannot parse the certificate in {}: {e}",
            path.display()
        ))
    })?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(err(format!(
            "the certificate in {} expired on {}",
            path.display(),
            validity.not_after
        )));
    }
    if validity.not_before > now {
        return Err(err(format!(
            "the certificate in {} is not valid before {}",
            path.display(),
            validity.not_before
        )));
    }
    Ok(validity.not_after.timestamp())
}

/// Loads and checks a certificate chain and its key: readable, unexpired, and matching.
pub(super) fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Arc<CertifiedKey>, i64), TlsError> {
    let chain = read_certs(cert_file)?;
    let not_after = check_validity(&chain[0], cert_file)?;
    let key = read_key(key_file)?;
    let signing_key = crate::crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| {
            err(format!(
                "the key in {} is not a usable RSA, ECDSA or Ed25519 key: {e}",
                key_file.display()
            ))
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        err(format!(
            "the key in {} does not match the certificate in {}",
            key_file.display(),
            cert_file.display()
        ))
    })?;
    Ok((Arc::new(certified), not_after))
}

/// Modification time and length of the two files, to notice a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

impl Stamp {
    fn of(paths: &[&Path]) -> Self {
        Stamp(
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .ok()
                        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
                })
                .collect(),
        )
    }
}

/// The certificate in use, swapped whole on rotation.
#[derive(Debug)]
struct RotatingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// What the connection's TLS session says about the client.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub alpn: Option<Vec<u8>>,
    pub principal: Option<Arc<str>>,
}

pub struct TlsServer {
    acceptor: TlsAcceptor,
    resolver: Arc<RotatingCert>,
    cert_file: PathBuf,
    key_file: PathBuf,
    principals: Vec<PrincipalRule>,
    /// The files as last seen, and whether that state was refused (so it is logged once).
    seen: Mutex<(Stamp, bool)>,
    metrics: Arc<Metrics>,
    pub handshake_timeout: Duration,
    pub reload_interval: Duration,
}

impl TlsServer {
    /// Builds the TLS side of the HTTPS listener; every broken input is an error naming its file.
    pub fn new(cfg: &TlsConfig, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let (key, not_after) = load_certified_key(&cfg.cert_file, &cfg.key_file)?;
        metrics.tls_in_use();
        metrics.tls_cert_not_after.set(not_after);
        let resolver = Arc::new(RotatingCert {
            current: RwLock::new(key),
        });
        let provider = crate::crypto_provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| err(format!("TLS setup: {e}")))?;
        let builder = match (cfg.client_auth, &cfg.client_ca_file) {
            (ClientAuth::Off, _) => builder.with_no_client_auth(),
            (mode, Some(ca_file)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca_file)? {
                    roots.add(cert).map_err(|e| {
                        err(format!(
                            "{} holds an unusable CA certificate: {e}",
                            ca_file.display()
                        ))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if mode == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| err(format!("client CA {}: {e}", ca_file.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            (_, None) => {
                return Err(err(
                    "server.tls.client_ca_file is needed when client_auth is not off".into(),
                ));
            }
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            principals: cfg.principals.clone(),
            seen: Mutex::new((Stamp::of(&[&cfg.cert_file, &cfg.key_file]), false)),
            metrics,
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
            reload_interval: Duration::from_millis(cfg.reload_interval_ms),
        })
    }

    /// Runs the TLS handshake of an accepted connection.
    pub async fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> Result<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Peer), String> {
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream));
        let stream = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.metrics
                    .tls_handshakes
                    .with_label_values(&["error", "none"])
                    .inc();
                return Err(e.to_string());
            }
            Err(_) => {
                self.metrics
                    .tls_handshakes
                    .with_label_values(&["timeout", "none"])
                    .inc();
                return Err("handshake timed out".into());
            }
        };
        let (_, session) = stream.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let alpn_label = match alpn.as_deref() {
            Some(b"h2") => "h2",
            Some(b"http/1.1") => "http/1.1",
            _ => "none",
        };
        self.metrics
            .tls_handshakes
            .with_label_values(&["ok", alpn_label])
            .inc();
        let principal = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| principal_of(leaf, &self.principals));
        Ok((stream, Peer { alpn, principal }))
    }

    /// Loads the certificate files again when they changed (or always, when `force`). A pair
    /// that does not load is refused with one log line and the current certificate stays.
    pub fn reload(&self, force: bool) {
        let stamp = Stamp::of(&[&self.cert_file, &self.key_file]);
        let mut seen = self.seen.lock().expect("stamp lock");
        if !force && seen.0 == stamp {
            return;
        }
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok((key, not_after)) => {
                *self.resolver.current.write().expect("certificate lock") = key;
                self.metrics.tls_cert_not_after.set(not_after);
                self.metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                *seen = (stamp, false);
            }
            Err(e) => {
                // Logged once per state of the files, not at every poll.
                if force || seen.0 != stamp || !seen.1 {
                    self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                    tracing::error!(error = %e, "new TLS certificate refused; the previous one stays in use");
                }
                *seen = (stamp, true);
            }
        }
    }

    /// Reloads on SIGHUP and whenever the files change, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(self.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = tick.tick() => self.reload(false),
                Some(()) = hangup => {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    self.reload(true);
                }
                _ = stop.changed() => return,
            }
        }
    }
}

/// The principal a verified client certificate maps to, by the first matching rule.
fn principal_of(leaf: &CertificateDer<'_>, rules: &[PrincipalRule]) -> Option<Arc<str>> {
    if rules.is_empty() {
        return None;
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let cns: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .collect();
    let mut sans: Vec<(bool, String)> = Vec::new(); // (is_dns, value)
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push((true, d.to_ascii_lowercase())),
                GeneralName::URI(u) => sans.push((false, (*u).to_owned())),
                GeneralName::RFC822Name(m) => sans.push((false, (*m).to_owned())),
                _ => {}
            }
        }
    }
    rules.iter().find_map(|rule| {
        let matched = if let Some(cn) = &rule.subject_cn {
            cns.iter().any(|c| c == cn)
        } else if let Some(want) = &rule.san {
            sans.iter()
                .any(|(is_dns, have)| match want.strip_prefix("*.") {
                    Some(suffix) if *is_dns => have
                        .strip_suffix(&suffix.to_ascii_lowercase())
                        .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                    _ => have.eq_ignore_ascii_case(want),
                })
        } else {
            false
        };
        matched.then(|| Arc::from(rule.principal.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|s| {
                let v = s.to_string().try_into().unwrap();
                if s.contains("://") {
                    rcgen::SanType::URI(v)
                } else {
                    rcgen::SanType::DnsName(v)
                }
            })
            .collect();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn rule(principal: &str, cn: Option<&str>, san: Option<&str>) -> PrincipalRule {
        PrincipalRule {
            principal: principal.into(),
            subject_cn: cn.map(Into::into),
            san: san.map(Into::into),
        }
    }

    #[test]
    fn principals_match_by_cn_or_san() {
        let rules = [
            rule("by-cn", Some("agent-1"), None),
            rule("by-wildcard", None, Some("*.ci.corp.example")),
            rule("by-uri", None, Some("spiffe://corp/agent")),
        ];
        let p = |c: &CertificateDer<'_>| principal_of(c, &rules).map(|p| p.to_string());
        assert_eq!(p(&cert("agent-1", &[])).as_deref(), Some("by-cn"));
        assert_eq!(
            p(&cert("x", &["b7.ci.corp.example"])).as_deref(),
            Some("by-wildcard")
        );
        assert_eq!(
            p(&cert("x", &["ci.corp.example"])),
            None,
            "the wildcard needs a label"
        );
        assert_eq!(p(&cert("x", &["evilci.corp.example"])), None);
        assert_eq!(
            p(&cert("x", &["spiffe://corp/agent"])).as_deref(),
            Some("by-uri")
        );
        assert_eq!(p(&cert("agent-2", &["other.example"])), None);
    }
}
