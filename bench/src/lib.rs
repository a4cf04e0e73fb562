//! Benchmark harness: the corpus of real audit events the benchmarks run on.
//!
//! The corpus is the Falco k8s-audit trace files and the kube-apiserver audit captures from
//! `../shared/fixtures`, one audit event per JSON line, replicated to the requested size with
//! a distinct `auditID` per copy (so no two lines are identical).

use std::path::{Path, PathBuf};

/// The shared fixtures folder, beside the workspace.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

/// Why the corpus could not be built.
#[derive(Debug)]
pub enum CorpusError {
    Read(PathBuf, std::io::Error),
    Empty,
}

impl std::fmt::Display for CorpusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorpusError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            CorpusError::Empty => f.write_str("no audit events found in the corpus files"),
        }
    }
}

impl std::error::Error for CorpusError {}

/// Audit events as JSON lines: `bytes[offsets[i]..offsets[i + 1]]` is event `i` (no newline).
#[derive(Debug, Default)]
pub struct Corpus {
    pub bytes: Vec<u8>,
    pub offsets: Vec<usize>,
    /// How many distinct source events the corpus was replicated from.
    pub distinct: usize,
    /// The files the distinct events came from.
    pub files: Vec<PathBuf>,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.offsets
            .windows(2)
            .filter_map(|w| self.bytes.get(w.first().copied()?..w.get(1).copied()?))
    }
}

/// The corpus source files: every Falco trace file and every apiserver audit capture.
pub fn corpus_files(fixtures: &Path) -> Result<Vec<PathBuf>, CorpusError> {
    let mut files = Vec::new();
    let traces = fixtures.join("falco-k8s-audit/trace_files/k8s_audit");
    let captures = fixtures.join("apiserver-captures");
    for dir in [&traces, &captures] {
        let rd = std::fs::read_dir(dir).map_err(|e| CorpusError::Read(dir.clone(), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| CorpusError::Read(dir.clone(), e))?;
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_json = name.ends_with(".json") || name.ends_with(".jsonl");
            // Admission captures are AdmissionReviews, not audit events.
            if is_json && !name.starts_with("admission-") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The audit events of one file's text: single objects, JSON lines, arrays and `EventList`s.
/// Documents that are not audit events (like Falco's malformed `fal_01_003.json`) are left out.
pub fn audit_events(text: &[u8]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for doc in serde_json::Deserializer::from_slice(text).into_iter::<serde_json::Value>() {
        let Ok(doc) = doc else { break };
        collect(doc, &mut out);
    }
    out
}

fn collect(doc: serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match doc {
        serde_json::Value::Array(items) => items.into_iter().for_each(|d| collect(d, out)),
        serde_json::Value::Object(mut m) => {
            if m.get("kind").and_then(|k| k.as_str()) == Some("EventList") {
                if let Some(serde_json::Value::Array(items)) = m.remove("items") {
                    items.into_iter().for_each(|d| collect(d, out));
                }
            } else if m.get("auditID").is_some_and(|a| a.is_string()) && m.contains_key("stage") {
                out.push(serde_json::Value::Object(m));
            }
        }
        _ => {}
    }
}

/// Builds a corpus of `target` events from `events` (cycled), each copy with its own auditID.
pub fn replicate(events: &[serde_json::Value], target: usize) -> Result<Corpus, CorpusError> {
    if events.is_empty() {
        return Err(CorpusError::Empty);
    }
    let mut corpus = Corpus {
        distinct: events.len(),
        offsets: vec![0],
        ..Corpus::default()
    };
    for (i, ev) in events.iter().cycle().take(target).enumerate() {
        let mut ev = ev.clone();
        if let Some(serde_json::Value::String(id)) = ev.get_mut("auditID") {
            id.push_str(&format!("-{i}"));
        }
        // Serializing a Value cannot fail: its keys are strings.
        if serde_json::to_writer(&mut corpus.bytes, &ev).is_err() {
            return Err(CorpusError::Empty);
        }
        corpus.offsets.push(corpus.bytes.len());
    }
    Ok(corpus)
}

/// Drops `requestObject` and `responseObject`: the event as an audit policy at `Metadata`
/// level would have logged it.
pub fn metadata_level(ev: &mut serde_json::Value) {
    if let Some(o) = ev.as_object_mut() {
        o.shift_remove("requestObject");
        o.shift_remove("responseObject");
        if let Some(level) = o.get_mut("level") {
            *level = serde_json::Value::from("Metadata");
        }
    }
}

/// Reads the fixture files and replicates their audit events to `target` lines; with
/// `metadata` every event is cut to what the `Metadata` audit level records.
pub fn build_corpus(fixtures: &Path, target: usize, metadata: bool) -> Result<Corpus, CorpusError> {
    let files = corpus_files(fixtures)?;
    let mut events = Vec::new();
    for f in &files {
        let text = std::fs::read(f).map_err(|e| CorpusError::Read(f.clone(), e))?;
        events.extend(audit_events(&text));
    }
    if metadata {
        events.iter_mut().for_each(metadata_level);
    }
    let mut corpus = replicate(&events, target)?;
    corpus.files = files;
    Ok(corpus)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn shapes_are_split_into_events() {
        let text = br#"{"kind":"EventList","items":[{"auditID":"a","stage":"ResponseComplete"},{"auditID":"b","stage":"ResponseStarted"}]}
{"auditID":"c","stage":"ResponseComplete"}
[{"auditID":"d","stage":"ResponseComplete"}]
{"kind": 0}"#;
        let ids: Vec<_> = audit_events(text)
            .iter()
            .map(|e| e["auditID"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
    }

    #[test]
    fn replication_makes_distinct_lines() {
        let evs = audit_events(br#"{"auditID":"a","stage":"x"} {"auditID":"b","stage":"x"}"#);
        let c = replicate(&evs, 5).unwrap();
        assert_eq!(c.len(), 5);
        let lines: Vec<_> = c
            .lines()
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect();
        assert_eq!(lines[4], r#"{"auditID":"a-4","stage":"x"}"#);
        let mut uniq = lines.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 5);
    }

    #[test]
    fn the_fixture_corpus_has_every_file_event() {
        let c = build_corpus(&fixtures_dir(), 1000, false).unwrap();
        assert_eq!(c.len(), 1000);
        // 46 well-formed Falco traces (some hold several events) plus the apiserver captures.
        assert!(c.distinct > 50, "only {} distinct events", c.distinct);
        assert!(c.files.iter().any(|f| f.ends_with("fal_01_003.json")));
        let m = build_corpus(&fixtures_dir(), 1000, true).unwrap();
        assert_eq!(m.len(), 1000);
        assert!(
            m.bytes.len() * 3 < c.bytes.len() * 2,
            "{} vs {}",
            m.bytes.len(),
            c.bytes.len()
        );
        assert!(!m
            .lines()
            .any(|l| l.windows(13).any(|w| w == b"requestObject")));
    }
}
