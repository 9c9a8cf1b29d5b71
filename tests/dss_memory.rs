//! Bounded memory on huge answers: a 200 MiB job log and a 100,000-job listing, streamed by a server
//! on loopback, go through `DssClient` while a counting global allocator records the peak of bytes
//! allocated by the whole test process (client, HTTP stack and the server itself). The log keeps its
//! tail and loses its keys; the search keeps its three matches; the peak stays a few MiB, far from the
//! size of either answer (and from the chart's 256 Mi memory limit).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use base64::Engine as _;
use futures::StreamExt as _;
use kube_dss::dss::{ApiKey, ClientConfig, DssClient, Error, Limits, LogTailLimits};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATED: PeakAlloc = PeakAlloc;

/// The measurements must not overlap: one test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KEY: &str = "memory-key-Ax91Lq";
const MIB: usize = 1024 * 1024;
/// What a streamed answer may add to the process's allocations at its peak.
const PEAK_BOUND: usize = 8 * MIB;

async fn serve(app: Router) -> DssClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = url::Url::parse(&format!("http://{addr}")).unwrap();
    let mut config = ClientConfig::new(url, ApiKey::from(KEY));
    // Streaming hundreds of MiB through a debug build takes a while; the bound is memory, not time.
    config.request_timeout = Duration::from_secs(600);
    config.limits = Limits::new(1000.0, 4);
    DssClient::new(config).unwrap()
}

/// Runs `call` and returns its result with the peak of bytes allocated meanwhile, above what was
/// allocated when it started.
async fn peak_of<T>(call: impl Future<Output = T>) -> (T, usize) {
    let baseline = ALLOCATED.current_usage();
    ALLOCATED.reset_peak_usage();
    let out = call.await;
    (out, ALLOCATED.peak_usage().saturating_sub(baseline))
}

/// A 200 MiB log: a first chunk, the same 64 KiB chunk again and again, and the end with the
/// failure. Every chunk boundary splits the API key in two, and every line carries its Basic form.
fn big_log() -> (impl futures::Stream<Item = Result<Bytes, std::io::Error>>, usize) {
    let (head, tail) = KEY.split_at(7);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    let line = format!(
        "[2026/11/29-10:12:03.000] [ActivityExecutor-1] [INFO] [dku.flow.recipe] - processed 1000 rows (Basic {basic})\n"
    );
    let mut chunk = format!("{tail} continued\n");
    while chunk.len() + line.len() < 64 * 1024 - 100 {
        chunk.push_str(&line);
    }
    chunk.push_str("[2026/11/29-10:12:03.000] [ActivityExecutor-1] [INFO] [dku.utils] - echo ");
    chunk.push_str(head);
    let repeats = 200 * MIB / chunk.len();
    let first = Bytes::from(format!(
        "[2026/11/29-10:00:00.000] [main] [INFO] [dku.jobs] - Job started with {head}"
    ));
    let last = Bytes::from(format!(
        "{tail}\n\
         [2026/11/29-11:00:00.000] [ActivityExecutor-1] [ERROR] [dku.flow.activity] - Activity compute_big_NP FAILED\n\
         [2026/11/29-11:00:00.000] [ActivityExecutor-1] [ERROR] [dku.flow.activity] - Job failed: connection with {KEY} refused by the database\n\
         [2026/11/29-11:00:00.001] [main] [INFO] [dku.flow.jobrunner] - Job finished\n"
    ));
    let size = first.len() + repeats * chunk.len() + last.len();
    let chunk = Bytes::from(chunk);
    let chunks = std::iter::once(first)
        .chain(std::iter::repeat_n(chunk, repeats))
        .chain(std::iter::once(last));
    (futures::stream::iter(chunks.map(Ok)), size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_log_is_reduced_to_its_tail_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let app = Router::new().route(
        "/public/api/projects/P/jobs/big/log",
        get(|| async {
            let (stream, _) = big_log();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                Body::from_stream(stream),
            )
                .into_response()
        }),
    );
    let dss = serve(app).await;
    let (tail, peak) = peak_of(dss.get_log_tail("P", "big", None, LogTailLimits::default())).await;
    let tail = tail.unwrap();
    println!(
        "200 MiB log: peak allocation {:.2} MiB, tail {} bytes",
        peak as f64 / MIB as f64,
        tail.text.len()
    );
    let (_, size) = big_log();
    assert_eq!(tail.bytes_read, size as u64);
    assert!(size >= 200 * MIB - 64 * 1024);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    assert!(
        !tail.text.contains(KEY) && !tail.text.contains(&basic),
        "{}",
        tail.text
    );
    assert!(
        tail.text.contains("- echo ***"),
        "keys split across chunks are removed: {}",
        tail.text
    );
    assert!(
        tail.text.ends_with("[dku.flow.jobrunner] - Job finished"),
        "{}",
        tail.text
    );
    assert_eq!(
        tail.failure_message().as_deref(),
        Some("Job failed: connection with *** refused by the database")
    );
    assert!(tail.text.len() <= 4096);
    assert!(
        peak < PEAK_BOUND,
        "streaming the log allocated {peak} bytes at its peak"
    );

    // Control: the whole-log call keeps its last 16 MiB, and the allocator sees it.
    let (full, full_peak) = peak_of(dss.get_log("P", "big", None)).await;
    let full = full.unwrap();
    println!(
        "the same log read by get_log: peak allocation {:.2} MiB",
        full_peak as f64 / MIB as f64
    );
    assert!(full.ends_with("Job finished\n"));
    assert!(full_peak > 16 * MIB, "{full_peak}");
}

const JOBS: usize = 100_000;
const PER_CHUNK: usize = 500;

/// One item of a project's job listing, in the documented shape; every 33,333rd (from the 7th) was
/// initiated by the operator's key.
fn job_item(i: usize) -> String {
    let initiator = if i % 33_333 == 7 {
        "API (kube-dss-operator)"
    } else {
        "API (someone-else)"
    };
    format!(
        r#"{{"def":{{"id":"build_ds{i}_NP_2026-11-29T10-12-03.{ms:03}","initiationTimestamp":{ts},"initiator":"{initiator}","mailNotification":false,"name":"build_ds{i}_NP","outputs":[{{"targetDataset":"ds{i}","targetDatasetProjectKey":"P","targetPartition":"NP","type":"DATASET"}}],"projectKey":"P","refreshHiveMetastore":false,"refreshIntermediateMirrors":true,"refreshTargetMirrors":true,"triggeredFrom":"API","type":"NON_RECURSIVE_FORCED_BUILD"}},"endTime":0,"stableState":true,"startTime":0,"state":"DONE","warningsCount":0}}"#,
        ms = i % 1000,
        ts = 1_764_000_000_000_i64 + i as i64,
    )
}

fn listing_chunk(c: usize) -> Bytes {
    let mut out = String::with_capacity(PER_CHUNK * 560);
    if c == 0 {
        out.push('[');
    }
    for i in c * PER_CHUNK..(c + 1) * PER_CHUNK {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&job_item(i));
    }
    if c + 1 == JOBS / PER_CHUNK {
        out.push(']');
    }
    Bytes::from(out)
}

fn listing_app() -> Router {
    Router::new().route(
        "/public/api/projects/P/jobs/",
        get(|| async {
            let chunks =
                futures::stream::iter(0..JOBS / PER_CHUNK).map(|c| Ok::<_, std::io::Error>(listing_chunk(c)));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(chunks),
            )
                .into_response()
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_job_listing_is_searched_as_it_streams_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let dss = serve(listing_app()).await;
    let body_bytes: usize = (0..JOBS / PER_CHUNK).map(|c| listing_chunk(c).len()).sum();
    let (search, peak) = peak_of(dss.search_jobs("P", 16, |job| {
        job.definition.as_ref().and_then(|d| d.initiator.as_deref()) == Some("API (kube-dss-operator)")
    }))
    .await;
    let search = search.unwrap();
    println!(
        "100,000-job listing ({:.1} MiB): peak allocation {:.2} MiB",
        body_bytes as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert_eq!(search.listed, JOBS);
    assert_eq!(search.total_matches, 3);
    let ids: Vec<&str> = search.matches.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "build_ds7_NP_2026-11-29T10-12-03.007",
            "build_ds33340_NP_2026-11-29T10-12-03.340",
            "build_ds66673_NP_2026-11-29T10-12-03.673"
        ]
    );
    assert!(body_bytes > 50 * MIB, "the listing is {body_bytes} bytes");
    assert!(
        peak < PEAK_BOUND,
        "searching the listing allocated {peak} bytes at its peak"
    );

    // Returned whole, the same listing is refused at the cap, with the cap named; the jobs it held
    // up to the cap show in the allocator (a control of the measurement).
    let (err, whole_peak) = peak_of(dss.list_jobs("P")).await;
    let err = err.unwrap_err();
    println!(
        "the same listing read by list_jobs: peak allocation {:.2} MiB",
        whole_peak as f64 / MIB as f64
    );
    assert!(whole_peak > PEAK_BOUND, "{whole_peak}");
    assert!(
        matches!(&err, Error::TooLarge { limit, .. } if limit == "more than 10000 listed jobs"),
        "{err:?}"
    );
    assert_eq!(err.category(), "DssBadResponse");
    assert!(
        err.to_string()
            .contains("the answer exceeds the client's cap: more than 10000 listed jobs")
    );
}
