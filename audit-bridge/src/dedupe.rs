//! Bounded de-duplication by id (CloudWatch `eventId`, GKE `insertId`, audit ID and
//! stage), remembering ids with their event time so that ids older than a window can be
//! forgotten and the rest persisted with the source's checkpoint.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Ids seen, each with the event time (milliseconds) it carried.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenIds {
    /// (time_ms, id) in insertion order.
    order: VecDeque<(i64, String)>,
    #[serde(skip)]
    index: HashMap<String, i64>,
}

impl SeenIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the index after deserialising.
    pub fn reindex(&mut self) {
        self.index = self.order.iter().map(|(t, id)| (id.clone(), *t)).collect();
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Records `id`; returns false when it was already seen.
    pub fn insert(&mut self, id: &str, time_ms: i64) -> bool {
        if self.index.contains_key(id) {
            return false;
        }
        self.index.insert(id.to_owned(), time_ms);
        self.order.push_back((time_ms, id.to_owned()));
        true
    }

    /// Forgets ids whose time is before `cutoff_ms`, and the oldest ids beyond
    /// `max_len`.
    pub fn prune(&mut self, cutoff_ms: i64, max_len: usize) {
        self.order.retain(|(t, _)| *t >= cutoff_ms);
        while self.order.len() > max_len {
            self.order.pop_front();
        }
        if self.order.len() != self.index.len() {
            self.reindex();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_prune_and_persist() {
        let mut s = SeenIds::new();
        assert!(s.insert("a", 10));
        assert!(!s.insert("a", 11));
        assert!(s.insert("b", 20));
        assert!(s.insert("c", 30));
        s.prune(15, 100);
        assert!(!s.contains("a"));
        assert!(s.contains("b"));
        s.prune(0, 1);
        assert!(!s.contains("b"));
        assert!(s.contains("c"));
        let json = serde_json::to_string(&s).unwrap();
        let mut back: SeenIds = serde_json::from_str(&json).unwrap();
        back.reindex();
        assert!(back.contains("c"));
        assert!(!back.insert("c", 30));
    }
}
