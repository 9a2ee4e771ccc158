//! `[http]`: the JSON status API (`/api/v1/…`) and `/metrics` (Prometheus
//! text), on axum over the hyper already in the tree. Looking only: the CLI
//! is how things change. **It never shows content**: ids, times, addresses,
//! organizations and states; no Subject, body, signer's words, remote
//! diagnostic or advisory text of an announcement, in any answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::context::Relays;

mod api;
mod metrics;

/// What the handlers share.
pub(crate) struct Web {
    relays: Relays,
    token: crate::secret::Secret,
    metrics_open: bool,
    /// Answers computed at once: each reads the spool every list shares
    /// with the mail path, so a burst of requests cannot hold it up.
    busy: tokio::sync::Semaphore,
}

/// The routes, with the bearer-token check and the strict headers.
pub(crate) fn router(
    relays: Relays,
    config: &HttpConfig,
    token: crate::secret::Secret,
) -> axum::Router {
    let web = Arc::new(Web {
        relays,
        token,
        metrics_open: config.metrics_open,
        busy: tokio::sync::Semaphore::new(2),
    });
    axum::Router::new()
        .route("/", get(page))
        .route("/static/app.js", get(script))
        .route("/static/app.css", get(style))
        .route("/api/v1/lists", get(api::lists))
        .route("/api/v1/lists/{list}/embargoes/{id}", get(api::embargo))
        .route("/api/v1/lists/{list}/audit", get(api::audit))
        .route("/metrics", get(metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(web.clone(), guard))
        .with_state(web)
}

/// Where the status API listens.
pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Connections served at once; beyond, a new one is closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A request's header must arrive within this (an idle keep-alive
/// connection is closed after it too).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// Serves the routes on `listener` until `shutdown`: hyper's HTTP/1.1 with
/// a header timeout, a bounded read buffer and at most `MAX_CONNECTIONS`
/// connections (axum's own `serve` sets none of these).
pub(crate) async fn serve(
    listener: Listener,
    relays: Relays,
    config: HttpConfig,
    token: crate::secret::Secret,
    shutdown: CancellationToken,
) {
    let app = router(relays, &config, token);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = accept(&listener) => a,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(error = %e, "the status API could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed unanswered.
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match io {
                Stream::Tcp(s) => connection(s, service, stop).await,
                Stream::Unix(s) => connection(s, service, stop).await,
            }
        });
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Stream> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
    }
}

/// One connection, to its end or to `shutdown` (then gracefully).
async fn connection<S>(
    stream: S,
    service: hyper_util::service::TowerToHyperService<axum::Router>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Every answer: the token first (constant time; `/metrics` may be open),
/// then headers that keep a browser from caching, sniffing, framing or
/// running anything not ours.
async fn guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    // The page's shell and assets hold no data (the data come from the
    // API, with the token): they need none.
    let path = request.uri().path();
    let open = (web.metrics_open && path == "/metrics")
        || matches!(path, "/" | "/static/app.js" | "/static/app.css");
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes)
        .unwrap_or_default();
    let token = web.token.expose();
    let good = given.len() == token.len() && openssl::memcmp::eq(given, token);
    let mut response = if open || good {
        match web.busy.acquire().await {
            Ok(_permit) => next.run(request).await,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    } else {
        let mut r = (StatusCode::UNAUTHORIZED, "a bearer token is needed\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"embargo-relay\""),
        );
        r
    };
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The status page's shell: it shows what `app.js` fetches from the API.
async fn page() -> Response {
    asset(include_str!("page/index.html"), "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(
        include_str!("page/app.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn style() -> Response {
    asset(include_str!("page/app.css"), "text/css; charset=utf-8")
}

/// A file compiled into the binary, with its type.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A spool read for an answer, off the runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the status API could not read the spool");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the spool cannot be read now\n",
            )
                .into_response())
        }
        Err(_) => Err((StatusCode::INTERNAL_SERVER_ERROR, "failed\n").into_response()),
    }
}

/// The relay serving `list`, if any.
fn relay_of(web: &Web, list: &str) -> Option<Arc<crate::context::Relay>> {
    web.relays
        .get()
        .into_iter()
        .find(|r| r.config().list_address.eq_ignore_ascii_case(list))
}

/// `GET /api/v1/lists/{list}/embargoes/{id}`'s path.
pub(crate) type EmbargoPath = Path<(String, String)>;

/// A JSON answer.
pub(crate) fn json<T: serde::Serialize>(value: T) -> Response {
    Json(value).into_response()
}
