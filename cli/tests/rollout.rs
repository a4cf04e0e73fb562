//! `tether rollout report` on a real decision log written by `tether webhook`, plus alert
//! lines as `tether node` and Falco write them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../webhook/tests/data/exec-and-pods.yaml"
);
const CAPTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/apiserver-captures"
);

struct Stop(Child);
impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn capture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(format!("{CAPTURES}/{name}")).unwrap()).unwrap()
}

/// A pod CREATE review: `host_network` pod `name` in `ns` by `user`.
fn pod_review(uid: &str, ns: &str, name: &str, user: &str) -> Value {
    let mut r = capture("admission-pod-create-good-pod-allowed.json");
    let req = &mut r["request"];
    req["uid"] = json!(uid);
    req["namespace"] = json!(ns);
    req["name"] = json!(name);
    req["userInfo"]["username"] = json!(user);
    req["object"]["metadata"]["namespace"] = json!(ns);
    req["object"]["metadata"]["name"] = json!(name);
    req["object"]["spec"]["hostNetwork"] = json!(true);
    r
}

fn exec_review(uid: &str, user: &str) -> Value {
    let mut r = capture("admission-pod-exec-connect-post-stdin-sh.json");
    r["request"]["uid"] = json!(uid);
    r["request"]["userInfo"]["username"] = json!(user);
    r
}

fn report(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(TETHER)
        .args(["rollout", "report"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rule<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {doc:#}"))
}

#[test]
fn reports_what_enforcement_did_and_would_have_done() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(TETHER)
        .args([
            "certs",
            "generate",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let port = free_port();
    let log = dir.path().join("decisions.jsonl");
    let webhook = Stop(
        Command::new(TETHER)
            .args(["webhook", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(["--rules", RULES, "--decision-log"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.crt")).unwrap()).unwrap();
    let http = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let post = |review: &Value| -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http
                .post(format!("https://localhost:{port}/validate"))
                .json(review)
                .send()
            {
                Ok(r) => return r.json().unwrap(),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("webhook not answering: {e}"),
            }
        }
    };
    // "Host Network Pod" enforces in staging-* only: denied there, allowed elsewhere.
    let staging = post(&pod_review("u1", "staging-a", "web-1", "alice"));
    assert_eq!(staging["response"]["allowed"], false, "{staging:#}");
    for (uid, name) in [("u2", "web-2"), ("u3", "web-3")] {
        let prod = post(&pod_review(uid, "prod", name, "bob"));
        assert_eq!(prod["response"]["allowed"], true, "{prod:#}");
    }
    let exec = post(&exec_review("u4", "mallory"));
    assert_eq!(exec["response"]["allowed"], false, "{exec:#}");
    // A detect rule: allowed with a warning; enforcing it would have denied.
    let mut team = pod_review("u5", "prod", "web-4", "bob");
    team["request"]["object"]["spec"]["hostNetwork"] = json!(false);
    team["request"]["object"]["metadata"]["labels"] = json!({"team": "none"});
    let team = post(&team);
    assert_eq!(team["response"]["allowed"], true, "{team:#}");
    // The log's writer flushes as it drains; wait for the five lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < 5
    {
        assert!(Instant::now() < deadline, "decision log incomplete");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(webhook);

    // Alerts: a node alert whose kill was a dry-run (detect mode), one carried out, one
    // Falco alert (no mode, no actions), an old one, and a broken line.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let node_alert = |mode: &str, dry_run: bool, when: &str| {
        json!({
            "time": when, "rule": "Terminal shell in container", "priority": "Notice",
            "output": "shell", "source": "syscall", "tags": [], "hostname": "n1",
            "output_fields": {"k8s.ns.name": "prod", "user.name": "root"},
            "mode": mode,
            "session": {"id": "s1", "kind": "exec", "user": "carol", "groups": [], "uid": "",
                        "auditid": "", "command": ["sh"], "sourceips": [], "started_ns": 1,
                        "confidence": "exact"},
            "actions": [{"kind": "kill", "target": "pod/prod/web-2 pid/7", "dry_run": dry_run,
                         "status": if dry_run { "skipped" } else { "done" }, "error": null},
                        {"kind": "isolate", "target": "pod/prod/web-2 cgroup/1", "dry_run": dry_run,
                         "status": "skipped", "reason": "already isolated"}]
        })
        .to_string()
    };
    let falco = json!({
        "time": now, "rule": "Read sensitive file untrusted", "priority": "Warning",
        "output": "read /etc/shadow", "source": "syscall", "tags": [], "hostname": "n2",
        "output_fields": {"k8s.ns.name": "<NA>", "user.name": "root"}
    })
    .to_string();
    std::fs::write(
        &alerts,
        [
            node_alert("detect", true, &now),
            node_alert("enforce", false, &now),
            "{not json".to_string(),
            falco,
            node_alert("detect", true, "2020-01-01T00:00:00Z"),
        ]
        .join("\n"),
    )
    .unwrap();

    let (code, stdout, stderr) = report(&[
        "--output",
        "json",
        "--since",
        "24h",
        log.to_str().unwrap(),
        alerts.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3: not JSON", alerts.display())),
        "{stderr}"
    );
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["decisions"], 5);
    assert_eq!(doc["alerts"], 3);
    assert_eq!(doc["left_out_older"], 1);
    assert_eq!(doc["skipped_lines"], 1);

    let host = rule(&doc, "Host Network Pod");
    assert_eq!(host["matched"], 3);
    assert_eq!(host["denied"], 1);
    assert_eq!(host["would_deny"], 0);
    assert_eq!(host["out_of_scope"], 2);
    assert_eq!(host["namespaces"], json!({"prod": 2, "staging-a": 1}));
    assert_eq!(host["users"], json!({"alice": 1, "bob": 2}));
    assert_eq!(host["modes"], json!({"detect": 2, "enforce": 1}));

    let team = rule(&doc, "Pod Without Team Label");
    assert_eq!(team["matched"], 1);
    assert_eq!(team["would_deny"], 1);
    assert_eq!(team["out_of_scope"], 0);

    let blocked = rule(&doc, "Exec By Blocked User");
    assert_eq!(blocked["denied"], 1);
    assert_eq!(blocked["would_deny"], 0);
    assert_eq!(blocked["users"], json!({"mallory": 1}));

    let shell = rule(&doc, "Terminal shell in container");
    assert_eq!(shell["matched"], 2);
    assert_eq!(shell["actions"], json!({"kill": 1}));
    assert_eq!(shell["would_actions"], json!({"isolate": 1, "kill": 1}));
    assert_eq!(shell["actions_skipped"], 1);
    assert_eq!(shell["users"], json!({"carol": 2}));

    let falco = rule(&doc, "Read sensitive file untrusted");
    assert_eq!(falco["modes"], json!({"detect": 1}));
    assert_eq!(falco["namespaces"], json!({}));
    assert_eq!(falco["users"], json!({"root": 1}));

    // Text, one rule.
    let (code, stdout, stderr) = report(&["--rule", "Host Network Pod", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "admission: denied 1, would have denied 0 more in enforce mode, 2 outside its enforcement scope"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("namespaces: prod (2), staging-a (1)"),
        "{stdout}"
    );
    assert!(!stdout.contains("Exec By Blocked User"), "{stdout}");

    // --strict stops at the broken line, naming it.
    let (code, _, stderr) = report(&["--strict", alerts.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains(":3: not JSON"), "{stderr}");
    // A missing file and a bad duration are named.
    let (code, _, stderr) = report(&["/nonexistent/decisions.jsonl"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/decisions.jsonl"), "{stderr}");
    let (code, _, stderr) = report(&["--since", "3w", log.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown unit"), "{stderr}");
    let _ = Path::new(RULES);
}
