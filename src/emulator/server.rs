//! The HTTP side: the fault and statistics layer of the DSS API, the router with both API prefixes
//! and the admin API, the scheduler task, an HTTP/1.1 accept loop, and [`spawn`], which compiles the
//! configuration into its catalog and starts all of it.
//!
//! The accept loop is hand-written (rather than `axum::serve`) for one fault: a connection reset.
//! A handler marks its response with [`ResetConnection`], and the connection's service then
//! returns an error, on which hyper closes the connection without writing any response.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower::ServiceExt;

use super::{
    admin_api, api,
    catalog::Catalog,
    config::Config,
    error::Error,
    faults::{DropMode, Verdict},
    scenario_api,
    state::{AppState, lock},
    wire::{ApiError, ResetConnection, dropped, error_type, gateway_page, toggle_slash},
};

/// The documented API prefix, and the one the official Python client uses.
pub(crate) const PREFIXES: [&str; 2] = ["/public/api", "/dip/publicapi"];

/// Where the admin API lives, on whichever listener serves it.
const ADMIN_PREFIX: &str = "/__emulator";

/// How long shutdown waits for open connections to finish their current request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Request bodies above this size are refused (a job definition is a few hundred bytes).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The stats key of a request: method and canonical route template, without the API prefix.
fn route_key(method: &Method, matched: Option<&MatchedPath>) -> String {
    let Some(m) = matched else {
        return format!("{method} unmatched");
    };
    let path = PREFIXES
        .iter()
        .find_map(|p| m.as_str().strip_prefix(p))
        .unwrap_or(m.as_str());
    let known = |p: &str| api::ROUTES.contains(&p) || scenario_api::ROUTES.contains(&p);
    let canonical = if known(path) {
        path.to_owned()
    } else {
        let toggled = toggle_slash(path);
        if known(&toggled) { toggled } else { path.to_owned() }
    };
    format!("{method} {canonical}")
}

/// Counts the request, applies faults, and adds DSS's version headers.
async fn dss_layer(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_key(req.method(), req.extensions().get::<MatchedPath>());
    lock(&st.stats).request(&route, chrono::Utc::now().timestamp());
    let (latency, verdict) = {
        let mut f = lock(&st.faults);
        (f.latency_ms(&route), f.verdict(&route))
    };
    if latency > 0 {
        // Injected latency is the only waiting the emulator does inside a request.
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut resp = match verdict {
        Verdict::Pass => next.run(req).await,
        Verdict::Outage(mode) => dropped(mode),
        Verdict::Reset => dropped(DropMode::Reset),
        Verdict::RateLimited(secs) => {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                error_type::TOO_MANY_REQUESTS,
                format!("Too many requests, retry in {secs} s"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Verdict::Error(status) => match StatusCode::from_u16(status) {
            Ok(StatusCode::INTERNAL_SERVER_ERROR) | Err(_) => {
                ApiError::internal("Internal server error (injected by the emulator)").into_response()
            }
            Ok(s) => gateway_page(s),
        },
    };
    if resp.extensions().get::<ResetConnection>().is_none() {
        let bytes = axum::body::HttpBody::size_hint(resp.body()).lower();
        let mut stats = lock(&st.stats);
        stats.response(resp.status().as_u16());
        stats.response_bytes(&route, bytes);
        drop(stats);
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&st.config.instance.dss_version) {
            h.insert("DSS-Version", v);
        }
        h.insert("DSS-API-Version", HeaderValue::from_static("1"));
    }
    resp
}

/// Answers unknown paths and methods with a DSS-style JSON 404/405.
async fn fallback(State(st): State<Arc<AppState>>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if PREFIXES.iter().any(|p| path.starts_with(p)) {
        let mut stats = lock(&st.stats);
        stats.request(&format!("{method} unmatched"), chrono::Utc::now().timestamp());
        stats.response(404);
    }
    ApiError::not_found(format!("No API endpoint {method} {path}")).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        error_type::BAD_REQUEST,
        format!("Method {method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

/// The application of the DSS listener: the DSS API (jobs and scenarios) under both prefixes, and
/// the admin API too unless it has a listener of its own.
fn dss_app(state: Arc<AppState>, with_admin: bool) -> Router {
    let dss = api::router()
        .merge(scenario_api::router())
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), dss_layer));
    let router = Router::new()
        .nest(PREFIXES[0], dss.clone())
        .nest(PREFIXES[1], dss);
    let router = if with_admin {
        router.nest(ADMIN_PREFIX, admin_api::router())
    } else {
        router
    };
    router.fallback(fallback).with_state(state)
}

/// The application of a separate admin listener: the admin API only.
fn admin_app(state: Arc<AppState>) -> Router {
    Router::new()
        .nest(ADMIN_PREFIX, admin_api::router())
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::not_found(format!("No admin endpoint {method} {}", uri.path())).into_response()
        })
        .with_state(state)
}

/// Collapses leading slashes: a client configured with `http://host:port/` sends `//dip/...`.
fn normalize(req: &mut hyper::Request<hyper::body::Incoming>) {
    let path = req.uri().path();
    if !path.starts_with("//") {
        return;
    }
    let trimmed = format!("/{}", path.trim_start_matches('/'));
    let pq = match req.uri().query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Resolves once shutdown is requested (or the handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await of the caller.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by the emulator (injected fault)")]
struct Reset;

async fn serve_connection(stream: tokio::net::TcpStream, app: Router, mut shutdown: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            normalize(&mut req);
            let resp = match app.oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if resp.extensions().get::<ResetConnection>().is_some() {
                return Err(Reset);
            }
            Ok::<_, Reset>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(err) = res {
                tracing::debug!(error = &err as &dyn std::error::Error, "connection closed");
            }
        }
        _ = stopped(&mut shutdown) => {
            // Let the current request finish, then close (idle keep-alive connections close now).
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn accept_loop(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_connection(stream, app.clone(), shutdown.clone()));
                }
                Err(err) => {
                    // Typically out of file descriptors: back off briefly instead of spinning.
                    tracing::warn!(error = &err as &dyn std::error::Error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.abort_all();
    }
}

/// Moves the simulation forward at each due time, so queued jobs start when a slot frees up
/// even if nobody is polling.
async fn scheduler(st: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = {
            let (world, _) = st.world();
            world.next_event().map(|t| world.clock().instant(t))
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = st.wake.notified() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// Where an emulator listens.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// The DSS API's address (port 0 picks a free port).
    pub dss: SocketAddr,
    /// A separate address for the admin API, so that DSS API callers cannot reach it (a sandbox
    /// shared with others); `None` serves it on the DSS address, under `/__emulator/`.
    pub admin: Option<SocketAddr>,
}

/// A running emulator.
#[derive(Debug)]
pub struct Handle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// The base URL, e.g. `http://127.0.0.1:11200` (no trailing slash, no API prefix).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the emulator listens on (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the admin API, for [`super::admin::AdminClient`]: the admin listener's, or
    /// [`Handle::base_url`] when the admin API shares the DSS listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr.unwrap_or(self.addr))
    }

    /// The admin listener's address, when it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 5 s), and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        let _ = self.scheduler.await;
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    Ok((listener, local))
}

/// Starts an emulator on `listen` (port 0 picks a free port), with the admin API on the same
/// listener, in tokio tasks. See [`spawn_with`].
pub async fn spawn(config: Config, listen: SocketAddr) -> Result<Handle, Error> {
    spawn_with(
        config,
        Listen {
            dss: listen,
            admin: None,
        },
    )
    .await
}

/// Starts an emulator in tokio tasks. Dropping the returned handle also stops it. The
/// configuration is checked here, as it is compiled into the catalog: unknown recipe inputs,
/// cycles, duplicate keys and ids, unknown scenario outputs and bad rates are reported before
/// anything listens.
pub async fn spawn_with(config: Config, listen: Listen) -> Result<Handle, Error> {
    let catalog = Catalog::build(&config)?;
    let state = Arc::new(AppState::new(config, catalog));
    let (listener, addr) = bind(listen.dss).await?;
    let admin = match listen.admin {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let scheduler = tokio::spawn(scheduler(state.clone(), stopped.clone()));
    let mut servers = vec![tokio::spawn(accept_loop(
        listener,
        dss_app(state.clone(), admin.is_none()),
        stopped.clone(),
    ))];
    let admin_addr = admin.map(|(listener, admin_addr)| {
        servers.push(tokio::spawn(accept_loop(listener, admin_app(state), stopped)));
        admin_addr
    });
    Ok(Handle {
        addr,
        admin_addr,
        stop,
        servers,
        scheduler,
    })
}
