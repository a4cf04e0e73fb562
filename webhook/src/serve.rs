//! The TLS accept loop and the threads that serve connections.
//!
//! Connections are served on threads of their own, each running a single-threaded
//! runtime, as many as the machine has cores. A connection stays on the thread that took
//! it: its requests, their allocations and the caches they warm are not moved between
//! threads by work stealing, and a request wakes no other thread. The accept loop hands
//! each new connection to the thread with the fewest open ones. The streams of an HTTP/2
//! connection — the API server sends its reviews over few connections — are spread over
//! all threads, so that one connection still uses every core.
//!
//! Shutdown: the accept loop stops, every thread drains its connections (up to
//! [`DRAIN_TIMEOUT`]), then waits for the others, whose HTTP/2 streams may be running on
//! it, before it ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serving threads by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Runs the futures hyper spawns (the streams of HTTP/2 connections) on the serving
/// threads in turn.
#[derive(Clone)]
struct Spread {
    handles: Arc<[Handle]>,
    next: Arc<AtomicUsize>,
}

impl<F> hyper::rt::Executor<F> for Spread
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(fut);
    }
}

/// One serving thread, as the accept loop sees it.
struct Worker {
    conns: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

/// Counts a connection open while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` over TLS on `listener` until `shutdown`, then drains open connections, on
/// [`default_threads`] serving threads. The TLS configuration resolves its certificate per
/// handshake, so a reloaded certificate applies to new connections while existing ones
/// continue.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_tls_on(listener, tls, app, shutdown, default_threads()).await
}

/// [`serve_tls`] on `threads` serving threads (at least one).
pub async fn serve_tls_on(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
    threads: usize,
) -> std::io::Result<()> {
    let threads = threads.max(1);
    let mut runtimes = Vec::with_capacity(threads);
    for _ in 0..threads {
        runtimes.push(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
    }
    let spread = Spread {
        handles: runtimes.iter().map(|rt| rt.handle().clone()).collect(),
        next: Arc::new(AtomicUsize::new(0)),
    };
    let mut builder = ConnBuilder::new(spread);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let acceptor = TlsAcceptor::from(tls);
    let drained = Arc::new(Drained::default());

    let mut workers = Vec::with_capacity(threads);
    for (i, rt) in runtimes.into_iter().enumerate() {
        let (conns, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let open = Arc::new(AtomicUsize::new(0));
        let thread = Connections {
            rx,
            open: open.clone(),
            acceptor: acceptor.clone(),
            app: app.clone(),
            builder: builder.clone(),
            draining: Draining::new(&drained),
        };
        std::thread::Builder::new()
            .name(format!("tether-serve-{i}"))
            .spawn(move || {
                rt.block_on(thread.run());
                // Dropping the runtime ends what is left on it (past the drain timeout).
                drop(rt);
                let _ = done_tx.send(());
            })?;
        workers.push(Worker { conns, open, done });
    }

    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tcp = match tcp.into_std() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "accepted connection not handed on");
                continue;
            }
        };
        let Some(worker) = workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            break;
        };
        worker.open.fetch_add(1, Ordering::Relaxed);
        if worker.conns.send((tcp, peer)).is_err() {
            worker.open.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(%peer, "serving thread gone; connection dropped");
        }
    }
    drop(listener);
    // Every thread learns at once that no more connections come: each drains, then
    // waits for the others.
    let dones: Vec<_> = workers.into_iter().map(|w| w.done).collect();
    let mut lost = 0;
    for done in dones {
        if done.await.is_err() {
            lost += 1;
        }
    }
    if lost > 0 {
        return Err(std::io::Error::other(format!(
            "{lost} serving thread(s) ended abnormally"
        )));
    }
    Ok(())
}

/// What one serving thread runs: the connections handed to it, then the drain.
struct Connections {
    rx: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    open: Arc<AtomicUsize>,
    acceptor: TlsAcceptor,
    app: Router,
    builder: Arc<ConnBuilder<Spread>>,
    draining: Draining,
}

/// The serving threads that have not drained yet, and a wake-up when none is left.
#[derive(Default)]
struct Drained {
    left: AtomicUsize,
    none_left: Notify,
}

impl Drained {
    async fn all(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.left.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One serving thread not drained yet: counted from before the thread starts until it has
/// drained, or until it is dropped in any other way (a thread that fails to start or
/// unwinds), so that no thread waits for one that will never drain.
struct Draining(Arc<Drained>);

impl Draining {
    fn new(drained: &Arc<Drained>) -> Draining {
        drained.left.fetch_add(1, Ordering::AcqRel);
        Draining(drained.clone())
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if self.0.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

impl Connections {
    async fn run(self) {
        let Connections {
            mut rx,
            open,
            acceptor,
            app,
            builder,
            draining,
        } = self;
        let graceful = GracefulShutdown::new();
        // Until the accept loop stops (shutdown) and drops its sender.
        while let Some((tcp, peer)) = rx.recv().await {
            let guard = OpenGuard(open.clone());
            let tcp = match tokio::net::TcpStream::from_std(tcp) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "connection not registered");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _guard = guard;
                let tls_stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "tls handshake timed out");
                            return;
                        }
                    };
                let service = TowerToHyperService::new(app);
                let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(DRAIN_TIMEOUT) => {
                tracing::warn!("connections still open after the drain timeout; closing");
            }
        }
        // Other threads' HTTP/2 streams may run here: stay until every thread has drained.
        let drained = draining.0.clone();
        drop(draining);
        drained.all().await;
    }
}
