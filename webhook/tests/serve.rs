//! The serving threads (`webhook::serve`): connections spread over them, the streams of one
//! HTTP/2 connection spread too, and shutdown drains a request in flight on every thread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use bytes::Bytes;
use common::{tls_client_config, Pki};
use http_body_util::{BodyExt, Empty};
use tokio_util::sync::CancellationToken;

const THREADS: usize = 2;

/// A server on `THREADS` serving threads whose `/thread` answers the name of the thread
/// that ran it, and `/slow` does the same after 300 ms.
async fn server(
    pki: &Pki,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let name = || {
        std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string()
    };
    let app = axum::Router::new()
        .route("/thread", get(move || async move { name() }))
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                name()
            }),
        );
    let resolver =
        certs::ReloadingCertResolver::load(&pki.path("tls.crt"), &pki.path("tls.key")).unwrap();
    let tls = resolver.server_config(&[b"h2", b"http/1.1"]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(webhook::serve_tls_on(
        listener,
        tls,
        app,
        shutdown.clone(),
        THREADS,
    ));
    (addr, shutdown, server)
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn tls(
    addr: std::net::SocketAddr,
    pki: &Pki,
    alpn: &[u8],
) -> hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut config = (*tls_client_config(&pki.ca_pem())).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    hyper_util::rt::TokioIo::new(stream)
}

async fn h1(addr: std::net::SocketAddr, pki: &Pki) -> H1 {
    let (sender, conn) = hyper::client::conn::http1::handshake(tls(addr, pki, b"http/1.1").await)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn text(resp: hyper::Response<hyper::body::Incoming>) -> String {
    assert_eq!(resp.status(), 200);
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

fn get_req(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap()
}

async fn ask_h1(sender: &mut H1, path: &str) -> String {
    sender.ready().await.unwrap();
    text(sender.send_request(get_req(path)).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_the_threads_and_stay_on_theirs() {
    let pki = Pki::new();
    let (addr, shutdown, server) = server(&pki).await;
    // Opened one after the other: each goes to the thread with the fewest open.
    let mut conns = Vec::new();
    for _ in 0..2 * THREADS {
        let mut c = h1(addr, &pki).await;
        let first = ask_h1(&mut c, "/thread").await;
        conns.push((c, first));
    }
    let mut per_thread = BTreeMap::new();
    for (c, first) in &mut conns {
        assert!(first.starts_with("tether-serve-"), "{first}");
        for _ in 0..5 {
            assert_eq!(&ask_h1(c, "/thread").await, first, "a connection moved");
        }
        *per_thread.entry(first.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_thread.len(), THREADS, "{per_thread:?}");
    assert!(per_thread.values().all(|&n| n == 2), "{per_thread:?}");
    drop(conns);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_of_one_http2_connection_run_on_every_thread() {
    let pki = Pki::new();
    let (addr, shutdown, server) = server(&pki).await;
    let (sender, conn): (H2, _) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        tls(addr, &pki, b"h2").await,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            sender.ready().await.unwrap();
            text(sender.send_request(get_req("/thread")).await.unwrap()).await
        }));
    }
    let mut threads = std::collections::BTreeSet::new();
    for t in tasks {
        threads.insert(t.await.unwrap());
    }
    let expected: std::collections::BTreeSet<String> =
        (0..THREADS).map(|i| format!("tether-serve-{i}")).collect();
    assert_eq!(threads, expected);
    drop(sender);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_requests_in_flight_on_every_thread_then_ends_them() {
    let pki = Pki::new();
    let (addr, shutdown, server) = server(&pki).await;
    let mut conns = Vec::new();
    for _ in 0..THREADS {
        conns.push(h1(addr, &pki).await);
    }
    let mut slow = Vec::new();
    for mut c in conns {
        slow.push(tokio::spawn(async move {
            let answer = ask_h1(&mut c, "/slow").await;
            (answer, c)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    let mut threads = std::collections::BTreeSet::new();
    for t in slow {
        let (answer, mut c) = t.await.unwrap();
        threads.insert(answer);
        // The connection is closed after its answer: no further request gets through.
        assert!(c.ready().await.is_err() || c.send_request(get_req("/thread")).await.is_err());
    }
    assert_eq!(threads.len(), THREADS, "{threads:?}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serving threads ended")
        .unwrap()
        .unwrap();
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
