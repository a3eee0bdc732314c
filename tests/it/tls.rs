//! TLS: cargo over HTTPS/HTTP2 with a corporate CA, certificate rotation, mTLS, upstreams
//! trusted through an extra CA, and clear start-up errors for broken TLS files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::support::pki::{Leaf, Pki};
use crate::support::*;

/// One HTTPS connection kept open, speaking HTTP/1.1.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    peer: CertificateDer<'static>,
}

async fn connect(port: u16, cfg: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(Conn { sender, peer })
}

impl Conn {
    async fn get(&mut self, path: &str) -> Result<u16, String> {
        let req = http::Request::get(path)
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        // Wait until the connection can take the next request (the previous one is done).
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // Read to the end, so that the connection is free for the next request.
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// The HTTPS listener on a port of the system's choosing (see `Cratedock::tls_port`).
fn tls_section(pki: &Pki, extra: &str) -> String {
    format!(
        "\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    )
}

fn write_server(pki: &Pki, leaf: &Leaf) {
    leaf.write(&pki.path("server.pem"), &pki.path("server.key"));
}

struct Https {
    _up: FakeUpstream,
    pki: Pki,
    cd: Cratedock,
    port: u16,
    /// The certificate cratedock started with.
    first: Leaf,
}

async fn https_mirror(extra_tls: &str) -> Https {
    https_mirror_with("", extra_tls).await
}

/// [`https_mirror`] with `registry` lines in the mirror's section.
async fn https_mirror_with(registry: &str, extra_tls: &str) -> Https {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("a", "1.0.0").dep("b", "^1")));
    up.publish(build(CrateSpec::new("b", "1.0.0")));
    let pki = Pki::new();
    let first = pki.server();
    write_server(&pki, &first);
    let config = mirror_config(&up.index_url(), registry) + &tls_section(&pki, extra_tls);
    let cd = Cratedock::start(&config).await;
    let port = cd.tls_port.expect("an HTTPS listener");
    Https {
        _up: up,
        pki,
        cd,
        port,
        first,
    }
}

/// The outcome of a connection attempt that the server should refuse; a client left waiting
/// for 5 s counts as refused (with TLS 1.3 it learns of the refusal only when it reads).
async fn refused_within(
    attempt: impl std::future::Future<Output = Result<u16, String>>,
) -> Result<u16, String> {
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or(Err("no answer".to_owned()))
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_fetches_over_https_and_http2_with_the_corporate_ca() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("a", "1.0.0").dep("b", "^1")));
    up.publish(build(CrateSpec::new("b", "1.0.0")));
    let pki = Pki::new();
    write_server(&pki, &pki.server());
    let cd = Cratedock::start(&(mirror_config(&up.index_url(), "") + &tls_section(&pki, ""))).await;
    let port = cd.tls_port.expect("an HTTPS listener");
    let index = format!("https://localhost:{port}/crates-io/index/");
    let cainfo = format!("[http]\ncainfo = \"{}\"\n", pki.ca_file().display());
    let project = CargoProject::with_config(&index, &[("a", "1")], &cainfo);
    project.ok(&["generate-lockfile"]);
    project.ok(&["fetch"]);
    project.ok(&["build", "--offline"]);
    assert_eq!(up.hits("/dl/"), 2);

    // HTTP/2 was negotiated by ALPN and carried cargo's requests.
    assert!(
        cd.metric("tls_handshakes_total", "alpn=\"h2\",result=\"ok\"")
            .await
            >= 1.0
    );
    assert!(
        cd.metric("http_requests_by_version_total", "version=\"HTTP/2.0\"")
            .await
            >= 5.0
    );
    assert_eq!(
        cd.metric("tls_handshakes_total", "alpn=\"http/1.1\"").await,
        0.0
    );
    assert!(
        cd.metric("tls_certificate_not_after_timestamp_seconds", "")
            .await
            > 1.7e9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_ca_gets_cargos_certificate_error() {
    let Https { port, .. } = &https_mirror("").await;
    let index = format!("https://localhost:{port}/crates-io/index/");
    let project = CargoProject::new(&index, &[("a", "1")]);
    let out = project.cargo(&["generate-lockfile"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SSL certificate problem"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_for_new_connections_and_keeps_open_ones() {
    let Https {
        pki,
        cd,
        port,
        first,
        ..
    } = &https_mirror("reload_interval_ms = 600000").await;
    let port = *port;
    let mut open = connect(port, pki.client_config(None)).await.unwrap();
    assert_eq!(open.get("/health/live").await.unwrap(), 200);
    assert_eq!(open.peer, first.leaf_der());

    // A new key of another type (Ed25519) and certificate; SIGHUP loads them.
    let second = pki.leaf(
        "localhost",
        &["localhost", "127.0.0.1"],
        Some(&rcgen::PKCS_ED25519),
        false,
    );
    write_server(pki, &second);
    cd.signal("HUP");
    let cfg = pki.client_config(None);
    wait_for("the new certificate", || {
        let cfg = cfg.clone();
        let want = second.leaf_der();
        async move { connect(port, cfg).await.is_ok_and(|c| c.peer == want) }
    })
    .await;
    assert_eq!(
        open.get("/health/live").await.unwrap(),
        200,
        "the open connection was not cut"
    );
    assert_eq!(open.peer, first.leaf_der(), "it keeps its certificate");

    // A broken file is refused; the working certificate stays.
    std::fs::write(
        pki.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .unwrap();
    cd.signal("HUP");
    wait_for("the refusal", || async {
        cd.metric("tls_certificate_reloads_total", "result=\"error\"")
            .await
            >= 1.0
    })
    .await;
    let mut after = connect(port, pki.client_config(None)).await.unwrap();
    assert_eq!(after.peer, second.leaf_der());
    assert_eq!(after.get("/health/live").await.unwrap(), 200);
    assert!(
        cd.log().contains("new TLS certificate refused"),
        "{}",
        cd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_picked_up_without_a_signal() {
    let Https { pki, port, .. } = &https_mirror("reload_interval_ms = 100").await;
    let port = *port;
    let next = pki.leaf(
        "localhost",
        &["localhost", "127.0.0.1"],
        Some(&rcgen::PKCS_ECDSA_P384_SHA384),
        false,
    );
    write_server(pki, &next);
    let cfg = pki.client_config(None);
    wait_for("the polled certificate", || {
        let cfg = cfg.clone();
        let want = next.leaf_der();
        async move { connect(port, cfg).await.is_ok_and(|c| c.peer == want) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_refuse_anonymous_clients_and_map_principals() {
    let pki_for_paths = Pki::new();
    let ca = pki_for_paths.ca_file();
    let Https { pki, cd, port, .. } = &https_mirror(&format!(
        "client_auth = \"required\"\nclient_ca_file = \"{}\"\n\n[[server.tls.principals]]\nprincipal = \"build-farm\"\nsubject_cn = \"build-agent\"\n",
        ca.display()
    ))
    .await;
    // The server trusts `pki_for_paths` for clients; `pki` issued its own certificate.
    let agent = pki_for_paths.leaf("build-agent", &["agent-7.corp.example"], None, false);
    let server_trust = pki.client_config(Some(&agent));
    let port = *port;

    // Without a certificate: refused at the handshake.
    let anonymous = async {
        let mut c = connect(port, pki.client_config(None)).await?;
        c.get("/health/live").await
    };
    assert!(refused_within(anonymous).await.is_err());
    wait_for("the refused handshake", || async {
        cd.metric("tls_handshakes_total", "result=\"error\"").await >= 1.0
    })
    .await;

    // A certificate from another CA: refused too.
    let stranger = pki.leaf("build-agent", &[], None, false);
    let stranger_attempt = async {
        let mut c = connect(port, pki.client_config(Some(&stranger))).await?;
        c.get("/health/live").await
    };
    assert!(refused_within(stranger_attempt).await.is_err());

    // A valid certificate: let in, and mapped to its principal.
    let mut c = connect(port, server_trust).await.unwrap();
    assert_eq!(c.get("/crates-io/index/1/b").await.unwrap(), 200);
    wait_for("the principal in the log", || async {
        cd.log().contains("build-farm")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_agent_with_a_mapped_client_certificate_reads_without_a_token() {
    let clients = Pki::new();
    let Https { pki, cd, port, .. } = &https_mirror_with(
        "auth_required = true",
        &format!(
            "client_auth = \"optional\"\nclient_ca_file = \"{}\"\n\n[[server.tls.principals]]\nprincipal = \"build-farm\"\nsubject_cn = \"build-agent\"\n",
            clients.ca_file().display()
        ),
    )
    .await;
    // The principal names a team that may read the mirror.
    cd.admin(&["team", "add", "build-farm"]);
    cd.admin(&[
        "grant",
        "--team",
        "build-farm",
        "--permission",
        "read",
        "--registry",
        "crates-io",
    ]);
    let agent = clients.leaf("build-agent", &[], None, false);
    let mut c = connect(*port, pki.client_config(Some(&agent)))
        .await
        .unwrap();
    for path in [
        "/crates-io/index/config.json",
        "/crates-io/index/1/b",
        "/crates-io/api/v1/crates/b/1.0.0/download",
    ] {
        let got = c.get(path).await;
        assert_eq!(got, Ok(200), "{path}\n{}", cd.log());
    }
    // Without a certificate (and without a token): refused with cargo's login hint.
    let mut anonymous = connect(*port, pki.client_config(None)).await.unwrap();
    assert_eq!(anonymous.get("/crates-io/index/1/b").await.unwrap(), 401);
    // Another certificate of the same CA that no rule maps: no principal, no access.
    let other = clients.leaf("laptop", &[], None, false);
    let mut c = connect(*port, pki.client_config(Some(&other)))
        .await
        .unwrap();
    assert_eq!(c.get("/crates-io/index/1/b").await.unwrap(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_over_tls_is_trusted_through_the_extra_ca() {
    let pki = Pki::new();
    let up = FakeUpstream::start_tls(pki.server_config(&pki.server(), true)).await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    pki.leaf("cratedock", &[], None, false)
        .write(&pki.path("client.pem"), &pki.path("client.key"));
    let ca = pki.ca_file();
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let upstream = up.index_url();
    let config = format!(
        "[registries.crates-io]\nkind = \"mirror\"\nupstream = \"{upstream}\"\nretries = 0\n\
         ca_bundle = \"{}\"\nsystem_roots = false\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n\
         [registries.no-ca]\nkind = \"mirror\"\nupstream = \"{upstream}\"\nretries = 0\n\
         [registries.no-client-cert]\nkind = \"mirror\"\nupstream = \"{upstream}\"\nretries = 0\nca_bundle = \"{}\"\n",
        ca.display(),
        cert.display(),
        key.display(),
        ca.display()
    );
    let cd = Cratedock::start(&config).await;

    let r = cd.get("/no-ca/index/se/rd/serde").await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("certificate") && text.contains("no-ca"),
        "{text}"
    );
    let r = cd.get("/no-client-cert/index/se/rd/serde").await;
    assert_eq!(r.status(), 502, "the upstream wants a client certificate");

    let project = CargoProject::new(&cd.index_url(), &[("serde", "1")]);
    project.ok(&["generate-lockfile"]);
    project.ok(&["fetch"]);
    assert_eq!(up.hits("/dl/"), 1);
}

/// Runs `cratedock serve` expecting it to refuse to start; returns its stderr.
fn refused_start(config: &str, dir: &Path) -> String {
    let path = dir.join("cratedock.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cratedock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "it started");
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cratedock started with a broken TLS configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn broken_tls_inputs_stop_the_start_naming_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let good = pki.server();
    let other = pki.server();
    let expired = pki.leaf("localhost", &["localhost"], None, true);
    let put = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cases = [
        (
            "missing.pem".to_owned(),
            put("k1.pem", &good.key_pem),
            "cannot read",
        ),
        (
            put("garbage.pem", "hello, not PEM\n"),
            put("k2.pem", &good.key_pem),
            "holds no PEM certificate",
        ),
        (
            put("good.pem", &good.chain_pem),
            put("other.key", &other.key_pem),
            "does not match",
        ),
        (
            put("expired.pem", &expired.chain_pem),
            put("k3.pem", &expired.key_pem),
            "expired",
        ),
        (
            put("good2.pem", &good.chain_pem),
            put("nokey.pem", "no key here\n"),
            "no readable PEM private key",
        ),
    ];
    for (cert, key, words) in cases {
        let cert = if cert.starts_with('/') {
            cert
        } else {
            dir.path().join(&cert).display().to_string()
        };
        let config = format!(
            "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        );
        let stderr = refused_start(&config, dir.path());
        let named = [&cert, &key]
            .iter()
            .any(|f| stderr.contains(Path::new(f).file_name().unwrap().to_str().unwrap()));
        assert!(stderr.contains(words) && named, "{words}: {stderr}");
    }
}
