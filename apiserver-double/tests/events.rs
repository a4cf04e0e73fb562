//! Events through kube-rs: the events.k8s.io/v1 `Recorder` and core v1 events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use apiserver_double::ApiServerDouble;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Resource;
use serde_json::json;

#[tokio::test]
async fn recorder_creates_then_patches_a_series() {
    let d = ApiServerDouble::start().await.unwrap();
    let client = d.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "victim"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let reference: ObjectReference = pod.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tether".into(),
            instance: Some("tether-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "ShellSpawned".into(),
        note: Some("terminal shell in container".into()),
        action: "Detect".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();

    let events: Api<EventV1> = Api::namespaced(client.clone(), "default");
    let listed = events
        .list(&ListParams::default().fields("regarding.name=victim,reason=ShellSpawned"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let e = &listed.items[0];
    assert_eq!(e.reporting_controller.as_deref(), Some("tether"));
    assert_eq!(e.series.as_ref().unwrap().count, 2);
    let methods: Vec<(String, u16)> = d
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/apis/events.k8s.io/v1/"))
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        methods[..2],
        [("POST".to_string(), 201), ("PATCH".to_string(), 200)]
    );

    // events.k8s.io/v1 validation
    let bad: EventV1 =
        serde_json::from_value(json!({"metadata": {"name": "bad"}, "type": "Odd"})).unwrap();
    let err = match events
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("reportingController: Required value"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("type: Unsupported value: \"Odd\""),
        "{}",
        err.message
    );
    d.shutdown().await;
}

#[tokio::test]
async fn core_events_by_involved_object() {
    let d = ApiServerDouble::start().await.unwrap();
    let events: Api<CoreEvent> = Api::namespaced(d.client().unwrap(), "kube-system");
    for (name, obj) in [("a.1", "pod-a"), ("b.1", "pod-b")] {
        let e: CoreEvent = serde_json::from_value(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "namespace": "kube-system", "name": obj},
            "reason": "Isolated", "message": "network isolated", "type": "Warning",
            "source": {"component": "tether"}
        }))
        .unwrap();
        events.create(&PostParams::default(), &e).await.unwrap();
    }
    let got = events
        .list(&ListParams::default().fields("involvedObject.name=pod-b"))
        .await
        .unwrap();
    assert_eq!(got.items.len(), 1);
    assert_eq!(got.items[0].metadata.name.as_deref(), Some("b.1"));
    let by_source = events
        .list(&ListParams::default().fields("source=tether,type=Warning"))
        .await
        .unwrap();
    assert_eq!(by_source.items.len(), 2);
    // core and events.k8s.io events are stored separately in the double
    assert!(d.list("events.events.k8s.io", None).unwrap().is_empty());
    assert_eq!(d.list("events", Some("kube-system")).unwrap().len(), 2);
    d.shutdown().await;
}
