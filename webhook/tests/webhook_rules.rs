//! The webhook with the real rule engine: rules files, reload, the bundled library.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use webhook::policy::PolicyLoader;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/exec-and-pods.yaml");

async fn start_rules(
    files: Vec<std::path::PathBuf>,
    tweak: impl FnOnce(&mut webhook::cli::WebhookArgs),
) -> (Pki, Hook, reqwest::Client) {
    let pki = Pki::new();
    let mut a = args(&pki);
    a.rules = files.clone();
    tweak(&mut a);
    let hook = start_with(&a, Arc::new(PolicyLoader::new(files))).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    (pki, hook, c)
}

fn denied_by(v: &Value) -> String {
    assert_eq!(v["response"]["allowed"], false, "{v}");
    v["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn rules_deny_execs_by_user_group_namespace_label_and_command() {
    let (_pki, mut hook, c) = start_rules(vec![RULES.into()], |_| {}).await;

    // Allowed: an ordinary exec, recorded as a session.
    let (_, v) = post(
        &c,
        &hook.url,
        exec_review("ok-1", "default", "web-0", "alice", &["sh"]).to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    assert_eq!(v["response"]["auditAnnotations"]["session"], "ok-1");

    // By user.
    let (_, v) = post(
        &c,
        &hook.url,
        exec_review("u-1", "default", "web-0", "mallory", &["sh"]).to_string(),
    )
    .await;
    let msg = denied_by(&v);
    assert!(
        msg.contains("Exec By Blocked User")
            && msg.contains("session by blocked user mallory into default/web-0"),
        "{msg}"
    );

    // By group.
    let mut r = exec_review("g-1", "default", "web-0", "carol", &["sh"]);
    r["request"]["userInfo"]["groups"] = json!(["contractors", "system:authenticated"]);
    let msg = denied_by(&post(&c, &hook.url, r.to_string()).await.1);
    assert!(msg.contains("Exec By Blocked Group"), "{msg}");

    // By namespace.
    let msg = denied_by(
        &post(
            &c,
            &hook.url,
            exec_review("n-1", "locked-payments", "db-0", "alice", &["sh"]).to_string(),
        )
        .await
        .1,
    );
    assert!(
        msg.contains("Exec Into Locked Namespace") && msg.contains("locked-payments"),
        "{msg}"
    );

    // By command (argv[0]).
    let msg = denied_by(
        &post(
            &c,
            &hook.url,
            exec_review("c-1", "default", "web-0", "alice", &["rm", "-rf", "/data"]).to_string(),
        )
        .await
        .1,
    );
    assert!(
        msg.contains("Exec Of Destructive Command")
            && msg.contains("destructive exec (rm) by alice"),
        "{msg}"
    );

    // By pod label: the label is learnt from the pod's CREATE review.
    let (_, v) = post(
        &c,
        &hook.url,
        pod_review(
            "pod-1",
            "default",
            "vault-0",
            json!({"protected": "true", "team": "sec"}),
        )
        .to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let msg = denied_by(
        &post(
            &c,
            &hook.url,
            exec_review("l-1", "default", "vault-0", "alice", &["sh"]).to_string(),
        )
        .await
        .1,
    );
    assert!(
        msg.contains("Exec Into Protected Pod Label") && msg.contains("default/vault-0"),
        "{msg}"
    );
    // An unknown pod has no labels: allowed.
    let (_, v) = post(
        &c,
        &hook.url,
        exec_review("l-2", "default", "other-0", "alice", &["sh"]).to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true);

    // Sessions: only the two allowed execs.
    let mut sessions = Vec::new();
    while let Ok(Some(found)) =
        tokio::time::timeout(Duration::from_millis(200), hook.sink_rx.recv()).await
    {
        if let engine::Found::Session(s) = found {
            sessions.push(s.id);
        }
    }
    assert_eq!(sessions, vec!["ok-1", "l-2"]);
    hook.running.stop().await.unwrap();
}

#[tokio::test]
async fn scope_detect_mode_and_the_detect_only_switch() {
    let (_pki, hook, c) = start_rules(vec![RULES.into()], |_| {}).await;
    let mut host = pod_review("h-1", "staging-a", "web", json!({}));
    host["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let msg = denied_by(&post(&c, &hook.url, host.to_string()).await.1);
    assert!(
        msg.contains("Host Network Pod") && msg.contains("host network pod staging-a/web"),
        "{msg}"
    );

    // Outside the rule's scope: allowed with a warning.
    host["request"]["uid"] = json!("h-2");
    host["request"]["namespace"] = json!("prod-a");
    let (_, v) = post(&c, &hook.url, host.to_string()).await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Host Network Pod"),
        "{v}"
    );
    assert_eq!(
        v["response"]["auditAnnotations"]["detect"],
        "Host Network Pod"
    );

    // A detect rule: allowed with a warning.
    let (_, v) = post(
        &c,
        &hook.url,
        pod_review("t-1", "default", "p", json!({"team": "none"})).to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Pod Without Team Label"),
        "{v}"
    );
    hook.running.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("d.jsonl");
    let log2 = log.clone();
    let (_pki, hook, c) = start_rules(vec![RULES.into()], move |a| {
        a.detect_only = true;
        a.decision_log = Some(log2);
    })
    .await;
    host["request"]["uid"] = json!("h-3");
    host["request"]["namespace"] = json!("staging-a");
    let (_, v) = post(&c, &hook.url, host.to_string()).await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    hook.running.stop().await.unwrap();
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["request_uid"], "h-3");
    assert_eq!(line["outcome"], "allow");
    assert_eq!(line["would_outcome"], "deny");
    assert_eq!(line["rules"][0]["rule"], "Host Network Pod");
    assert_eq!(line["rules"][0]["mode"], "detect");
    assert!(line["would_response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("Host Network Pod"));
}

#[tokio::test]
async fn a_broken_rules_file_keeps_the_last_good_set_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::copy(RULES, &file).unwrap();
    let (_pki, hook, c) = start_rules(vec![file.clone()], |_| {}).await;
    let (_, v) = readyz(&c, &hook.url).await;
    assert_eq!(v["rules"]["generation"], 1);
    let count = v["rules"]["count"].as_u64().unwrap();
    assert_eq!(count, 7);

    // Break it: a condition with an unknown field.
    let broken = std::fs::read_to_string(RULES).unwrap().replace(
        "ka.user.name in (blocked_exec_users)",
        "ka.user.nam in (blocked_exec_users)",
    );
    std::fs::write(&file, broken).unwrap();
    let mut err = None;
    for _ in 0..800 {
        let (status, v) = readyz(&c, &hook.url).await;
        if let Some(e) = v["rules"]["last_reload_error"].as_str() {
            assert_eq!(status, 200, "the last good set keeps serving: ready");
            assert_eq!(v["rules"]["generation"], 1);
            err = Some(e.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let err = err.expect("the broken file was never reported");
    assert!(
        err.contains("rules.yaml") && err.contains("ka.user.nam"),
        "{err}"
    );
    // The last good set still denies.
    let msg = denied_by(
        &post(
            &c,
            &hook.url,
            exec_review("b-1", "default", "web-0", "mallory", &["sh"]).to_string(),
        )
        .await
        .1,
    );
    assert!(msg.contains("Exec By Blocked User"));
    let metrics = c
        .get(format!("{}/metrics", hook.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &metrics,
            "tether_webhook_errors_total{kind=\"rules_reload\"}"
        ),
        Some(1.0)
    );

    // Fixed, with mallory no longer blocked: generation 2, the new set serves.
    let fixed = std::fs::read_to_string(RULES)
        .unwrap()
        .replace("items: [mallory]", "items: [trudy]");
    std::fs::write(&file, fixed).unwrap();
    assert!(rules_generation(&c, &hook.url, 2).await, "never recovered");
    assert!(readyz(&c, &hook.url).await.1["rules"]["last_reload_error"].is_null());
    let (_, v) = post(
        &c,
        &hook.url,
        exec_review("b-2", "default", "web-0", "mallory", &["sh"]).to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    hook.running.stop().await.unwrap();
}

#[tokio::test]
async fn bundled_library_serves_without_rules_files() {
    let (_pki, hook, c) = start_rules(vec![], |_| {}).await;
    let (_, v) = readyz(&c, &hook.url).await;
    assert_eq!(v["rules"]["source"], "bundled library");
    assert!(v["rules"]["count"].as_u64().unwrap() > 10, "{v}");
    // A privileged pod hits the library's rules (detect by default: allowed, warned).
    let mut p = pod_review("lib-1", "default", "priv", json!({}));
    p["request"]["object"]["spec"]["containers"][0]["securityContext"] =
        json!({"privileged": true});
    let (_, v) = post(&c, &hook.url, p.to_string()).await;
    assert_eq!(v["response"]["uid"], "lib-1");
    let warnings = v["response"]["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let denied = v["response"]["allowed"] == false;
    assert!(
        denied
            || warnings
                .iter()
                .any(|w| w.as_str().unwrap().to_lowercase().contains("privileged")),
        "{v}"
    );
    // The captured benign pod passes.
    let (_, v) = post(
        &c,
        &hook.url,
        fixture("apiserver-captures/admission-pod-create-good-pod-allowed.json"),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    hook.running.stop().await.unwrap();
}

/// Reviews are parsed without the objects' managedFields only while no rule reads them: a
/// rules file that starts reading them is served with them from its first generation.
#[tokio::test]
async fn managed_fields_are_read_when_a_rule_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    let pods = "- rule: Pod Created\n  desc: d\n  condition: ka.verb = create and ka.target.resource = pods\n  output: pod created (name=%ka.target.name)\n  priority: NOTICE\n  source: k8s_admission\n";
    std::fs::write(&file, pods).unwrap();
    let (_pki, hook, c) = start_rules(vec![file.clone()], |_| {}).await;
    let mut review = pod_review("mf-1", "default", "p", json!({}));
    review["request"]["object"]["metadata"]["managedFields"][0]["manager"] = json!("evil-operator");
    let (_, v) = post(&c, &hook.url, review.to_string()).await;
    assert_eq!(v["response"]["allowed"], true, "{v}");

    let reader = format!(
        "{pods}- rule: Pod Written By Untrusted Manager\n  desc: d\n  condition: ka.verb = create and json[$.requestObject.metadata.managedFields[?@.manager == 'evil-operator']] exists\n  output: pod written by evil-operator (name=%ka.target.name)\n  priority: WARNING\n  source: k8s_admission\n  tether:\n    mode: enforce\n"
    );
    std::fs::write(&file, reader).unwrap();
    assert!(
        rules_generation(&c, &hook.url, 2).await,
        "the new rules were never loaded"
    );
    review["request"]["uid"] = json!("mf-2");
    let msg = denied_by(&post(&c, &hook.url, review.to_string()).await.1);
    assert!(
        msg.contains("pod written by evil-operator (name=p)"),
        "{msg}"
    );
    // Another manager: allowed.
    review["request"]["uid"] = json!("mf-3");
    review["request"]["object"]["metadata"]["managedFields"][0]["manager"] = json!("kubectl");
    let (_, v) = post(&c, &hook.url, review.to_string()).await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    hook.running.stop().await.unwrap();
}
