//! Tenant isolation in `DssClient`, against servers on loopback that misbehave the way a sick DSS
//! does: one that accepts connections and never answers, one that trickles its body, one that
//! answers 429. A call's whole time (request and body) is bounded by its timeout; it holds its
//! in-flight slot until its body is read; a handle with a budget wait limit is refused at once
//! (`Throttled`) instead of queueing behind a hung or paused DSS; and none of this touches another
//! connection.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use kube_dss::dss::{ApiKey, Category, ClientConfig, DssClient, Error, Limits, MAX_RATE_LIMIT_PAUSE};
use tokio::sync::Notify;

const KEY: &str = "budget-key-7Yq2";

fn client(addr: SocketAddr, timeout: Duration, max_in_flight: usize) -> DssClient {
    let url = url::Url::parse(&format!("http://{addr}")).unwrap();
    let mut config = ClientConfig::new(url, ApiKey::from(KEY));
    config.request_timeout = timeout;
    config.limits = Limits::new(1000.0, max_in_flight);
    DssClient::new(config).unwrap()
}

/// A server that accepts connections and never answers (a DSS stuck in a GC pause, a dead
/// backend behind a proxy that keeps the connection open).
async fn hung_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// How the scripted server answers `GET /public/api/projects/`.
#[derive(Clone)]
struct Script {
    requests: Arc<AtomicUsize>,
    /// Waits before sending the headers.
    header_delay: Duration,
    /// Body bytes sent one at a time, `gap` apart; `None`: forever.
    trickle: Option<usize>,
    gap: Duration,
    /// Told when the first body byte is on its way.
    body_started: Arc<Notify>,
    /// Answers 429 to the first request, with this `Retry-After`.
    rate_limit_first: Option<&'static str>,
}

impl Script {
    fn new() -> Self {
        Self {
            requests: Arc::new(AtomicUsize::new(0)),
            header_delay: Duration::ZERO,
            trickle: Some(0),
            gap: Duration::from_millis(50),
            body_started: Arc::new(Notify::new()),
            rate_limit_first: None,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn projects(State(script): State<Script>) -> Response {
    let n = script.requests.fetch_add(1, Ordering::SeqCst);
    if let (0, Some(retry_after)) = (n, script.rate_limit_first) {
        let body =
            r#"{"errorType":"com.dataiku.dip.exceptions.TooManyRequestsException","message":"slow down"}"#;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, retry_after),
                (header::CONTENT_TYPE, "application/json"),
            ],
            body,
        )
            .into_response();
    }
    tokio::time::sleep(script.header_delay).await;
    let json = br#"[{"projectKey":"A"}]"#;
    let body = match script.trickle {
        Some(0) => Body::from(&json[..]),
        limit => {
            // `[{"projectKey":"A"}` a byte at a time, then spaces, and the closing `]` at the end.
            let started = Arc::clone(&script.body_started);
            let stream = futures::stream::unfold(0usize, move |i| {
                let started = Arc::clone(&started);
                async move {
                    if i == 0 {
                        started.notify_one();
                    } else {
                        tokio::time::sleep(script.gap).await;
                    }
                    let byte = match limit {
                        Some(n) if i == n => b']',
                        Some(n) if i > n => return None,
                        _ if i < json.len() - 1 => json[i],
                        _ => b' ',
                    };
                    Some((Ok::<_, std::io::Error>(Bytes::from(vec![byte])), i + 1))
                }
            });
            Body::from_stream(stream)
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn scripted_server(script: Script) -> SocketAddr {
    let app = Router::new()
        .route("/public/api/projects/", get(projects))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_dss_fails_its_calls_at_their_timeout_and_delays_no_other_connection() {
    let timeout = Duration::from_secs(3);
    let hung = client(hung_server().await, timeout, 2).with_max_budget_wait(Duration::from_millis(100));
    let healthy_script = Script::new();
    let healthy = client(scripted_server(healthy_script.clone()).await, timeout, 2);

    let began = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let hung = hung.clone();
            tokio::spawn(async move {
                let result = hung.list_project_keys().await;
                (result, began.elapsed())
            })
        })
        .collect();
    // Another connection answers while the hung one still holds every one of its slots.
    assert_eq!(healthy.list_project_keys().await.unwrap(), ["A"]);
    let healthy_done = began.elapsed();

    let mut throttled = Vec::new();
    let mut timed_out = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            (Err(Error::Throttled { retry_after, .. }), at) => {
                assert!(retry_after >= Duration::from_millis(100));
                throttled.push(at);
            }
            (Err(Error::Timeout { .. }), at) => timed_out.push(at),
            (other, _) => panic!("unexpected {other:?}"),
        }
    }
    // Two calls took the two slots and ran into the timeout; the other four were refused at once
    // instead of queueing behind them.
    assert_eq!((timed_out.len(), throttled.len()), (2, 4));
    let first_timeout = timed_out.iter().min().copied().unwrap();
    assert!(
        throttled.iter().all(|t| *t < first_timeout),
        "{throttled:?} vs {timed_out:?}"
    );
    assert!(
        healthy_done < first_timeout,
        "{healthy_done:?} vs {first_timeout:?}"
    );
    for t in &timed_out {
        assert!(*t >= timeout, "{t:?}");
        // Generous for a loaded machine; never twice the timeout.
        assert!(*t < timeout * 2, "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_bounds_headers_and_body_together() {
    let timeout = Duration::from_secs(2);
    let mut script = Script::new();
    // Headers just before the timeout, then a body that never ends.
    script.header_delay = Duration::from_millis(1500);
    script.trickle = None;
    let dss = client(scripted_server(script).await, timeout, 4);
    let began = Instant::now();
    let err = dss.list_project_keys().await.unwrap_err();
    let took = began.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.class(), Category::Timeout);
    assert!(took >= timeout, "{took:?}");
    // Separate timeouts for headers and body would allow 1.5 s + 2 s.
    assert!(took < Duration::from_millis(3000), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_its_in_flight_slot_until_its_body_is_read() {
    let mut script = Script::new();
    // `[{"projectKey":"A"}` takes 19 bytes 100 ms apart: about 2 s of body.
    script.trickle = Some(19);
    script.gap = Duration::from_millis(100);
    let started = Arc::clone(&script.body_started);
    let dss = client(scripted_server(script.clone()).await, Duration::from_secs(30), 1)
        .with_max_budget_wait(Duration::from_millis(50));
    let reading = {
        let dss = dss.clone();
        tokio::spawn(async move { dss.list_project_keys().await })
    };
    started.notified().await;
    // The first call has its headers and is reading its body: the only slot is still taken.
    let err = dss.list_project_keys().await.unwrap_err();
    assert!(matches!(err, Error::Throttled { .. }), "{err:?}");
    assert_eq!(err.category(), "DssThrottled");
    assert!(err.is_retryable());
    assert_eq!(script.requests(), 1, "the refused call was never sent");
    assert_eq!(reading.await.unwrap().unwrap(), ["A"]);
    // Once the body is read, the slot is free again.
    assert_eq!(dss.list_project_keys().await.unwrap(), ["A"]);
    assert_eq!(script.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_its_own_connection_only_and_bounded_callers_are_refused_at_once() {
    let mut script = Script::new();
    script.rate_limit_first = Some("30");
    let addr = scripted_server(script.clone()).await;
    let paused = client(addr, Duration::from_secs(5), 4).with_max_budget_wait(Duration::from_secs(1));
    let other = client(addr, Duration::from_secs(5), 4).with_max_budget_wait(Duration::from_secs(1));

    let err = paused.list_project_keys().await.unwrap_err();
    assert_eq!(err.class(), Category::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    // The pause is 30 s, beyond the handle's 1 s: refused now, with the time left, never sent.
    let began = Instant::now();
    let err = paused.list_project_keys().await.unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(1), "{:?}", began.elapsed());
    match err {
        Error::Throttled { retry_after, .. } => {
            assert!(
                retry_after > Duration::from_secs(25) && retry_after <= Duration::from_secs(30),
                "{retry_after:?}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(script.requests(), 1);
    // Another connection (even to the same server) is not paused.
    assert_eq!(other.list_project_keys().await.unwrap(), ["A"]);
    assert_eq!(script.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pause_is_capped_while_its_retry_after_is_reported() {
    let mut script = Script::new();
    script.rate_limit_first = Some("3600");
    let dss = client(scripted_server(script).await, Duration::from_secs(5), 4)
        .with_max_budget_wait(Duration::from_millis(10));
    let err = dss.list_project_keys().await.unwrap_err();
    // What DSS asked, up to the 600 s the client believes, for callers that requeue.
    assert_eq!(err.retry_after(), Some(Duration::from_secs(600)));
    // The connection itself is paused for at most MAX_RATE_LIMIT_PAUSE.
    let err = dss.list_project_keys().await.unwrap_err();
    let retry_after = err.retry_after().unwrap();
    assert!(matches!(err, Error::Throttled { .. }), "{err:?}");
    assert!(retry_after <= MAX_RATE_LIMIT_PAUSE, "{retry_after:?}");
    assert!(
        retry_after > MAX_RATE_LIMIT_PAUSE - Duration::from_secs(5),
        "{retry_after:?}"
    );
}
