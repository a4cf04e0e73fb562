//! Malformed and unsupported requests get kube-apiserver's `Status` answers, sent over a raw
//! HTTP/1.1 connection so that nothing in a client library tidies the request first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use apiserver_double::{ApiServerDouble, Running};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Answer {
    code: u16,
    body: Value,
}

async fn send(
    d: &Running,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(d.addr()).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        d.addr(),
        body.len()
    );
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let code: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // single-chunk bodies are enough for these answers
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Answer { code, body }
}

fn assert_status(a: &Answer, code: u16, reason: &str, message_has: &str) {
    assert_eq!(a.code, code, "{}", a.body);
    assert_eq!(a.body["kind"], "Status", "{}", a.body);
    assert_eq!(a.body["status"], "Failure");
    assert_eq!(a.body["code"], code);
    assert_eq!(a.body["reason"], reason, "{}", a.body);
    let msg = a.body["message"].as_str().unwrap();
    assert!(
        msg.contains(message_has),
        "message {msg:?} lacks {message_has:?}"
    );
}

const PODS: &str = "/api/v1/namespaces/default/pods";

fn pod_body(name: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap()
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let d = ApiServerDouble::start().await.unwrap();
    let json = Some("application/json");
    let a = send(&d, "POST", PODS, json, b"{\"metadata\": ").await;
    assert_status(&a, 400, "BadRequest", "error decoding request body as JSON");
    let a = send(&d, "POST", PODS, json, b"[1, 2]").await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "expected a JSON object, got an array",
    );
    let a = send(
        &d,
        "POST",
        PODS,
        json,
        br#"{"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "x"}}"#,
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "the API version in the data (apps/v1) does not match the expected API version (v1)",
    );
    let a = send(
        &d,
        "POST",
        PODS,
        json,
        br#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "x"}}"#,
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "the kind in the data (Node) does not match the expected kind (Pod)",
    );
    let a = send(&d, "POST", PODS, json, br#"{"metadata": {"name": "x", "namespace": "kube-system"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}"#).await;
    assert_status(&a, 400, "BadRequest", "the namespace of the provided object (kube-system) does not match the namespace sent on the request (default)");
    let a = send(&d, "POST", PODS, json, br#"{"metadata": "x"}"#).await;
    assert_status(&a, 400, "BadRequest", "metadata must be a JSON object");
    let a = send(&d, "POST", PODS, Some("application/xml"), b"<pod/>").await;
    assert_status(&a, 415, "UnsupportedMediaType", "(application/xml)");
    // YAML bodies are accepted
    let a = send(&d, "POST", PODS, Some("application/yaml"), b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\nspec:\n  containers:\n  - name: c\n    image: i\n").await;
    assert_eq!(a.code, 201, "{}", a.body);

    // PUT with a name that differs from the URL
    let a = send(
        &d,
        "PUT",
        &format!("{PODS}/from-yaml"),
        json,
        &pod_body("other"),
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "the name of the object (other) does not match the name on the URL (from-yaml)",
    );
    // PUT of a missing pod (pods cannot be created by PUT)
    let a = send(
        &d,
        "PUT",
        &format!("{PODS}/missing"),
        json,
        &pod_body("missing"),
    )
    .await;
    assert_status(&a, 404, "NotFound", "pods \"missing\" not found");
    // malformed DeleteOptions
    let a = send(&d, "DELETE", &format!("{PODS}/from-yaml"), json, b"{oops").await;
    assert_status(&a, 400, "BadRequest", "error decoding DeleteOptions");
    // too large
    let big = vec![b' '; apiserver_double::MAX_BODY_BYTES + 1];
    let a = send(&d, "POST", PODS, json, &big).await;
    assert_status(&a, 413, "RequestEntityTooLarge", "larger than the limit");
    d.shutdown().await;
}

#[tokio::test]
async fn patches_malformed_or_unsupported() {
    let d = ApiServerDouble::start().await.unwrap();
    assert_eq!(
        send(&d, "POST", PODS, Some("application/json"), &pod_body("p"))
            .await
            .code,
        201
    );
    let p = format!("{PODS}/p");
    let a = send(&d, "PATCH", &p, Some("application/json"), b"{}").await;
    assert_status(
        &a,
        415,
        "UnsupportedMediaType",
        "accepted media types include: application/json-patch+json",
    );
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/merge-patch+json"),
        b"{nope",
    )
    .await;
    assert_status(&a, 400, "BadRequest", "error decoding patch body as JSON");
    let a = send(&d, "PATCH", &p, Some("application/json-patch+json"), b"{}").await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "json patch must be a JSON array of operations",
    );
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/json-patch+json"),
        br#"[{"op": "jump", "path": "/x"}]"#,
    )
    .await;
    assert_status(&a, 400, "BadRequest", "invalid json patch operation");
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/json-patch+json"),
        br#"[{"op": "remove", "path": "/spec/nothing"}]"#,
    )
    .await;
    assert_status(&a, 422, "Invalid", "the json patch could not be applied");
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/strategic-merge-patch+json"),
        br#"{"spec": {"containers": [{"image": "x"}]}}"#,
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "map does not contain the merge key \"name\"",
    );
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/apply-patch+yaml"),
        b"metadata:\n  labels: {a: b}\n",
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "fieldManager is required for apply requests",
    );
    let a = send(
        &d,
        "PATCH",
        &format!("{p}?fieldManager=t"),
        Some("application/apply-patch+yaml"),
        b"metadata:\n  labels: {a: b}\n",
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "apply patch for pods must set apiVersion",
    );
    let a = send(
        &d,
        "PATCH",
        &format!("{p}?fieldManager=t"),
        Some("application/apply-patch+yaml"),
        b"a: [unclosed\n",
    )
    .await;
    assert_status(&a, 400, "BadRequest", "error decoding YAML apply patch");
    // a patch that makes the object invalid is 422 and changes nothing
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/merge-patch+json"),
        br#"{"metadata": {"labels": {"bad key": "v"}}}"#,
    )
    .await;
    assert_status(
        &a,
        422,
        "Invalid",
        "Pod \"p\" is invalid: metadata.labels: Invalid value: \"bad key\"",
    );
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/merge-patch+json"),
        br#"{"spec": {"containers": null}}"#,
    )
    .await;
    assert_status(&a, 422, "Invalid", "spec.containers: Required value");
    assert!(d.get("pods", None, "p").unwrap().unwrap()["metadata"]
        .get("labels")
        .is_none());
    // a stale resourceVersion inside a patch is a conflict
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/merge-patch+json"),
        br#"{"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}}"#,
    )
    .await;
    assert_status(&a, 409, "Conflict", "the object has been modified");
    // renaming through a patch is refused
    let a = send(
        &d,
        "PATCH",
        &p,
        Some("application/merge-patch+json"),
        br#"{"metadata": {"name": "q"}}"#,
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "the name of the object (q) does not match the name on the URL (p)",
    );
    d.shutdown().await;
}

#[tokio::test]
async fn routes_verbs_and_parameters() {
    let d = ApiServerDouble::start().await.unwrap();
    let a = send(&d, "GET", "/api/v1/namespaces/default/widgets", None, b"").await;
    assert_status(
        &a,
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    let a = send(&d, "GET", "/apis/apps/v1/deployments", None, b"").await;
    assert_status(&a, 404, "NotFound", "could not find the requested resource");
    let a = send(
        &d,
        "GET",
        "/api/v1/namespaces/default/pods/p/exec",
        None,
        b"",
    )
    .await;
    assert_status(&a, 404, "NotFound", "could not find the requested resource");
    let a = send(
        &d,
        "POST",
        "/api/v1/namespaces/default/pods/p",
        Some("application/json"),
        b"{}",
    )
    .await;
    assert_status(&a, 405, "MethodNotAllowed", "does not allow this method");
    let a = send(&d, "PUT", PODS, Some("application/json"), b"{}").await;
    assert_status(&a, 405, "MethodNotAllowed", "does not allow this method");
    let a = send(
        &d,
        "POST",
        "/api/v1/pods",
        Some("application/json"),
        &pod_body("x"),
    )
    .await;
    assert_status(&a, 405, "MethodNotAllowed", "does not allow this method");
    let a = send(
        &d,
        "DELETE",
        "/api/v1/namespaces/default/pods/p/status",
        None,
        b"",
    )
    .await;
    assert_status(&a, 405, "MethodNotAllowed", "does not allow this method");
    let a = send(&d, "POST", "/api", None, b"").await;
    assert_status(&a, 405, "MethodNotAllowed", "does not allow this method");
    let a = send(&d, "GET", &format!("{PODS}?limit=-1"), None, b"").await;
    assert_status(&a, 400, "BadRequest", "invalid limit \"-1\"");
    let a = send(&d, "GET", &format!("{PODS}?continue=%21%21"), None, b"").await;
    assert_status(&a, 400, "BadRequest", "continue key is not valid");
    let a = send(
        &d,
        "GET",
        &format!("{PODS}?watch=true&resourceVersion=abc"),
        None,
        b"",
    )
    .await;
    assert_status(&a, 400, "BadRequest", "invalid resourceVersion \"abc\"");
    let a = send(
        &d,
        "GET",
        &format!("{PODS}?watch=true&timeoutSeconds=soon"),
        None,
        b"",
    )
    .await;
    assert_status(&a, 400, "BadRequest", "invalid timeoutSeconds \"soon\"");
    let a = send(
        &d,
        "GET",
        &format!("{PODS}?labelSelector=a%20in%20%28b"),
        None,
        b"",
    )
    .await;
    assert_status(&a, 400, "BadRequest", "unable to parse requirement");
    let a = send(
        &d,
        "GET",
        "/api/v1/nodes?fieldSelector=metadata.namespace%3Dx",
        None,
        b"",
    )
    .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "field label not supported: metadata.namespace",
    );
    // health and version answer plainly
    let a = send(&d, "GET", "/healthz", None, b"").await;
    assert_eq!((a.code, a.body.as_str()), (200, Some("ok")));
    let a = send(&d, "GET", "/version", None, b"").await;
    assert_eq!(a.body["major"], "1");
    // every request is in the log, with its content type and answer
    let log = d.requests();
    assert_eq!(log.len(), 16);
    assert_eq!(log[3].method, "POST");
    assert_eq!(log[3].content_type.as_deref(), Some("application/json"));
    assert_eq!(log[3].status, 405);
    assert_eq!(log[8].query, "limit=-1");
    d.clear_requests();
    assert!(d.requests().is_empty());
    d.shutdown().await;
}

#[tokio::test]
async fn dry_run_validates_without_storing() {
    let d = ApiServerDouble::start().await.unwrap();
    let a = send(
        &d,
        "POST",
        &format!("{PODS}?dryRun=All"),
        Some("application/json"),
        &pod_body("dry"),
    )
    .await;
    assert_eq!(a.code, 201);
    assert_eq!(a.body["metadata"]["name"], "dry");
    assert!(d.get("pods", None, "dry").unwrap().is_none());
    let a = send(
        &d,
        "POST",
        &format!("{PODS}?dryRun=All"),
        Some("application/json"),
        br#"{"metadata": {"name": "dry"}}"#,
    )
    .await;
    assert_status(&a, 422, "Invalid", "spec.containers: Required value");
    d.shutdown().await;
}
