//! Leader election over a Lease, against the in-repo Kubernetes API server double
//! (`apiserver-double`) driven by the real kube-rs client: two replicas never poll at
//! once; a clean stop hands over at once, a crashed leader after its lease runs out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_bridge::lease::{Attempt, LeaderElector, LeaseConfig};
use audit_bridge::CancellationToken;

fn cfg(identity: &str) -> LeaseConfig {
    let mut c = LeaseConfig::new("audit-bridge-cloudwatch", "default", identity);
    c.lease_duration_secs = 2;
    c.renew_deadline_secs = 1;
    c.retry_millis = 100;
    c
}

struct Work {
    active: AtomicUsize,
    max_active: AtomicUsize,
    runs: std::sync::Mutex<Vec<String>>,
}

fn replica(
    client: kube::Client,
    id: &'static str,
    work: Arc<Work>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let elector = LeaderElector::new(client, cfg(id));
    tokio::spawn(elector.run_while_leader(shutdown, move |token| {
        let work = work.clone();
        async move {
            let now = work.active.fetch_add(1, Ordering::SeqCst) + 1;
            work.max_active.fetch_max(now, Ordering::SeqCst);
            work.runs.lock().unwrap().push(id.to_string());
            token.cancelled().await;
            work.active.fetch_sub(1, Ordering::SeqCst);
        }
    }))
}

async fn wait_until(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poller_at_a_time_and_handover() {
    // Both ring and aws-lc-rs are compiled in (the AWS SDK brings the latter): choose.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = apiserver_double::ApiServerDouble::start().await.unwrap();
    let work = Arc::new(Work {
        active: AtomicUsize::new(0),
        max_active: AtomicUsize::new(0),
        runs: std::sync::Mutex::new(Vec::new()),
    });
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let a = replica(
        api.client().unwrap(),
        "replica-a",
        work.clone(),
        stop_a.clone(),
    );
    assert!(
        wait_until(
            || work.active.load(Ordering::SeqCst) == 1,
            Duration::from_secs(10)
        )
        .await
    );
    let b = replica(
        api.client().unwrap(),
        "replica-b",
        work.clone(),
        stop_b.clone(),
    );
    // B keeps trying while A renews: it never starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(work.runs.lock().unwrap().clone(), vec!["replica-a"]);
    let probe = LeaderElector::new(api.client().unwrap(), cfg("probe"));
    assert_eq!(
        probe.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy("replica-a".into())
    );

    // A stops cleanly: it releases, B takes over.
    stop_a.cancel();
    a.await.unwrap();
    assert!(
        wait_until(
            || work.runs.lock().unwrap().len() == 2,
            Duration::from_secs(10)
        )
        .await
    );
    assert_eq!(work.runs.lock().unwrap()[1], "replica-b");

    // B crashes (no release): A' takes over only after the lease duration.
    b.abort();
    let _ = b.await;
    work.active.store(0, Ordering::SeqCst);
    let crashed_at = tokio::time::Instant::now();
    let stop_c = CancellationToken::new();
    let c = replica(
        api.client().unwrap(),
        "replica-c",
        work.clone(),
        stop_c.clone(),
    );
    assert!(
        wait_until(
            || work.runs.lock().unwrap().len() == 3,
            Duration::from_secs(15)
        )
        .await
    );
    assert!(
        crashed_at.elapsed() >= Duration::from_millis(1000),
        "took over a lease that had not expired"
    );
    assert_eq!(
        work.max_active.load(Ordering::SeqCst),
        1,
        "two pollers ran at once"
    );
    stop_c.cancel();
    c.await.unwrap();
    let _ = stop_b;
}
