//! Admission webhook throughput and latency over TLS keep-alive.
//!
//! `cargo bench -p webhook --bench admission` (add `-- --secs N` to change the measuring
//! time). Runs, in one process, the webhook's HTTPS stack on loopback and a hyper load
//! generator with 64 keep-alive connections:
//!
//! 1. full library: the bundled rule library on realistic pod CREATE reviews (the captured
//!    kube-apiserver review and the kyverno pod-security Pods wrapped in reviews), closed
//!    loop at concurrency 64; evaluation under its budget (on the evaluation threads);
//! 2. the same with the budget off (evaluation inline on the I/O threads);
//! 3. no-op handler: the same TLS/HTTP stack, a handler that reads the body and answers a
//!    fixed allow;
//! 4. full library, open loop at 5,000 reviews/s: latency at a fixed rate (with and
//!    without the budget).
//!
//! Prints a Markdown table for bench/RESULTS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use webhook::cli::{start, WebhookArgs};
use webhook::policy::PolicyLoader;

/// The allocator the `tether` binary should use too: glibc malloc's arena locks are a
/// measurable share of a review's cost under concurrency.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
const CONNECTIONS: usize = 64;

fn reviews() -> Vec<Bytes> {
    let mut objects = Vec::new();
    let capture: Value = serde_json::from_slice(
        &std::fs::read(format!(
            "{FIXTURES}/apiserver-captures/admission-pod-create-good-pod-allowed.json"
        ))
        .unwrap(),
    )
    .unwrap();
    objects.push(capture["request"]["object"].clone());
    let mut stack = vec![std::path::PathBuf::from(format!(
        "{FIXTURES}/kyverno-pod-security"
    ))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "resource.yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    if let Ok(obj) = Value::deserialize(doc) {
                        if obj["kind"] == "Pod" {
                            objects.push(obj);
                        }
                    }
                }
            }
        }
    }
    objects
        .iter()
        .enumerate()
        .map(|(i, obj)| {
            let mut review = capture.clone();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or("pod")
                .to_string();
            review["request"]["uid"] = json!(format!("bench-{i}"));
            review["request"]["name"] = json!(name);
            let mut obj = obj.clone();
            // Realistic: what the API server sends has the defaulted fields of the capture.
            if obj["metadata"]["managedFields"].is_null() {
                obj["metadata"]["managedFields"] =
                    capture["request"]["object"]["metadata"]["managedFields"].clone();
            }
            review["request"]["object"] = obj;
            Bytes::from(review.to_string())
        })
        .collect()
}

fn tls_client(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs::parse_certs(std::path::Path::new("ca"), ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(certs::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr, tls: Arc<rustls::ClientConfig>) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn one(sender: &mut Sender, body: Bytes) -> bool {
    sender.ready().await.unwrap();
    let req = hyper::Request::post("/validate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let ok = resp.status() == 200;
    let _ = resp.into_body().collect().await.unwrap();
    ok
}

struct Outcome {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
}

/// Closed loop (`rate` None) or open loop at `rate` reviews/s over all connections.
async fn drive(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    bodies: Arc<Vec<Bytes>>,
    warmup: Duration,
    measure: Duration,
    rate: Option<f64>,
) -> Outcome {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr, tls.clone()).await);
    }
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for (c, mut sender) in senders.into_iter().enumerate() {
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0usize;
            let mut i = c;
            let mut ticker = rate.map(|r| {
                let period = Duration::from_secs_f64(CONNECTIONS as f64 / r);
                let mut t = tokio::time::interval_at(
                    tokio::time::Instant::now() + period.mul_f64(c as f64 / CONNECTIONS as f64),
                    period,
                );
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            loop {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let body = bodies[i % bodies.len()].clone();
                i += CONNECTIONS;
                let ok = one(&mut sender, body).await;
                if now >= start {
                    lat.push(now.elapsed().as_micros() as u64);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Outcome {
        requests: all.len(),
        errors,
        elapsed: measure,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let measure = Duration::from_secs(secs);
    let warmup = Duration::from_secs(2);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let dir = tempfile::tempdir().unwrap();
    certs::generate(
        &certs::ServingNames {
            dns: vec!["localhost".into()],
            ips: vec![],
        },
        &certs::Lifetimes::default(),
        dir.path(),
    )
    .unwrap();
    let ca = std::fs::read(dir.path().join("ca-bundle.crt")).unwrap();
    let tls = tls_client(&ca);
    let bodies = Arc::new(reviews());
    let avg_body = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len();

    // Where one review's time goes, single-threaded, no I/O.
    {
        let set = policies::RuleSet::try_bundled_library().unwrap();
        let rounds = 20usize;
        let n = bodies.len() * rounds;
        let t = Instant::now();
        for _ in 0..rounds {
            for b in bodies.iter() {
                std::hint::black_box(serde_json::from_slice::<Value>(b).unwrap());
            }
        }
        let parse = t.elapsed().as_secs_f64() / n as f64;
        let parsed: Vec<Value> = bodies
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        let t = Instant::now();
        for _ in 0..rounds {
            for v in &parsed {
                std::hint::black_box(policies::Event::from_admission_review(v.clone()).unwrap());
            }
        }
        let event = t.elapsed().as_secs_f64() / n as f64;
        let events: Vec<policies::Event> = parsed
            .iter()
            .map(|v| policies::Event::from_admission_review(v.clone()).unwrap())
            .collect();
        let t = Instant::now();
        let mut hits = 0usize;
        for _ in 0..rounds {
            for e in &events {
                hits += set.evaluate(e).len();
            }
        }
        let eval = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "per review, one thread: JSON parse {:.1} us, review -> event {:.1} us, evaluate library {:.1} us ({:.2} hits/review)",
            parse * 1e6,
            event * 1e6,
            eval * 1e6,
            hits as f64 / n as f64
        );
    }

    let server_rt = runtime("bench-server", cores);
    let client_rt = runtime("bench-client", cores);

    let base = WebhookArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: dir.path().join("tls.crt"),
        tls_key: dir.path().join("tls.key"),
        rules: vec![],
        decision_log: None,
        detect_only: false,
        failure_mode: webhook::FailureMode::Allow,
        eval_budget_ms: 100,
        max_body_bytes: 3 * 1024 * 1024,
        max_in_flight: 1024,
        body_timeout_ms: 10_000,
        reload_interval_ms: 1000,
        cluster: webhook::cluster::ClusterArgs::off(),
    };

    let mut rows = Vec::new();
    let run_library =
        |label: &str, budget_ms: u64, rate: Option<f64>, rows: &mut Vec<(String, Outcome)>| {
            let mut a = base.clone();
            a.eval_budget_ms = budget_ms;
            let shutdown = CancellationToken::new();
            let running = server_rt.block_on(async {
                let r = start(
                    &a,
                    Arc::new(PolicyLoader::new(vec![])),
                    None,
                    shutdown.clone(),
                )
                .await
                .unwrap();
                while !r.state.rules.status().loaded {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                r
            });
            let rules = running.state.rules.status().rules;
            let out = client_rt.block_on(drive(
                running.addr,
                tls.clone(),
                bodies.clone(),
                warmup,
                measure,
                rate,
            ));
            server_rt.block_on(running.stop()).unwrap();
            rows.push((format!("{label} ({rules} admission rules)"), out));
        };
    run_library(
        "full library, budget 100 ms (evaluation threads)",
        100,
        None,
        &mut rows,
    );
    run_library("full library, budget off (inline)", 0, None, &mut rows);

    // No-op handler on the same TLS/HTTP stack.
    {
        let shutdown = CancellationToken::new();
        let resolver = certs::ReloadingCertResolver::load(&base.tls_cert, &base.tls_key).unwrap();
        let config = resolver.server_config(&[b"h2", b"http/1.1"]).unwrap();
        let answer = Bytes::from(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "x", "allowed": true}}).to_string(),
        );
        let app = axum::Router::new().route(
            "/validate",
            post(move |body: Bytes| {
                let answer = answer.clone();
                async move {
                    let _ = body.len();
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        answer,
                    )
                }
            }),
        );
        let (addr, server) = server_rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            (
                addr,
                tokio::spawn(webhook::serve_tls(listener, config, app, shutdown.clone())),
            )
        });
        let out = client_rt.block_on(drive(
            addr,
            tls.clone(),
            bodies.clone(),
            warmup,
            measure,
            None,
        ));
        shutdown.cancel();
        server_rt.block_on(server).unwrap().unwrap();
        rows.push(("no-op handler, same stack".to_string(), out));
    }
    run_library(
        "full library, budget 100 ms, open loop at 5,000/s",
        100,
        Some(5000.0),
        &mut rows,
    );
    run_library(
        "full library, budget off, open loop at 5,000/s",
        0,
        Some(5000.0),
        &mut rows,
    );

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("machine: {cores} cores ({cpu}); server and load generator share them (one process, two runtimes of {cores} threads)");
    println!("reviews: {} distinct pod CREATE bodies, {avg_body} bytes on average; {CONNECTIONS} TLS 1.3 keep-alive connections (HTTP/1.1); {secs} s measured after 2 s warm-up\n", bodies.len());
    println!("| run | reviews/s | p50 | p99 | non-200 |");
    println!("|---|---:|---:|---:|---:|");
    for (label, o) in &rows {
        println!(
            "| {label} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            o.requests as f64 / o.elapsed.as_secs_f64(),
            o.p50_us as f64 / 1000.0,
            o.p99_us as f64 / 1000.0,
            o.errors
        );
    }
    let full = rows[0].1.requests as f64;
    let noop = rows[2].1.requests as f64;
    println!(
        "\nfull library / no-op throughput: {:.0}%",
        100.0 * full / noop
    );
}
