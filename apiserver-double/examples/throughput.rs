//! Throughput of the double driven by kube-rs on loopback: creates, gets, lists, patches, and
//! watch delivery. Run: `cargo run --release -p apiserver-double --example throughput [N]`.

use std::error::Error;
use std::time::Instant;

use apiserver_double::ApiServerDouble;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn pod(i: usize) -> Result<Pod, serde_json::Error> {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p-{i}"), "labels": {"app": if i % 2 == 0 { "even" } else { "odd" }}},
        "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "busybox"}]}
    }))
}

fn rate(what: &str, n: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what:<34} {n:>6} in {secs:>7.3} s  = {:>9.0} /s",
        n as f64 / secs
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2000);
    for tls in [false, true] {
        let d = ApiServerDouble::builder().tls(tls).spawn().await?;
        println!("-- {} --", if tls { "https" } else { "http" });
        let pods: Api<Pod> = Api::namespaced(d.client()?, "default");
        let from = d.resource_version().to_string();
        let mut watch = pods.watch(&WatchParams::default(), &from).await?.boxed();

        let t = Instant::now();
        for i in 0..n {
            pods.create(&PostParams::default(), &pod(i)?).await?;
        }
        rate("create (sequential)", n, t);

        let t = Instant::now();
        let mut seen = 0;
        while seen < n {
            match watch.try_next().await? {
                Some(WatchEvent::Added(_)) => seen += 1,
                Some(_) => {}
                None => return Err("watch ended early".into()),
            }
        }
        rate("watch events drained after creates", n, t);

        let t = Instant::now();
        for i in 0..n {
            pods.get(&format!("p-{i}")).await?;
        }
        rate("get (sequential)", n, t);

        let t = Instant::now();
        let clients: Vec<_> = (0..8).map(|_| pods.clone()).collect();
        let per = n / clients.len();
        let jobs = clients.into_iter().enumerate().map(|(c, api)| async move {
            for i in 0..per {
                api.get(&format!("p-{}", c * per + i)).await?;
            }
            Ok::<(), kube::Error>(())
        });
        for r in futures::future::join_all(jobs).await {
            r?;
        }
        rate("get (8 concurrent tasks)", per * 8, t);

        let t = Instant::now();
        for i in 0..n {
            let p = json!({"metadata": {"labels": {"seen": "yes"}}});
            pods.patch(
                &format!("p-{i}"),
                &PatchParams::default(),
                &Patch::Strategic(p),
            )
            .await?;
        }
        rate("strategic patch (sequential)", n, t);

        let t = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            let l = pods.list(&ListParams::default().labels("app=even")).await?;
            if l.items.len() != n.div_ceil(2) {
                return Err(format!("list returned {} items", l.items.len()).into());
            }
        }
        rate(
            &format!("list {} of {n} by label", n.div_ceil(2)),
            rounds,
            t,
        );
        d.shutdown().await;
    }
    Ok(())
}
