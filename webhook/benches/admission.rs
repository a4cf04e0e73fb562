//! Admission webhook throughput and latency over TLS keep-alive.
//!
//! `cargo bench -p webhook --bench admission` (add `-- --secs N` to change the measuring
//! time). Runs, in one process, the webhook's HTTPS stack on loopback and a hyper load
//! generator with 64 keep-alive connections:
//!
//! 1. full library: the bundled rule library on realistic pod CREATE reviews (the captured
//!    kube-apiserver review and the kyverno pod-security Pods wrapped in reviews), closed
//!    loop at concurrency 64; evaluation under its budget (started on the serving thread, what
//!    is left after 0.5 ms on the evaluation threads); decisions go to the sink
//!    `tether webhook` hands them to;
//! 2. the same with the budget off (evaluation inline on the serving threads);
//! 3. no-op handler: the same TLS/HTTP stack, a handler that reads the body and answers a
//!    fixed allow;
//! 4. minimal valid no-op: the same stack, a handler that parses the review into a
//!    `serde_json::Value` and answers an allow echoing `request.uid` (the least any real
//!    webhook does);
//!    and the same with a zero-copy parse: the body's JSON syntax is checked whole but
//!    only `request.uid` is taken, borrowed (the floor of any JSON webhook);
//! 5. full library, open loop at 5,000 reviews/s: latency at a fixed rate (with and
//!    without the budget).
//!
//! Before the rows, one unmeasured run of the full library warms the process (the first stack
//! a process runs measures slower, whichever it is). After them, the target's ratio (full
//! library with the budget / no-op) is measured side by side: five alternating pairs of
//! shorter runs, whose median is printed with the pairs.
//!
//! Prints where one review's time goes on one thread (no I/O), then a Markdown table for
//! bench/RESULTS.md with the CPU time the server's and the load generator's threads used per
//! answered review (`/proc/self/task/*/schedstat` over the measuring window), so that the
//! handler's own cost can be told from the stack's on a shared machine.
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
/// Alternating (library, no-op) pairs the side-by-side ratio is the median of.
const PAIRS: usize = 5;

const FULL_BUDGET: &str = "full library, budget 100 ms";
const FULL_INLINE: &str = "full library, budget off (inline)";
const NOOP: &str = "no-op handler, same stack";
const MINIMAL: &str = "minimal valid no-op (parse, echo uid), same stack";
const SCAN: &str = "zero-copy valid no-op (syntax scan, borrowed uid), same stack";

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
    /// CPU the process's threads used while measuring.
    cpu: Cpu,
}

/// CPU time in ns by thread group: the server's threads (the runtime its accept loop and
/// watchers run on, and its serving threads), the load generator's runtime, the
/// webhook's evaluation threads, and the rest of the process.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    server: u64,
    client: u64,
    eval: u64,
    other: u64,
}

impl Cpu {
    /// CPU used so far by the threads alive now (`/proc/self/task/*/schedstat`).
    fn now() -> Cpu {
        let mut c = Cpu::default();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return c;
        };
        for task in dir.flatten() {
            let p = task.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            let ns: u64 = std::fs::read_to_string(p.join("schedstat"))
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            match comm.trim() {
                // The accept loop's runtime, and the serving threads of `webhook::serve`.
                "bench-server" => c.server += ns,
                n if n.starts_with("tether-serve") => c.server += ns,
                "bench-client" => c.client += ns,
                n if n.starts_with("tether-eval") => c.eval += ns,
                _ => c.other += ns,
            }
        }
        c
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(before.server),
            client: self.client.saturating_sub(before.client),
            eval: self.eval.saturating_sub(before.eval),
            other: self.other.saturating_sub(before.other),
        }
    }
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
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
        let before = Cpu::now();
        tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
        Cpu::now().since(before)
    });
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
        cpu: cpu.await.unwrap(),
    }
}

/// The answer of the minimal handlers: an allow echoing the review's uid, or 400 when the
/// body did not parse (`None`).
fn echo_allow(
    uid: Option<Value>,
) -> (
    axum::http::StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    Vec<u8>,
) {
    let json_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
    let Some(uid) = uid else {
        return (axum::http::StatusCode::BAD_REQUEST, json_type, Vec::new());
    };
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    (
        axum::http::StatusCode::OK,
        json_type,
        serde_json::to_vec(&answer).unwrap(),
    )
}

/// Answered reviews per second over the measured window.
fn throughput(o: &Outcome) -> f64 {
    o.requests as f64 / o.elapsed.as_secs_f64()
}

/// The no-op handler: reads the body and answers a fixed allow.
fn noop_app() -> axum::Router {
    let answer = Bytes::from(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "x", "allowed": true}}).to_string(),
    );
    axum::Router::new().route(
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
    )
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

    // Where one review's time goes, single-threaded, no I/O: each stage over every body,
    // best of ROUNDS rounds (the machine is shared).
    {
        use webhook::rules::Rules as _;
        const ROUNDS: usize = 7;
        let n = bodies.len();
        let best = |mut round: Box<dyn FnMut() -> Duration + '_>| {
            (0..ROUNDS)
                .map(|_| round())
                .min()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6
                / n as f64
        };
        let timed = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed()
        };
        let parse = best(Box::new(|| {
            timed(&mut || {
                for b in bodies.iter() {
                    std::hint::black_box(serde_json::from_slice::<Value>(b).unwrap());
                }
            })
        }));
        // The floor of any parser that reads the text: a syntax scan that builds nothing.
        let scan = best(Box::new(|| {
            timed(&mut || {
                for b in bodies.iter() {
                    std::hint::black_box(
                        serde_json::from_slice::<serde::de::IgnoredAny>(b).unwrap(),
                    );
                }
            })
        }));
        // As the server parses with the library: without the objects' managedFields, which
        // no rule of the library reads.
        let set = policies::RuleSet::try_bundled_library().unwrap();
        let options = webhook::review::ParseOptions {
            keep_managed_fields: set.admission_reads_managed_fields(),
        };
        let checked = best(Box::new(|| {
            timed(&mut || {
                for b in bodies.iter() {
                    std::hint::black_box(webhook::review::parse_with(b, options).unwrap());
                }
            })
        }));
        // As the server goes on: the checked review's document into an event.
        let parsed: Vec<policies::Doc> = bodies
            .iter()
            .map(|b| webhook::review::parse_with(b, options).unwrap().body)
            .collect();
        // The copies the conversion consumes are made outside the timed part.
        let event = best(Box::new(|| {
            let mut copies = parsed.clone();
            timed(&mut || {
                for d in copies.drain(..) {
                    std::hint::black_box(policies::Event::from_admission_doc(d).unwrap());
                }
            })
        }));
        let events: Vec<policies::Event> = parsed
            .iter()
            .map(|d| policies::Event::from_admission_doc(d.clone()).unwrap())
            .collect();
        let mut hits = 0usize;
        for e in &events {
            hits += set.evaluate_outputs(e).len();
        }
        let eval = best(Box::new(|| {
            timed(&mut || {
                for e in &events {
                    std::hint::black_box(set.evaluate_outputs(e));
                }
            })
        }));
        let eval_fields = best(Box::new(|| {
            timed(&mut || {
                for e in &events {
                    std::hint::black_box(set.evaluate(e));
                }
            })
        }));
        // The handler's work without the HTTP stack: checked parse, event, evaluation,
        // decision, encoded answer (what `/validate` does between body and response).
        let rules =
            webhook::policy::PolicyRules::new(policies::RuleSet::try_bundled_library().unwrap());
        let handler = best(Box::new(|| {
            timed(&mut || {
                for b in bodies.iter() {
                    let p = webhook::review::parse_with(b, options).unwrap();
                    let req = p.request.unwrap();
                    let hits = rules.evaluate(p.body, &req, None).unwrap();
                    let d = webhook::decide::decide(&req, hits, false, 1);
                    std::hint::black_box(webhook::review::encode(p.version, &d.response));
                    std::hint::black_box(d.decision);
                }
            })
        }));
        println!(
            "per review, one thread (best of {ROUNDS} rounds): JSON syntax scan building nothing {scan:.1} us, JSON parse into a Value {parse:.1} us, checked review into a document (webhook::review::parse_with, managedFields left out) {checked:.1} us, review document -> event {event:.1} us, evaluate library {eval:.1} us ({:.2} hits/review; {eval_fields:.1} us with output fields); handler work without I/O {handler:.1} us",
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
    // (warm-up, measured) of each run; shorter for the side-by-side pairs at the end.
    let window = std::cell::Cell::new((warmup, measure));
    let run_library =
        |label: &str, budget_ms: u64, rate: Option<f64>, rows: &mut Vec<(String, Outcome)>| {
            let mut a = base.clone();
            a.eval_budget_ms = budget_ms;
            let shutdown = CancellationToken::new();
            let running = server_rt.block_on(async {
                // As `tether webhook` runs: decisions handed to its sink.
                let sink = webhook::cli::logging_sink();
                let r = start(
                    &a,
                    Arc::new(PolicyLoader::new(vec![])),
                    Some(sink),
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
                window.get().0,
                window.get().1,
                rate,
            ));
            server_rt.block_on(running.stop()).unwrap();
            rows.push((format!("{label} ({rules} admission rules)"), out));
        };
    // The first stack a process runs measures 3-12 % slower than the same stack run again
    // (allocator, page tables, the host's scheduling), whichever configuration comes first:
    // one unmeasured run of the library warms the process for every row.
    run_library("warm-up", 100, None, &mut rows);
    rows.clear();
    run_library(FULL_BUDGET, 100, None, &mut rows);
    run_library(FULL_INLINE, 0, None, &mut rows);

    // Baselines on the same TLS/HTTP stack: the no-op handler (reads the body, answers a
    // fixed allow), and the least any real webhook does (parses the review into a
    // `serde_json::Value` and answers an allow echoing `request.uid`).
    let run_stack = |label: &str, app: axum::Router, rows: &mut Vec<(String, Outcome)>| {
        let shutdown = CancellationToken::new();
        let resolver = certs::ReloadingCertResolver::load(&base.tls_cert, &base.tls_key).unwrap();
        let config = resolver.server_config(&[b"h2", b"http/1.1"]).unwrap();
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
            window.get().0,
            window.get().1,
            None,
        ));
        shutdown.cancel();
        server_rt.block_on(server).unwrap().unwrap();
        rows.push((label.to_string(), out));
    };
    run_stack(NOOP, noop_app(), &mut rows);
    {
        let app = axum::Router::new().route(
            "/validate",
            post(|body: Bytes| async move {
                let uid = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .map(|review| review["request"]["uid"].clone());
                echo_allow(uid)
            }),
        );
        run_stack(MINIMAL, app, &mut rows);
    }
    {
        #[derive(Deserialize)]
        struct Review<'a> {
            #[serde(borrow)]
            request: Request<'a>,
        }
        #[derive(Deserialize)]
        struct Request<'a> {
            #[serde(borrow)]
            uid: std::borrow::Cow<'a, str>,
        }
        let app = axum::Router::new().route(
            "/validate",
            post(|body: Bytes| async move {
                let uid = serde_json::from_slice::<Review<'_>>(&body)
                    .ok()
                    .map(|review| json!(review.request.uid));
                echo_allow(uid)
            }),
        );
        run_stack(SCAN, app, &mut rows);
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

    // The target's ratio side by side: short runs of the library (with the budget, as
    // `tether webhook` runs by default) and of the no-op, alternating, so that a shared
    // host's drift between the rows above does not move it.
    window.set((
        Duration::from_secs(1),
        (measure / 2).max(Duration::from_secs(2)),
    ));
    // Throughput of `a` in % of `b`'s, measured over windows of the same length.
    let pct = |a: &Outcome, b: &Outcome| 100.0 * a.requests as f64 / b.requests.max(1) as f64;
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let mut pair = Vec::new();
        run_library("pair: library", 100, None, &mut pair);
        run_stack("pair: no-op", noop_app(), &mut pair);
        if let [(_, lib), (_, noop)] = pair.as_slice() {
            pairs.push(pct(lib, noop));
        }
    }
    pairs.sort_by(f64::total_cmp);

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("machine: {cores} cores ({cpu}); server and load generator share them (one process: the server's {cores} serving threads, each a single-threaded runtime, and the load generator's runtime of {cores} threads)");
    println!("reviews: {} distinct pod CREATE bodies, {avg_body} bytes on average; {CONNECTIONS} TLS 1.3 keep-alive connections (HTTP/1.1); {secs} s measured after 2 s warm-up\n", bodies.len());
    println!("CPU columns: CPU time of the server's threads (serving threads, evaluation threads, and the runtime of its accept loop and watchers) and of the load generator's, per answered review, while measuring\n");
    println!(
        "| run | reviews/s | p50 | p99 | non-200 | server CPU/review | load generator CPU/review |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let per_review = |ns: u64, o: &Outcome| ns as f64 / 1000.0 / o.requests.max(1) as f64;
    for (label, o) in &rows {
        println!(
            "| {label} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.1} µs | {:.1} µs |",
            throughput(o),
            o.p50_us as f64 / 1000.0,
            o.p99_us as f64 / 1000.0,
            o.errors,
            per_review(o.cpu.server + o.cpu.eval, o),
            per_review(o.cpu.client, o),
        );
    }
    let row = |prefix: &str| {
        rows.iter()
            .find(|(l, _)| l.starts_with(prefix))
            .map(|(_, o)| o)
            .unwrap()
    };
    let (budget, inline) = (row(FULL_BUDGET), row(FULL_INLINE));
    let (noop, minimal, scan) = (row(NOOP), row(MINIMAL), row(SCAN));
    println!(
        "\nfull library / no-op throughput: {:.0}% with the budget, {:.0}% inline",
        pct(budget, noop),
        pct(inline, noop)
    );
    println!(
        "full library (budget) / no-op throughput side by side, {PAIRS} alternating pairs of {} s runs: median {:.0}% (pairs: {})",
        window.get().1.as_secs(),
        pairs.get(pairs.len() / 2).copied().unwrap_or(0.0),
        pairs
            .iter()
            .map(|p| format!("{p:.0}%"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "full library / minimal valid no-op throughput: {:.0}% with the budget, {:.0}% inline",
        pct(budget, minimal),
        pct(inline, minimal)
    );
    let server = |o: &Outcome| per_review(o.cpu.server + o.cpu.eval, o);
    let all = |o: &Outcome| per_review(o.cpu.server + o.cpu.eval + o.cpu.client + o.cpu.other, o);
    println!(
        "CPU per review, whole process: no-op {:.1} µs, minimal valid no-op {:.1} µs, full library {:.1} µs with the budget, {:.1} µs inline; the handler's share (server CPU above the no-op's): {:.1} µs with the budget, {:.1} µs inline",
        all(noop),
        all(minimal),
        all(budget),
        all(inline),
        server(budget) - server(noop),
        server(inline) - server(noop)
    );
    println!(
        "50% of the no-op's throughput allows {:.1} µs of CPU per review for the whole process (twice the no-op's); the zero-copy valid no-op spends {:.1} µs ({:.0}% of the no-op's throughput), the minimal valid no-op (parse into a Value, echo the uid) {:.1} µs ({:.0}%), the full library {:.1} µs",
        2.0 * all(noop),
        all(scan),
        pct(scan, noop),
        all(minimal),
        pct(minimal, noop),
        all(budget)
    );
}
