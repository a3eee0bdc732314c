//! Transport: the listeners, plain HTTP and HTTPS side by side, HTTP/1.1 and HTTP/2 on both
//! (ALPN on HTTPS; prior knowledge or the `Upgrade: h2c` handshake on plain, see [`h2c`]),
//! `TCP_NODELAY` on every accepted socket, TLS termination ([`tls`]), PEM files ([`pem`]) and a
//! graceful shutdown shared by both listeners.
//!
//! The rule this module keeps: it knows connections, not routes. Every connection is served
//! the router it is handed, with a [`ConnInfo`] in each request, so every route gets TLS and
//! client identity for free; on shutdown it reports not-ready while it goes on serving for the
//! configured delay, then stops accepting and lets in-flight requests finish within the grace
//! period; a connection on which no request arrives for the idle timeout is closed gracefully.

mod deadline;
pub(crate) mod h2c;
#[cfg(test)]
mod h2c_props;
pub mod pem;
mod tls;

pub use tls::{TlsError, TlsServer};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use deadline::FirstBytes;
use h2c::Opening;

/// What the listener knows about a connection; every request on it carries a copy.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub tls: bool,
    /// The client's address.
    pub peer: Option<std::net::SocketAddr>,
    /// The principal of a verified client certificate, when a rule maps it.
    pub principal: Option<Arc<str>>,
}

pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<(TcpListener, Arc<TlsServer>)>,
}

/// Whether the server takes traffic: set once listening, cleared when shutdown begins.
#[derive(Debug, Default)]
pub struct Readiness(std::sync::atomic::AtomicBool);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, ready: bool) {
        self.0.store(ready, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What [`serve`] needs besides its listeners.
pub struct Serving {
    pub router: axum::Router,
    pub server: ServerConfig,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

type Builder = Arc<auto::Builder<TokioExecutor>>;

async fn accept(listener: &TcpListener) -> Option<(TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok((stream, peer)) => {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            Some((stream, peer))
        }
        Err(e) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// What every connection watches: the server's stop signal, and its own idleness.
#[derive(Clone)]
struct Watch {
    /// Turns true when the server stops; the connection then ends gracefully.
    stop: tokio::sync::watch::Receiver<bool>,
    /// Held by every open connection; the drain waits until none is left.
    open: tokio::sync::mpsc::Sender<()>,
    idle_timeout: Duration,
}

/// Milliseconds since the process started, for a connection's last-request clock.
fn uptime_ms(started: std::time::Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

async fn serve_connection<I>(
    io: I,
    info: ConnInfo,
    router: axum::Router,
    builder: Builder,
    watch: Watch,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Watch {
        mut stop,
        open: _open,
        idle_timeout,
    } = watch;
    // When the connection last received a request (HTTP/2 clients answer pings, so only
    // requests count as activity).
    let started = std::time::Instant::now();
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = last.clone();
    let service = router.map_request(move |mut req: http::Request<Incoming>| {
        seen.store(uptime_ms(started), std::sync::atomic::Ordering::Relaxed);
        req.extensions_mut().insert(info.clone());
        req
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    tokio::pin!(conn);
    let mut idle_check = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(10)));
    let mut ending = false;
    let idle_ms = idle_timeout.as_millis() as u64;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            changed = stop.changed(), if !ending => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                    ending = true;
                }
            }
            _ = idle_check.tick(), if !ending => {
                let since = uptime_ms(started)
                    .saturating_sub(last.load(std::sync::atomic::Ordering::Relaxed));
                if since >= idle_ms {
                    tracing::debug!(idle_ms = since, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    ending = true;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The largest HTTP/1.1 request head (request line and headers) accepted.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves `router` on the listeners until `shutdown` completes and the connections drained
/// (or the grace period ran out). Returns the end of the grace period, for the caller's own
/// clean-up.
pub async fn serve(
    serving: Serving,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<tokio::time::Instant> {
    let Serving {
        router,
        server: server_cfg,
        metrics,
        readiness,
    } = serving;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Limits on what a client may send, stated here rather than left to defaults: a request
    // head of at most 64 KiB on HTTP/1.1 (431 beyond), 16 KiB of headers on HTTP/2, and HTTP/2
    // streams reset by the client (rapid reset) or by errors bounded before a GOAWAY.
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(MAX_REQUEST_HEAD)
        .header_read_timeout(Duration::from_millis(server_cfg.header_read_timeout_ms));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(16 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder: Builder = Arc::new(builder);
    // Each connection holds a permit; when none is left, accepting waits (backpressure).
    let permits = Arc::new(tokio::sync::Semaphore::new(server_cfg.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let watch = Watch {
        stop: stop_rx.clone(),
        open: open_tx,
        idle_timeout: Duration::from_millis(server_cfg.idle_timeout_ms),
    };

    let Listeners { plain, tls } = listeners;
    if let Some((listener, server)) = &tls {
        tokio::spawn(server.clone().watch(stop_rx.clone()));
        tracing::info!(addr = %listener.local_addr()?, "listening (HTTPS)");
    }
    readiness.set(true);
    tracing::info!(addr = %plain.local_addr()?, "listening (HTTP)");

    let header_timeout = Duration::from_millis(server_cfg.header_read_timeout_ms);
    let send_timeout = Duration::from_millis(server_cfg.send_timeout_ms);
    // On the signal: not ready at once, still serving for the delay (load balancers see the
    // 503 and stop sending new clients), then the listeners close and the drain begins.
    let delay = Duration::from_millis(server_cfg.shutdown_delay_ms);
    let not_ready = readiness.clone();
    let shutdown = async move {
        shutdown.await;
        not_ready.set(false);
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "shutting down: reporting not ready while still serving"
            );
            tokio::time::sleep(delay).await;
        }
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let tls_accept = async {
            match &tls {
                Some((listener, server)) => (accept(listener).await, server.clone()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            stream = accept(&plain) => {
                let Some((stream, peer)) = stream else { continue };
                let info = ConnInfo { tls: false, peer: Some(peer), principal: None };
                let (router, builder, watcher) = (router.clone(), builder.clone(), watch.clone());
                let stream = FirstBytes::within(stream, header_timeout).sending_within(send_timeout);
                if !server_cfg.h2c_upgrade {
                    tokio::spawn(serve_connection(stream, info, router, builder, watcher, permit));
                    continue;
                }
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(header_timeout, h2c::open(stream)).await {
                        Ok(Ok((stream, opening))) => {
                            let opening = match opening {
                                Opening::Upgraded => "h2c-upgrade",
                                Opening::AsItCame => "as-is",
                            };
                            metrics.plain_connections.with_label_values(&[opening]).inc();
                            serve_connection(stream, info, router, builder, watcher, permit).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "connection failed while opening"),
                        Err(_) => tracing::debug!("no request head within the header read timeout"),
                    }
                });
            }
            (stream, server) = tls_accept => {
                let Some((stream, addr)) = stream else { continue };
                let (router, builder, watcher) = (router.clone(), builder.clone(), watch.clone());
                tokio::spawn(async move {
                    match server.accept(stream).await {
                        Ok((stream, peer)) => {
                            let stream = FirstBytes::within(stream, header_timeout).sending_within(send_timeout);
                            let info = ConnInfo { tls: true, peer: Some(addr), principal: peer.principal };
                            serve_connection(stream, info, router, builder, watcher, permit).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }

    drop(plain);
    drop(tls);
    let _ = stop_tx.send(true);
    readiness.set(false);
    let grace = Duration::from_millis(server_cfg.shutdown_grace_ms);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining connections"
    );
    let deadline = tokio::time::Instant::now() + grace;
    // Every connection holds a sender; when the last one ends, `recv` answers `None`.
    drop(watch);
    match tokio::time::timeout_at(deadline, open_rx.recv()).await {
        Ok(_) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    Ok(deadline)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
