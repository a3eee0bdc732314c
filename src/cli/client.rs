//! The admin API client: JSON over HTTP(S) with the admin token, cargo-shaped errors turned
//! into readable ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::auth::PlainToken;

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: PlainToken,
}

/// The admin token, from the first of: `--token-file`, `CRATEDOCK_TOKEN`,
/// `CRATEDOCK_TOKEN_FILE`.
fn read_token(flag: Option<&Path>) -> anyhow::Result<PlainToken> {
    let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let from_file = |f: &Path| -> anyhow::Result<(String, String)> {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the token file {}", f.display()))?;
        Ok((text, f.display().to_string()))
    };
    let (text, from) = match (flag, env("CRATEDOCK_TOKEN"), env("CRATEDOCK_TOKEN_FILE")) {
        (Some(f), _, _) => from_file(f)?,
        (None, Some(t), _) => (t, "CRATEDOCK_TOKEN".to_owned()),
        (None, None, Some(f)) => from_file(Path::new(&f))?,
        (None, None, None) => anyhow::bail!(
            "no admin token: give --token-file FILE (the first one is DATA_DIR/admin-token), or set CRATEDOCK_TOKEN or CRATEDOCK_TOKEN_FILE"
        ),
    };
    PlainToken::parse(&text)
        .with_context(|| format!("{from} does not hold a cratedock token (`cratedock_...`)"))
}

/// What a refusal says: cargo's `errors[0].detail`, else the start of the body.
fn detail_of(value: &Value, bytes: &[u8]) -> String {
    value["errors"][0]["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(200).collect())
}

impl Client {
    pub(super) fn new(
        url: &str,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let token = read_token(token_file)?;
        let mut roots = crate::system_roots();
        if let Some(ca) = ca_file {
            for cert in crate::net::pem::read_certs(ca)? {
                roots
                    .add(cert)
                    .context("the CA file holds an unusable certificate")?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("cratedock-admin/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method.clone(), path);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b)?);
        }
        match self.exchange(req).await? {
            Ok(value) => Ok(value),
            Err((code, detail)) => {
                // As `404 Not Found`, not a bare number.
                let status = reqwest::StatusCode::from_u16(code)
                    .map_or_else(|_| code.to_string(), |s| s.to_string());
                anyhow::bail!("{method} {path}: {status}: {detail}")
            }
        }
    }

    /// A request to `path` with the admin token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token.expose()))
    }

    /// Sends `req`: the JSON answer, or a refusal's status and detail.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<Result<Value, (u16, String)>> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach cratedock at {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(value));
        }
        Ok(Err((status.as_u16(), detail_of(&value, &bytes))))
    }

    /// `cargo publish`'s request: the framed body to `PUT {registry}/api/v1/crates/new`. A
    /// refusal is `Ok(Err((status, detail)))`, so the caller can tell "already there" apart.
    pub(super) async fn publish(
        &self,
        registry: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Result<Value, (u16, String)>> {
        let path = format!("/{registry}/api/v1/crates/new");
        let req = self
            .request(reqwest::Method::PUT, &path)
            .header("content-type", "application/octet-stream")
            .header("accept", "application/json")
            .body(body);
        self.exchange(req).await
    }

    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(super) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub(super) async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub(super) async fn put(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PUT, path, None).await
    }

    pub(super) async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// The server's base URL.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// A file served at `path` (an index file, a crate file): its bytes, or `None` for 404.
    pub(super) async fn get_bytes(&self, path: &str) -> anyhow::Result<Option<bytes::Bytes>> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach cratedock at {}", self.base))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            anyhow::bail!("GET {path}: {status}: {}", detail_of(&value, &bytes));
        }
        Ok(Some(bytes))
    }

    /// `PUT` of raw bytes with extra headers; the JSON answer.
    pub(super) async fn put_bytes(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .request(reqwest::Method::PUT, path)
            .header("content-type", "application/octet-stream")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match self.exchange(req).await? {
            Ok(v) => Ok(v),
            Err((code, detail)) => anyhow::bail!("PUT {path}: {code}: {detail}"),
        }
    }

    pub(super) async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

/// How the CLI reaches a running server's admin API.
#[derive(clap::Args)]
pub(super) struct Connection {
    /// Base URL of the cratedock server.
    #[arg(
        long,
        env = "CRATEDOCK_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// File holding an admin token (e.g. DATA_DIR/admin-token). Without it: the token in
    /// CRATEDOCK_TOKEN, else the file named by CRATEDOCK_TOKEN_FILE.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// PEM CA bundle to trust for an https:// URL, besides the system's roots.
    #[arg(long, env = "CRATEDOCK_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

impl Connection {
    /// Runs `work` with a client of the admin API on a one-thread runtime; prints what it
    /// returns.
    pub(super) fn run<F, Fut>(&self, work: F) -> anyhow::Result<()>
    where
        F: FnOnce(Client, bool) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<String>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = Client::new(
                &self.url,
                self.token_file.as_deref(),
                self.ca_file.as_deref(),
            )?;
            let out = work(client, self.json).await?;
            print!("{out}");
            Ok(())
        })
    }
}
