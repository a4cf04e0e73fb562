//! A fixed set of threads that run rule evaluations, so that a long evaluation does not hold
//! an I/O thread and a review can be answered when its evaluation overruns the budget.
//! Under a budget, a small review (at most 64 KiB) starts its evaluation on the I/O thread
//! and only what is left after a short slice (0.5 ms, or half the budget if less) moves
//! here; large reviews are evaluated here whole (see `server::evaluate`). Most reviews
//! finish within the slice and never pay the hand-off (a context switch each way).
//!
//! Fixed rather than tokio's growing blocking pool: under load a few threads that stay busy
//! switch context far less than one thread per in-flight review, and a rule that never
//! finishes occupies one thread instead of growing the pool without bound. While every
//! thread is busy, further evaluations queue and their budget keeps running.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The evaluation threads.
#[derive(Debug)]
pub struct EvalPool {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    threads: usize,
}

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("evaluation panicked")]
    Panicked,
    #[error("evaluation pool stopped")]
    Stopped,
}

impl EvalPool {
    /// Starts `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = rx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("tether-eval-{i}"))
                    .spawn(move || loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            threads,
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `f`; the receiver yields its result (or why there is none).
    pub fn run<T, F>(&self, f: F) -> oneshot::Receiver<Result<T, PoolError>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = catch_unwind(AssertUnwindSafe(f)).map_err(|_| PoolError::Panicked);
            // The caller may have stopped waiting (budget overrun): nothing to do then.
            let _ = done.send(out);
        });
        let sent = match self.tx.lock() {
            Ok(tx) => match tx.as_ref() {
                Some(tx) => tx.send(job).map_err(|e| e.0),
                None => Err(job),
            },
            Err(_) => Err(job),
        };
        if let Err(job) = sent {
            // Not queued: run nothing, answer "stopped" through a fresh channel.
            drop(job);
            let (done, result) = oneshot::channel();
            let _ = done.send(Err(PoolError::Stopped));
            return result;
        }
        result
    }
}

impl Drop for EvalPool {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut workers) = self.workers.lock() {
            for w in workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_reports_panics_and_keeps_going() {
        let pool = EvalPool::new(2).unwrap();
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), Ok(4));
        #[allow(clippy::panic)]
        let boom = pool.run(|| -> u32 { panic!("rule engine bug") });
        assert_eq!(boom.await.unwrap(), Err(PoolError::Panicked));
        let many: Vec<_> = (0..100).map(|i| pool.run(move || i * 2)).collect();
        for (i, r) in many.into_iter().enumerate() {
            assert_eq!(r.await.unwrap(), Ok(i * 2));
        }
    }

    #[tokio::test]
    async fn a_stuck_job_occupies_one_thread_only() {
        let pool = EvalPool::new(2).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let stuck = pool.run(move || wait.recv().is_ok());
        // The other thread still serves.
        for i in 0..10 {
            assert_eq!(pool.run(move || i).await.unwrap(), Ok(i));
        }
        release.send(()).unwrap();
        assert_eq!(stuck.await.unwrap(), Ok(true));
    }
}
