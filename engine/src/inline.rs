//! A sink that hands each record to a function at once, on the thread that gives it.
//!
//! Under load, what a server does with a record after answering costs more than making it
//! when the record waits: handed to a consumer thread (a channel's counters moving between
//! cores, every allocation of the record freed on another thread), or gathered for a batch
//! (the records of the last few milliseconds held, so each new one is made in memory the
//! caches no longer hold). Measured on `tether webhook` at 64 connections on two cores:
//! about 47 µs of CPU per review with a channel to a consumer, 42 µs with batches gathered
//! per thread for 5 ms, 38.5 µs with [`InlineSink`] — as much as dropping the records.

use std::sync::Arc;

use crate::sink::{ActionRecord, AdmissionDecision, Found, Sink, SinkError};
use crate::ExecSession;

/// What an [`InlineSink`] hands its records to.
pub type RecordHandler = Arc<dyn Fn(Found) + Send + Sync>;

/// See the module's documentation.
#[derive(Clone)]
pub struct InlineSink {
    handle: RecordHandler,
}

impl std::fmt::Debug for InlineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineSink").finish_non_exhaustive()
    }
}

impl InlineSink {
    pub fn new(handle: RecordHandler) -> Self {
        Self { handle }
    }
}

impl Sink for InlineSink {
    fn alert(&self, alert: policies::Alert) -> Result<(), SinkError> {
        (self.handle)(Found::Alert(Box::new(alert)));
        Ok(())
    }
    fn session(&self, session: ExecSession) -> Result<(), SinkError> {
        (self.handle)(Found::Session(Box::new(session)));
        Ok(())
    }
    fn decision(&self, decision: AdmissionDecision) -> Result<(), SinkError> {
        (self.handle)(Found::Decision(Box::new(decision)));
        Ok(())
    }
    fn action(&self, action: ActionRecord) -> Result<(), SinkError> {
        (self.handle)(Found::Action(Box::new(action)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn each_record_is_handed_on_at_once_on_the_giving_thread() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = InlineSink::new(Arc::new(move |found: Found| {
            let what = match found {
                Found::Action(a) => a.time_ns,
                Found::Decision(d) => d.time_ns,
                _ => -1,
            };
            s.lock().unwrap().push((what, std::thread::current().id()));
        }));
        let action = |n: i64| ActionRecord {
            time_ns: n,
            kind: "notify".into(),
            target: "pod/ns/p".into(),
            rule: "r".into(),
            dry_run: true,
            status: "done".into(),
            error: None,
            reason: None,
        };
        sink.action(action(1)).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
        sink.action(action(2)).unwrap();
        let other = std::thread::spawn({
            let sink = sink.clone();
            move || {
                sink.action(action(3)).unwrap();
                std::thread::current().id()
            }
        })
        .join()
        .unwrap();
        let here = std::thread::current().id();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(1, here), (2, here), (3, other)]
        );
    }
}
