//! Helpers shared by the `policies` integration tests: the fixture events and the bundled
//! library's JSONPath queries.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policies::{parse_document, Event};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
pub const LIBRARY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/library");

/// Every event of the Falco k8s-audit traces and the kube-apiserver captures.
pub fn fixture_events() -> Vec<Event> {
    let mut evs = Vec::new();
    for dir in ["falco-k8s-audit", "apiserver-captures"] {
        let mut stack = vec![std::path::PathBuf::from(FIXTURES).join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json" || x == "jsonl") {
                    let bytes = std::fs::read(&p).unwrap();
                    evs.extend(parse_document("f", &bytes).into_iter().flatten());
                }
            }
        }
    }
    assert!(evs.len() > 40, "fixture events: {}", evs.len());
    evs
}

/// Every `json[...]` argument in the bundled library's files.
pub fn library_queries() -> Vec<String> {
    let mut qs = Vec::new();
    for e in std::fs::read_dir(LIBRARY).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            queries_in(&std::fs::read_to_string(&p).unwrap(), &mut qs);
        }
    }
    qs
}

/// Every `json[...]` argument in a text, brackets balanced.
fn queries_in(text: &str, out: &mut Vec<String>) {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("json[") {
        let start = i + at + 5;
        let mut depth = 1;
        let mut j = start;
        while j < b.len() && depth > 0 {
            match b[j] {
                b'[' => depth += 1,
                b']' => depth -= 1,
                _ => {}
            }
            j += 1;
        }
        if depth == 0 {
            out.push(text[start..j - 1].to_string());
        }
        i = start;
    }
}
