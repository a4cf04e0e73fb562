//! The webhook over real HTTPS from clients that trust only the generated CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde::Deserialize;
use serde_json::{json, Value};
use webhook::rules::{EvalError, Rules, RulesLoader};

#[tokio::test]
async fn fixtures_answered_in_their_version_with_their_uid() {
    let pki = Pki::new();
    let hook = start_with(&args(&pki), scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;

    // kubernetes/api testdata: every field populated, operation "operationValue" and a
    // response present: parses, but is not a valid request -> invalid, same version.
    for (file, version) in [
        (
            "admission.k8s.io.v1.AdmissionReview.json",
            "admission.k8s.io/v1",
        ),
        (
            "admission.k8s.io.v1beta1.AdmissionReview.json",
            "admission.k8s.io/v1beta1",
        ),
    ] {
        let (status, v) = post(
            &c,
            &hook.url,
            fixture(&format!("kubernetes-api/testdata/HEAD/{file}")),
        )
        .await;
        assert_eq!(status, 200, "{file}");
        assert_eq!(v["apiVersion"], version);
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "uidValue");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 400);
        assert!(v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("response already"));
    }
    // The same testdata made valid, as v1beta1: allowed, answered as v1beta1.
    let mut beta: Value = serde_json::from_slice(&fixture(
        "kubernetes-api/testdata/HEAD/admission.k8s.io.v1beta1.AdmissionReview.json",
    ))
    .unwrap();
    beta.as_object_mut().unwrap().remove("response");
    beta["request"]["operation"] = json!("UPDATE");
    // Its object is a `CustomType`; the request must say so.
    beta["request"]["kind"]["kind"] = beta["request"]["object"]["kind"].clone();
    let (status, v) = post(&c, &hook.url, beta.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(v["response"]["allowed"], true, "{v}");

    // apiserver captures.
    for file in [
        "admission-pod-create-good-pod-allowed.json",
        "admission-pod-exec-connect-post-stdin-sh.json",
        "admission-pod-exec-connect-websocket-get.json",
    ] {
        let body = fixture(&format!("apiserver-captures/{file}"));
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let (status, v) = post(&c, &hook.url, body).await;
        assert_eq!(status, 200, "{file}");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["response"]["uid"], sent["request"]["uid"]);
        assert_eq!(v["response"]["allowed"], true);
    }
    hook.running.stop().await.unwrap();
}

fn kyverno_reviews() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let root = format!("{FIXTURES}/kyverno-pod-security");
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "resource.yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
                    let Ok(obj) = Value::deserialize(doc) else {
                        continue;
                    };
                    if obj.is_null() {
                        continue;
                    }
                    let kind = obj["kind"].as_str().unwrap_or("").to_string();
                    let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
                    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
                    let resource = format!("{}s", kind.to_lowercase());
                    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let uid = format!("kyverno-{}-{i}", out.len());
                    let review = json!({
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "request": {
                            "uid": uid,
                            "kind": {"group": group, "version": version, "kind": kind},
                            "resource": {"group": group, "version": version, "resource": resource},
                            "name": name,
                            "namespace": obj["metadata"]["namespace"].as_str().unwrap_or("default"),
                            "operation": "CREATE",
                            "userInfo": {"username": "kyverno-test", "groups": ["system:authenticated"]},
                            "object": obj,
                            "oldObject": null,
                            "dryRun": false,
                        }
                    });
                    out.push((format!("{}#{i}", path.display()), review));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn kyverno_resources_wrapped_in_reviews_are_all_answered() {
    let pki = Pki::new();
    let hook = start_with(&args(&pki), scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let reviews = kyverno_reviews();
    assert!(
        reviews.len() > 100,
        "only {} kyverno resources",
        reviews.len()
    );
    for (name, review) in reviews {
        let (status, v) = post(&c, &hook.url, review.to_string()).await;
        assert_eq!(status, 200, "{name}: {v}");
        assert_eq!(v["response"]["uid"], review["request"]["uid"], "{name}");
        assert_eq!(v["response"]["allowed"], true, "{name}: {v}");
    }
    hook.running.stop().await.unwrap();
}

#[tokio::test]
async fn exec_sessions_over_post_and_websocket_shapes() {
    let pki = Pki::new();
    let mut hook = start_with(&args(&pki), scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    for (file, command) in [
        ("admission-pod-exec-connect-post-stdin-sh.json", "sh"),
        ("admission-pod-exec-connect-websocket-get.json", "id"),
    ] {
        let body = fixture(&format!("apiserver-captures/{file}"));
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let uid = sent["request"]["uid"].as_str().unwrap().to_string();
        let (status, v) = post(&c, &hook.url, body).await;
        assert_eq!(status, 200);
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["auditAnnotations"]["session"], uid.as_str());
        // The session reaches the sink, then the decision.
        let mut session = None;
        while session.is_none() {
            match tokio::time::timeout(Duration::from_secs(5), hook.sink_rx.recv())
                .await
                .unwrap()
                .unwrap()
            {
                engine::Found::Session(s) => session = Some(s),
                engine::Found::Decision(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let s = session.unwrap();
        assert_eq!(s.id, uid);
        assert_eq!(s.kind, engine::SessionKind::Exec);
        assert_eq!(s.user, "kapi-admin");
        assert_eq!(s.namespace, "default");
        assert_eq!(s.pod, "good-pod");
        assert_eq!(s.container.as_deref(), Some("c"));
        assert_eq!(s.command, vec![command]);
    }
    // attach and portforward are sessions too.
    for (sub, kind) in [
        ("attach", engine::SessionKind::Attach),
        ("portforward", engine::SessionKind::Portforward),
    ] {
        let mut v = exec_review(&format!("{sub}-1"), "default", "good-pod", "bob", &[]);
        v["request"]["subResource"] = json!(sub);
        v["request"]["kind"]["kind"] = json!("PodAttachOptions");
        v["request"]["object"] =
            json!({"kind": "PodAttachOptions", "apiVersion": "v1", "container": "c"});
        let (_, resp) = post(&c, &hook.url, v.to_string()).await;
        assert_eq!(
            resp["response"]["auditAnnotations"]["session"],
            format!("{sub}-1")
        );
        loop {
            if let engine::Found::Session(s) = hook.sink_rx.recv().await.unwrap() {
                assert_eq!(s.kind, kind);
                assert_eq!(s.user, "bob");
                break;
            }
        }
    }
    // A denied exec opens no session and carries no session annotation.
    let v = exec_review(
        "denied-1",
        "default",
        "good-pod",
        "mallory",
        &["deny-me", "-c", "id"],
    );
    let (_, resp) = post(&c, &hook.url, v.to_string()).await;
    assert_eq!(resp["response"]["allowed"], false);
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Scripted exec deny") && msg.contains("exec deny-me by mallory"),
        "{msg}"
    );
    assert!(resp["response"]["auditAnnotations"]
        .get("session")
        .is_none());
    loop {
        match hook.sink_rx.recv().await.unwrap() {
            engine::Found::Session(s) => {
                assert_ne!(s.id, "denied-1", "a denied exec opened a session")
            }
            engine::Found::Decision(d) if d.request_uid == "denied-1" => {
                assert_eq!(d.outcome, engine::DecisionOutcome::Deny);
                assert_eq!(d.user, "mallory");
                break;
            }
            engine::Found::Decision(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    hook.running.stop().await.unwrap();
}

/// Malformed bodies: HTTP 400 with a message naming what is wrong.
#[tokio::test]
async fn malformed_bodies_get_400_with_a_precise_message() {
    let pki = Pki::new();
    let hook = start_with(&args(&pki), scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let deep = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","object":{}1{}}}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let base = |extra: &str| {
        format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"{extra}}}"#)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "body is empty"),
        (b"   \n".to_vec(), "body is empty"),
        (b"{".to_vec(), "truncated JSON"),
        (b"{\"apiVersion\": }".to_vec(), "not valid JSON"),
        (b"not json at all".to_vec(), "not valid JSON"),
        (b"\xff\xfe\x00garbage".to_vec(), "not valid JSON"),
        (b"[]".to_vec(), "body is an array"),
        (b"\"AdmissionReview\"".to_vec(), "body is a string"),
        (b"42".to_vec(), "body is a number"),
        (b"null".to_vec(), "body is null"),
        (b"true".to_vec(), "body is a boolean"),
        (b"{}".to_vec(), "apiVersion is missing"),
        (
            br#"{"apiVersion":["admission.k8s.io/v1"]}"#.to_vec(),
            "apiVersion is an array",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#.to_vec(),
            "\"admission.k8s.io/v2\" is not supported",
        ),
        (
            br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(),
            "\"v1\" is not supported",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1"}"#.to_vec(),
            "kind is missing",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionResponse"}"#.to_vec(),
            "kind is \"AdmissionResponse\"",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":7}"#.to_vec(),
            "kind is a number",
        ),
        (base("").into_bytes(), "request is missing"),
        (
            base(r#","request":null"#).into_bytes(),
            "request is missing",
        ),
        (base(r#","request":[]"#).into_bytes(), "request is an array"),
        (
            base(r#","request":"x""#).into_bytes(),
            "request is a string",
        ),
        (
            base(r#","request":{}"#).into_bytes(),
            "request.uid is missing",
        ),
        (
            base(r#","request":{"uid":""}"#).into_bytes(),
            "request.uid is empty",
        ),
        (
            base(r#","request":{"uid":12}"#).into_bytes(),
            "request.uid is a number",
        ),
        (
            base(r#","request":{"uid":"u"}} trailing"#).into_bytes(),
            "not valid JSON",
        ),
        (deep.into_bytes(), "recursion limit"),
    ];
    assert!(cases.len() >= 20);
    for (body, want) in &cases {
        let r = c
            .post(format!("{}/validate", hook.url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{:?}", String::from_utf8_lossy(body));
        let v: Value = r.json().await.unwrap();
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(want),
            "{:?}: got {msg:?}, want {want:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["code"], 400);
    }
    // Wrong media type.
    let r = c
        .post(format!("{}/validate", hook.url))
        .header("content-type", "application/yaml")
        .body("a: b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Wrong method and path.
    assert_eq!(
        c.get(format!("{}/validate", hook.url))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        c.get(format!("{}/nope", hook.url))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let metrics = c
        .get(format!("{}/metrics", hook.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let malformed = metric(&metrics, "tether_webhook_errors_total{kind=\"malformed\"}").unwrap();
    assert_eq!(malformed as usize, cases.len());
    hook.running.stop().await.unwrap();
}

/// Reviews that parse but are wrong: an `invalid` AdmissionResponse in the same version.
#[tokio::test]
async fn wrong_requests_get_an_invalid_response() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&pki);
    a.decision_log = Some(dir.path().join("d.jsonl"));
    let hook = start_with(&a, scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let good: Value = serde_json::from_slice(&fixture(
        "apiserver-captures/admission-pod-exec-connect-post-stdin-sh.json",
    ))
    .unwrap();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| {
                v["request"].as_object_mut().unwrap().remove("operation");
            }),
            "request.operation is missing",
        ),
        (
            Box::new(|v| v["request"]["operation"] = json!("PATCH")),
            "\"PATCH\" is not one of",
        ),
        (
            Box::new(|v| v["request"]["operation"] = json!(1)),
            "request.operation is a number",
        ),
        (
            Box::new(|v| {
                v["request"].as_object_mut().unwrap().remove("resource");
            }),
            "request.resource is missing",
        ),
        (
            Box::new(|v| v["request"]["resource"] = json!("pods")),
            "request.resource is a string",
        ),
        (
            Box::new(|v| v["request"]["resource"] = json!({"group": ""})),
            "request.resource.resource is missing",
        ),
        (
            Box::new(|v| {
                v["request"].as_object_mut().unwrap().remove("kind");
            }),
            "request.kind is missing",
        ),
        (
            Box::new(|v| {
                v["request"].as_object_mut().unwrap().remove("userInfo");
            }),
            "request.userInfo is missing",
        ),
        (
            Box::new(|v| v["request"]["userInfo"]["groups"] = json!("admins")),
            "request.userInfo.groups is a string",
        ),
        (
            Box::new(|v| v["request"]["userInfo"]["groups"] = json!(["a", 2])),
            "request.userInfo.groups[1] is a number",
        ),
        (
            Box::new(|v| v["request"]["userInfo"]["username"] = json!({})),
            "request.userInfo.username is an object",
        ),
        (
            Box::new(|v| v["request"]["userInfo"]["extra"] = json!({"k": "v"})),
            "request.userInfo.extra[\"k\"] is a string",
        ),
        (
            Box::new(|v| v["request"]["namespace"] = json!(["default"])),
            "request.namespace is an array",
        ),
        (
            Box::new(|v| v["request"]["object"] = json!("sh")),
            "request.object is a string",
        ),
        (
            Box::new(|v| v["request"]["object"] = json!(null)),
            "request.object is missing for operation CONNECT",
        ),
        (
            Box::new(|v| v["request"]["object"]["command"] = json!("sh -c id")),
            "request.object.command is a string",
        ),
        (
            Box::new(|v| v["request"]["object"]["command"] = json!(["sh", null])),
            "request.object.command[1] is null",
        ),
        (
            Box::new(|v| v["request"]["object"]["tty"] = json!("yes")),
            "request.object.tty is a string",
        ),
        (
            Box::new(|v| v["request"]["dryRun"] = json!("false")),
            "request.dryRun is a string",
        ),
        (
            Box::new(|v| v["request"]["object"]["kind"] = json!("Pod")),
            "request.object.kind \"Pod\" does not match request.kind.kind \"PodExecOptions\"",
        ),
        (
            Box::new(|v| v["response"] = json!({"uid": "x", "allowed": true})),
            "carries a response already",
        ),
    ];
    for (i, (edit, want)) in cases.iter().enumerate() {
        for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
            let mut v = good.clone();
            v["apiVersion"] = json!(version);
            v["request"]["uid"] = json!(format!("invalid-{i}"));
            edit(&mut v);
            let (status, resp) = post(&c, &hook.url, v.to_string()).await;
            assert_eq!(status, 200, "case {i}");
            assert_eq!(resp["apiVersion"], version);
            assert_eq!(resp["response"]["uid"], format!("invalid-{i}"));
            assert_eq!(resp["response"]["allowed"], false);
            assert_eq!(resp["response"]["status"]["code"], 400);
            assert_eq!(resp["response"]["status"]["reason"], "BadRequest");
            let msg = resp["response"]["status"]["message"].as_str().unwrap();
            assert!(msg.contains(want), "case {i}: got {msg:?}, want {want:?}");
        }
    }
    hook.running.stop().await.unwrap();
    // Each invalid answer is a decision too.
    let text = std::fs::read_to_string(dir.path().join("d.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), cases.len() * 2);
    assert_eq!(lines[0]["request_uid"], "invalid-0");
    assert_eq!(lines[0]["outcome"], "deny");
    assert!(lines[0]["message"]
        .as_str()
        .unwrap()
        .contains("request.operation is missing"));
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Sync {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn oversize_and_stalled_bodies() {
    let pki = Pki::new();
    let mut a = args(&pki);
    a.max_body_bytes = 64 * 1024;
    a.body_timeout_ms = 500;
    let hook = start_with(&a, scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let mut big = pod_review("big", "default", "p", json!({}));
    big["request"]["object"]["metadata"]["annotations"] = json!({"x": "y".repeat(100 * 1024)});
    let body = big.to_string();
    // With a Content-Length: the body is read to its end and discarded, so the client,
    // still sending, gets the answer, and the connection stays usable.
    let r = c
        .post(format!("{}/validate", hook.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.headers().get("connection").is_none(), "{:?}", r.headers());
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit of 65536 bytes"),
        "{v}"
    );
    // Chunked, without a Content-Length: the limit holds while reading.
    let chunks: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>> = body
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(c))))
        .collect();
    let stream = http_body_util::StreamBody::new(futures::stream::iter(chunks));
    let (status, v) = post(&c, &hook.url, reqwest::Body::wrap(stream)).await;
    assert_eq!(status, 413);
    assert!(
        v["message"].as_str().unwrap().contains("exceeds the limit"),
        "{v}"
    );
    // A body that stalls: 408 after the body timeout (500 ms here).
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(1);
    tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
        b"{\"apiVersion\":",
    ))))
    .await
    .unwrap();
    let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let r = c
        .post(format!("{}/validate", hook.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    // Answered before the body ended: the connection cannot carry another request.
    assert_eq!(r.headers()["connection"], "close");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("body not received within 500 ms"),
        "{v}"
    );
    drop(tx);
    // A review under the limit still passes on the same server.
    let (status, _) = post(
        &c,
        &hook.url,
        pod_review("small", "default", "p", json!({})).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    hook.running.stop().await.unwrap();
}

#[tokio::test]
async fn decisions_enforce_detect_scope_and_detect_only() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&pki);
    a.decision_log = Some(dir.path().join("decisions.jsonl"));
    let hook = start_with(&a, scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;

    let (_, v) = post(
        &c,
        &hook.url,
        pod_review(
            "e1",
            "prod",
            "web",
            json!({"test.tether.io/hit": "enforce"}),
        )
        .to_string(),
    )
    .await;
    let r = &v["response"];
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rule \"Scripted enforce\": scripted hit on prod/web by kapi-admin"),
        "{msg}"
    );
    assert_eq!(r["auditAnnotations"]["deny"], "Scripted enforce");

    let (_, v) = post(
        &c,
        &hook.url,
        pod_review("d1", "prod", "web", json!({"test.tether.io/hit": "detect"})).to_string(),
    )
    .await;
    let r = &v["response"];
    assert_eq!(r["allowed"], true);
    assert!(r["warnings"][0]
        .as_str()
        .unwrap()
        .contains("Scripted detect"));
    assert_eq!(r["auditAnnotations"]["detect"], "Scripted detect");

    let (_, v) = post(
        &c,
        &hook.url,
        pod_review(
            "s1",
            "prod",
            "web",
            json!({"test.tether.io/hit": "enforce", "test.tether.io/scope": "out"}),
        )
        .to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true, "out of scope only detects");
    assert_eq!(
        v["response"]["auditAnnotations"]["detect"],
        "Scripted enforce"
    );
    hook.running.stop().await.unwrap();

    // Decision log: one line per decision, with what enforcement would have done.
    let text = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["request_uid"], "e1");
    assert_eq!(lines[0]["user"], "kapi-admin");
    assert_eq!(lines[0]["outcome"], "deny");
    assert_eq!(lines[0]["rules"][0]["mode"], "enforce");
    assert_eq!(lines[2]["request_uid"], "s1");
    assert_eq!(lines[2]["outcome"], "allow");
    assert_eq!(
        lines[2]["would_outcome"], "allow",
        "out of scope: enforcement would not deny"
    );
    assert_eq!(lines[2]["rules"][0]["mode"], "detect");
    assert_eq!(lines[1]["request_uid"], "d1");
    assert_eq!(lines[1]["would_outcome"], "deny");
    assert_eq!(lines[1]["would_response"]["allowed"], false);

    // Detect-only: the enforcing rule only warns; the log says it would have denied.
    let pki = Pki::new();
    let mut a = args(&pki);
    a.detect_only = true;
    a.decision_log = Some(dir.path().join("detect-only.jsonl"));
    let hook = start_with(&a, scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let (_, v) = post(
        &c,
        &hook.url,
        pod_review(
            "e2",
            "prod",
            "web",
            json!({"test.tether.io/hit": "enforce"}),
        )
        .to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("Scripted enforce"));
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
            "tether_webhook_rule_hits_total{rule=\"Scripted enforce\",mode=\"detect\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&metrics, "tether_webhook_reviews_total{operation=\"CREATE\",resource=\"pods\",decision=\"allow\"}"), Some(1.0));
    hook.running.stop().await.unwrap();
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(dir.path().join("detect-only.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["detect_only"], true);
    assert_eq!(line["would_outcome"], "deny");
}

#[tokio::test]
async fn budget_overruns_and_errors_follow_the_failure_mode() {
    for mode in [webhook::FailureMode::Allow, webhook::FailureMode::Deny] {
        let pki = Pki::new();
        let mut a = args(&pki);
        a.eval_budget_ms = 50;
        a.failure_mode = mode;
        let hook = start_with(&a, scripted()).await;
        let c = client(&pki.ca_pem());
        ready(&hook.url, &c).await;
        let (_, v) = post(
            &c,
            &hook.url,
            pod_review(
                "slow",
                "prod",
                "web",
                json!({"test.tether.io/sleep-ms": "400", "test.tether.io/hit": "enforce"}),
            )
            .to_string(),
        )
        .await;
        let allowed = mode == webhook::FailureMode::Allow;
        assert_eq!(v["response"]["allowed"], allowed, "{v}");
        let text = if allowed {
            v["response"]["warnings"][0].clone()
        } else {
            v["response"]["status"]["message"].clone()
        };
        assert!(
            text.as_str()
                .unwrap()
                .contains("exceeded its budget of 50 ms"),
            "{v}"
        );
        let (_, v) = post(
            &c,
            &hook.url,
            pod_review(
                "err",
                "prod",
                "web",
                json!({"test.tether.io/error": "regex blew up"}),
            )
            .to_string(),
        )
        .await;
        assert_eq!(v["response"]["allowed"], allowed, "{v}");
        assert_eq!(
            v["response"]["auditAnnotations"]["error"],
            "evaluation failed: regex blew up"
        );
        let metrics = c
            .get(format!("{}/metrics", hook.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            metric(&metrics, "tether_webhook_errors_total{kind=\"budget\"}"),
            Some(1.0)
        );
        assert_eq!(
            metric(&metrics, "tether_webhook_errors_total{kind=\"internal\"}"),
            Some(1.0)
        );
        assert_eq!(metric(&metrics, "tether_webhook_reviews_total{operation=\"CREATE\",resource=\"pods\",decision=\"error\"}"), Some(2.0));
        hook.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_evaluation_panic_is_an_internal_error_in_both_budget_modes() {
    for budget_ms in [0, 1000] {
        let pki = Pki::new();
        let mut a = args(&pki);
        a.eval_budget_ms = budget_ms;
        a.failure_mode = webhook::FailureMode::Deny;
        let hook = start_with(&a, scripted()).await;
        let c = client(&pki.ca_pem());
        ready(&hook.url, &c).await;
        let (status, v) = post(
            &c,
            &hook.url,
            pod_review("boom", "prod", "web", json!({"test.tether.io/panic": "1"})).to_string(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v["response"]["allowed"], false, "{v}");
        assert_eq!(v["response"]["status"]["code"], 500);
        assert_eq!(
            v["response"]["auditAnnotations"]["error"],
            "evaluation panicked"
        );
        // The server goes on serving.
        let (status, v) = post(
            &c,
            &hook.url,
            pod_review("after", "prod", "web", json!({})).to_string(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v["response"]["allowed"], true);
        hook.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_load_is_answered_and_excess_is_shed() {
    let pki = Pki::new();
    let hook = start_with(&args(&pki), scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let mut tasks = Vec::new();
    for t in 0..64 {
        let c = c.clone();
        let url = hook.url.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let uid = format!("load-{t}-{i}");
                let labels = if i % 5 == 0 {
                    json!({"test.tether.io/hit": "enforce"})
                } else {
                    json!({})
                };
                let (status, v) = post(
                    &c,
                    &url,
                    pod_review(&uid, "prod", "web", labels).to_string(),
                )
                .await;
                assert_eq!(status, 200);
                assert_eq!(v["response"]["uid"], uid.as_str());
                assert_eq!(v["response"]["allowed"], i % 5 != 0);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let metrics = c
        .get(format!("{}/metrics", hook.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&metrics, "tether_webhook_reviews_total{operation=\"CREATE\",resource=\"pods\",decision=\"deny\"}"), Some(320.0));
    assert_eq!(metric(&metrics, "tether_webhook_reviews_total{operation=\"CREATE\",resource=\"pods\",decision=\"allow\"}"), Some(1280.0));
    hook.running.stop().await.unwrap();

    // Two slots, slow evaluations: the excess is shed with 503 at once.
    let pki = Pki::new();
    let mut a = args(&pki);
    a.max_in_flight = 2;
    let hook = start_with(&a, scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = c.clone();
        let url = hook.url.clone();
        tasks.push(tokio::spawn(async move {
            let body = pod_review(
                &format!("shed-{t}"),
                "prod",
                "web",
                json!({"test.tether.io/sleep-ms": "800"}),
            )
            .to_string();
            let r = c
                .post(format!("{url}/validate"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if status == 503 {
                assert_eq!(r.headers()["retry-after"], "1");
                let v: Value = r.json().await.unwrap();
                assert!(v["message"]
                    .as_str()
                    .unwrap()
                    .contains("2 reviews already in flight"));
            }
            status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let shed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + shed, 8, "{statuses:?}");
    assert!(ok >= 2 && shed >= 1, "{statuses:?}");
    let metrics = c
        .get(format!("{}/metrics", hook.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&metrics, "tether_webhook_errors_total{kind=\"shed\"}"),
        Some(shed as f64)
    );
    hook.running.stop().await.unwrap();
}

#[tokio::test]
async fn cert_rotation_keeps_open_connections_and_serves_new_ones_the_new_cert() {
    let pki = Pki::new();
    let hook = start_with(&args(&pki), scripted()).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let old_ca = pki.ca_pem();
    let mut held = keep_alive(hook.running.addr, &old_ca).await;
    let (status, _) = held
        .review(
            pod_review("ka-1", "prod", "web", json!({}))
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    let old_serial = held.peer_serial.clone();

    // Rotate with a CA renewal (renew when fewer than 1999 of 2000 days remain: now).
    let rotated = certs::rotate(
        pki.dir.path(),
        None,
        &certs::Lifetimes {
            ca_days: 2000,
            serving_days: 90,
            ca_renew_before_days: 1999,
        },
    )
    .unwrap();
    assert!(rotated.ca_renewed);
    assert_eq!(rotated.bundle_len, 2);

    // Wait for the webhook to serve the new certificate.
    let bundle = pki.ca_pem();
    let mut fresh = None;
    for _ in 0..800 {
        let k = keep_alive(hook.running.addr, &bundle).await;
        if k.peer_serial == rotated.serving.serial {
            fresh = Some(k);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut fresh = fresh.expect("new certificate never served");
    assert_ne!(fresh.peer_serial, old_serial);

    // The connection opened before the rotation still works.
    for i in 0..3 {
        let (status, v) = held
            .review(
                pod_review(&format!("ka-old-{i}"), "prod", "web", json!({}))
                    .to_string()
                    .into_bytes(),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(v["response"]["uid"], format!("ka-old-{i}"));
    }
    let (status, _) = fresh
        .review(
            pod_review("ka-new", "prod", "web", json!({}))
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 200);

    // A client that trusts only the old CA cannot open a new connection any more; one
    // trusting the bundle can (the overlap).
    let tcp = tokio::net::TcpStream::connect(hook.running.addr)
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(&old_ca));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());

    // A broken pair on disk keeps the current certificate serving and is reported.
    std::fs::write(
        pki.path("tls.crt"),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut reported = false;
    for _ in 0..800 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let body: Value = reqwest::Client::builder()
            .use_preconfigured_tls((*tls_client_config(&bundle)).clone())
            .build()
            .unwrap()
            .get(format!("{}/readyz", hook.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["certificate"]["last_reload_error"].is_string() {
            assert_eq!(
                body["certificate"]["serial"],
                rotated.serving.serial.as_str()
            );
            reported = true;
            break;
        }
    }
    assert!(reported, "broken certificate file never reported");
    let k = keep_alive(hook.running.addr, &bundle).await;
    assert_eq!(k.peer_serial, rotated.serving.serial);
    hook.running.stop().await.unwrap();
}

/// Rules read from a file through a loader that fails on "broken" content.
struct FileRules(usize);
impl Rules for FileRules {
    fn evaluate(
        &self,
        _r: policies::Doc,
        _q: &webhook::review::ReviewRequest,
        _l: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Vec<webhook::rules::RuleHit>, EvalError> {
        Ok(vec![])
    }
    fn rule_count(&self) -> usize {
        self.0
    }
}
struct FileLoader(Vec<std::path::PathBuf>);
impl RulesLoader for FileLoader {
    fn load(&self) -> Result<Arc<dyn Rules>, String> {
        let text = std::fs::read_to_string(&self.0[0])
            .map_err(|e| format!("{}: {e}", self.0[0].display()))?;
        let n: usize = text.trim().parse().map_err(|_| {
            format!(
                "{}:1:1: not a rule count: {:?}",
                self.0[0].display(),
                text.trim()
            )
        })?;
        Ok(Arc::new(FileRules(n)))
    }
    fn watched_files(&self) -> &[std::path::PathBuf] {
        &self.0
    }
    fn describe(&self) -> String {
        self.0[0].display().to_string()
    }
}

#[tokio::test]
async fn readiness_waits_for_rules_and_a_broken_reload_keeps_the_last_good_set() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.txt");
    std::fs::write(&file, "broken").unwrap();
    let (sink, _rx) = engine::ChannelSink::new();
    let running = webhook::cli::start(
        &args(&pki),
        Arc::new(FileLoader(vec![file.clone()])),
        Some(Arc::new(sink)),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let url = format!("https://127.0.0.1:{}", running.addr.port());
    let c = client(&pki.ca_pem());
    let get = |path: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let r = c.get(format!("{url}{path}")).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    // Not ready: never loaded; the reason names the file and what is wrong.
    let mut v = Value::Null;
    for _ in 0..800 {
        let (status, body) = get("/readyz").await;
        assert_eq!(status, 503);
        v = serde_json::from_str(&body).unwrap();
        if v["rules"]["last_reload_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("not a rule count"),
        "{v}"
    );
    // Reviews meanwhile answer per the failure mode (allow), counted as not_ready.
    let (_, v) = post(
        &c,
        &url,
        pod_review("nr", "prod", "web", json!({})).to_string(),
    )
    .await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("rules not loaded"));

    // Fixed: ready, generation 1.
    std::fs::write(&file, "7").unwrap();
    ready(&url, &c).await;
    let v: Value = serde_json::from_str(&get("/readyz").await.1).unwrap();
    assert_eq!(v["rules"]["count"], 7);
    assert_eq!(v["rules"]["generation"], 1);

    // Broken again: still ready with the last good set, the error reported.
    std::fs::write(&file, "7 rules and a typo").unwrap();
    let mut seen = false;
    for _ in 0..800 {
        let (status, body) = get("/readyz").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["rules"]["last_reload_error"].is_string() {
            assert_eq!(status, 200);
            assert_eq!(v["rules"]["count"], 7);
            assert_eq!(v["rules"]["generation"], 1);
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen);
    let metrics = get("/metrics").await.1;
    assert!(
        metric(
            &metrics,
            "tether_webhook_errors_total{kind=\"rules_reload\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        metric(&metrics, "tether_webhook_rules_generation"),
        Some(1.0)
    );
    // Recovered.
    std::fs::write(&file, "9").unwrap();
    let mut recovered = false;
    for _ in 0..800 {
        let v: Value = serde_json::from_str(&get("/readyz").await.1).unwrap();
        if v["rules"]["count"] == 9 {
            assert!(v["rules"]["last_reload_error"].is_null());
            assert_eq!(v["rules"]["generation"], 2);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(recovered);
    running.stop().await.unwrap();
}

/// kube-apiserver talks HTTP/2 to webhooks when ALPN offers it: reviews multiplexed on one
/// connection are all answered.
#[tokio::test]
async fn http2_multiplexed_reviews_on_one_connection() {
    let pki = Pki::new();
    let hook = start_with(&args(&pki), scripted()).await;
    let mut config = (*tls_client_config(&pki.ca_pem())).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(hook.running.addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let uid = format!("h2-{i}");
            let body = pod_review(&uid, "prod", "web", json!({})).to_string();
            let req = hyper::Request::post("https://localhost/validate")
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["response"]["uid"], uid.as_str());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    hook.running.stop().await.unwrap();
}
