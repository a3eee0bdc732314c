//! A fake upstream sparse registry on loopback: serves generated crates, counts requests, and
//! misbehaves on demand (status codes, delays, wrong bytes, cut-off bodies, HTML pages, down).
//! It also serves any other file registered with [`FakeUpstream::serve_file`] (e.g. an archive
//! of an advisory database), with validators for conditional requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::registry::{Published, index_path, sha256_hex};

/// What to break, and where.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    None,
    Status(u16),
    Delay(Duration),
    /// Crate files: serve other bytes than the index's checksum names.
    WrongBytes,
    /// Announce the full length, send half, then drop the connection.
    CutOff,
    /// A 200 with an HTML error page instead of the file.
    Html200,
    /// A 200 with an empty body.
    Empty200,
    /// Crate files: send the first half, then wait for the gate before sending the rest.
    HalfThenWait(Gate),
}

/// Holds back a [`Fault::HalfThenWait`] body until the test opens it.
#[derive(Clone, Debug)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

impl Gate {
    pub fn open(&self) {
        self.0.add_permits(1_000);
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Index,
    Crates,
    All,
}

#[derive(Default)]
struct State_ {
    /// Lower-case name → published versions, in publish order.
    crates: BTreeMap<String, Vec<Published>>,
    fault: Option<(Fault, Target)>,
    hits: HashMap<String, usize>,
    cache_control: Option<String>,
    /// Requests that carried an `Authorization` header, by path.
    authorized: HashMap<String, usize>,
    /// Base URL written into `dl` instead of this server's own.
    dl_base: Option<String>,
    /// When each request arrived, by path.
    arrivals: HashMap<String, Vec<Instant>>,
    /// The next requests for paths starting with this prefix fail: how many are left, with
    /// which status and `Retry-After` (seconds).
    fail_next: Option<FailNext>,
    /// Other files served at their paths (see [`FakeUpstream::serve_file`]).
    files: HashMap<String, ServedFile>,
    /// The `Last-Modified` of the latest registration, in seconds since the epoch.
    last_modified: u64,
}

/// A file registered with [`FakeUpstream::serve_file`].
struct ServedFile {
    bytes: Vec<u8>,
    /// Its `Last-Modified`.
    modified: SystemTime,
}

struct FailNext {
    prefix: String,
    left: usize,
    status: u16,
    retry_after: Option<u64>,
}

type Shared = Arc<Mutex<State_>>;

pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub base: Arc<str>,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        Self::start_inner(None, 0).await
    }

    /// Serves on a given loopback port (0: any); used by `examples/bench_registry.rs`.
    #[allow(dead_code)]
    pub async fn start_on(port: u16) -> Self {
        Self::start_inner(None, port).await
    }

    /// Serves over TLS with `tls` (as `https://localhost:PORT`).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(Some(tls), 0).await
    }

    async fn start_inner(tls: Option<Arc<rustls::ServerConfig>>, port: u16) -> Self {
        let state: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let base: Arc<str> = match tls {
            Some(_) => format!("https://localhost:{}", addr.port()).into(),
            None => format!("http://{addr}").into(),
        };
        let app = Router::new()
            .route("/index/config.json", get(config_json))
            .route("/index/{*path}", get(index_file))
            .route("/dl/{name}/{file}", get(download))
            .fallback(served_file)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                record_auth,
            ))
            .with_state((state.clone(), base.clone()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let handle = match tls {
            None => tokio::spawn(async move {
                // Like a real registry's servers: no Nagle delay on responses.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            }),
            Some(cfg) => tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let _ = stream.set_nodelay(true);
                            let (acceptor, app) = (acceptor.clone(), app.clone());
                            tokio::spawn(async move {
                                // A refused handshake (no client certificate) just ends here.
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    let service = hyper_util::service::TowerToHyperService::new(app);
                                    let _ = hyper_util::server::conn::auto::Builder::new(
                                        hyper_util::rt::TokioExecutor::new(),
                                    )
                                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                    .await;
                                }
                            });
                        }
                        _ = &mut rx => break,
                    }
                }
            }),
        };
        Self {
            base,
            state,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// The sparse index URL of this upstream (without `sparse+`).
    pub fn index_url(&self) -> String {
        format!("{}/index/", self.base)
    }

    pub fn publish(&self, p: Published) {
        let mut s = self.state.lock().unwrap();
        s.crates
            .entry(p.spec.name.to_ascii_lowercase())
            .or_default()
            .push(p);
    }

    /// Serves `bytes` at `path` (e.g. `/advisory-db.tar.gz`) from now on, replacing what was
    /// served there: with an `ETag` (the quoted SHA-256 of the bytes) and a `Last-Modified`
    /// of now, and always later than that of every earlier registration; `If-None-Match` (or,
    /// without it, `If-Modified-Since`) that still matches gets a 304. Requests count in
    /// [`Self::hits`].
    pub fn serve_file(&self, path: &str, bytes: Vec<u8>) {
        assert!(path.starts_with('/'), "a path from the root: {path}");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut s = self.state.lock().unwrap();
        // HTTP dates have whole seconds: a replacement within the same second is a second on.
        s.last_modified = now.max(s.last_modified + 1);
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(s.last_modified);
        s.files
            .insert(path.to_owned(), ServedFile { bytes, modified });
    }

    pub fn set_fault(&self, fault: Fault, target: Target) {
        self.state.lock().unwrap().fault = (fault != Fault::None).then_some((fault, target));
    }

    /// Makes the next `n` requests for paths starting with `prefix` fail with `status`, with a
    /// `Retry-After` of `retry_after` seconds when given; later ones are served.
    pub fn fail_next(&self, prefix: &str, n: usize, status: u16, retry_after: Option<u64>) {
        self.state.lock().unwrap().fail_next = Some(FailNext {
            prefix: prefix.to_owned(),
            left: n,
            status,
            retry_after,
        });
    }

    /// When the requests for paths starting with `prefix` arrived, in order.
    pub fn arrivals(&self, prefix: &str) -> Vec<Instant> {
        let s = self.state.lock().unwrap();
        let mut all: Vec<Instant> = s
            .arrivals
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        all.sort();
        all
    }

    /// Makes `dl` name another base URL (e.g. `http://localhost:PORT` for another origin).
    pub fn set_dl_base(&self, base: &str) {
        self.state.lock().unwrap().dl_base = Some(base.to_owned());
    }

    /// Requests for paths starting with `prefix` that carried an `Authorization` header.
    pub fn authorized(&self, prefix: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.authorized
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        self.state.lock().unwrap().cache_control = value.map(str::to_owned);
    }

    /// Requests seen for paths starting with `prefix` (e.g. `/dl/`, `/index/se/rd/serde`).
    pub fn hits(&self, prefix: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.hits
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// Stops serving: later connections are refused.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }
}

type Ctx = (Shared, Arc<str>);

async fn record_auth(
    State(state): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.headers().contains_key(header::AUTHORIZATION) {
        *state
            .lock()
            .unwrap()
            .authorized
            .entry(req.uri().path().to_owned())
            .or_default() += 1;
    }
    next.run(req).await
}

/// Counts the request; answers it with a failure when [`FakeUpstream::fail_next`] says so.
fn count(state: &Shared, path: &str) -> Option<Response> {
    let mut s = state.lock().unwrap();
    *s.hits.entry(path.to_owned()).or_default() += 1;
    s.arrivals
        .entry(path.to_owned())
        .or_default()
        .push(Instant::now());
    let fail = s
        .fail_next
        .as_mut()
        .filter(|f| f.left > 0 && path.starts_with(&f.prefix))?;
    fail.left -= 1;
    let mut resp = (
        StatusCode::from_u16(fail.status).unwrap(),
        "failing on purpose",
    )
        .into_response();
    if let Some(secs) = fail.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
    }
    Some(resp)
}

fn fault_for(state: &Shared, target: Target) -> Fault {
    match &state.lock().unwrap().fault {
        Some((f, t)) if *t == target || *t == Target::All => f.clone(),
        _ => Fault::None,
    }
}

/// Applies a fault that does not depend on the body; returns a response when it answers.
async fn common_fault(fault: &Fault) -> Option<Response> {
    match fault {
        Fault::Status(code) => Some(
            (
                StatusCode::from_u16(*code).unwrap(),
                "upstream is having a bad day",
            )
                .into_response(),
        ),
        Fault::Delay(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        Fault::Html200 => Some(
            (
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>Service maintenance</h1></body></html>",
            )
                .into_response(),
        ),
        Fault::Empty200 => Some(StatusCode::OK.into_response()),
        _ => None,
    }
}

fn cut_off(bytes: Vec<u8>) -> Response {
    let len = bytes.len();
    let half = bytes[..len / 2].to_vec();
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
        Err(std::io::Error::other("connection dropped on purpose")),
    ]);
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn config_json(State((state, base)): State<Ctx>) -> Response {
    if let Some(r) = count(&state, "/index/config.json") {
        return r;
    }
    if let Some(r) = common_fault(&fault_for(&state, Target::Index)).await {
        return r;
    }
    let dl_base = state.lock().unwrap().dl_base.clone();
    let base = dl_base.as_deref().unwrap_or(&base);
    let body =
        serde_json::json!({ "dl": format!("{base}/dl/{{crate}}/{{crate}}-{{version}}.crate") });
    body.to_string().into_response()
}

async fn index_file(
    State((state, _)): State<Ctx>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = count(&state, &format!("/index/{path}")) {
        return r;
    }
    let fault = fault_for(&state, Target::Index);
    if let Some(r) = common_fault(&fault).await {
        return r;
    }
    let (body, cache_control) = {
        let s = state.lock().unwrap();
        let name = path.rsplit('/').next().unwrap_or_default();
        let found = s
            .crates
            .get(name)
            .filter(|_| index_path(name) == path)
            .map(|versions| {
                versions
                    .iter()
                    .map(|p| format!("{}\n", p.line))
                    .collect::<String>()
            });
        (found, s.cache_control.clone())
    };
    let Some(body) = body else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    if fault == Fault::CutOff {
        return cut_off(body.into_bytes());
    }
    let etag = format!("\"{}\"", &sha256_hex(body.as_bytes())[..16]);
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    resp.headers_mut()
        .insert(header::ETAG, etag.parse().unwrap());
    if let Some(cc) = cache_control {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    resp
}

async fn download(
    State((state, _)): State<Ctx>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    if let Some(r) = count(&state, &format!("/dl/{name}/{file}")) {
        return r;
    }
    let fault = fault_for(&state, Target::Crates);
    if let Some(r) = common_fault(&fault).await {
        return r;
    }
    let tarball = {
        let s = state.lock().unwrap();
        s.crates
            .get(&name.to_ascii_lowercase())
            .and_then(|versions| {
                versions
                    .iter()
                    .find(|p| format!("{}-{}.crate", p.spec.name, p.spec.version) == file)
                    .map(|p| p.tarball.clone())
            })
    };
    let Some(mut tarball) = tarball else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    match fault {
        Fault::WrongBytes => {
            let last = tarball.len() - 1;
            tarball[last] ^= 0xff;
            tarball.into_response()
        }
        Fault::CutOff => cut_off(tarball),
        Fault::HalfThenWait(gate) => {
            let len = tarball.len();
            let rest = tarball.split_off(len / 2);
            let first =
                futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(tarball))]);
            let second = futures_util::stream::once(async move {
                let _ = gate.0.acquire().await;
                Ok(bytes::Bytes::from(rest))
            });
            Response::builder()
                .header(header::CONTENT_LENGTH, len)
                .body(Body::from_stream(futures_util::StreamExt::chain(
                    first, second,
                )))
                .unwrap()
        }
        _ => ([(header::CONTENT_TYPE, "application/gzip")], tarball).into_response(),
    }
}

/// A file registered with [`FakeUpstream::serve_file`]; 404 for any other unrouted path (not
/// counted, as before files could be registered).
async fn served_file(State((state, _)): State<Ctx>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    if !state.lock().unwrap().files.contains_key(&path) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Some(r) = count(&state, &path) {
        return r;
    }
    let found = state
        .lock()
        .unwrap()
        .files
        .get(&path)
        .map(|f| (f.bytes.clone(), f.modified));
    let Some((bytes, modified)) = found else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    let unchanged = match header_text(&headers, header::IF_NONE_MATCH) {
        Some(tags) => tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag),
        None => header_text(&headers, header::IF_MODIFIED_SINCE)
            .and_then(|since| httpdate::parse_http_date(since).ok())
            .is_some_and(|since| modified <= since),
    };
    let mut resp = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
    };
    resp.headers_mut()
        .insert(header::ETAG, etag.parse().unwrap());
    resp.headers_mut().insert(
        header::LAST_MODIFIED,
        httpdate::fmt_http_date(modified).parse().unwrap(),
    );
    resp
}

/// A request header's value as text, when it is there and is text.
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name)?.to_str().ok()
}
