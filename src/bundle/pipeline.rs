//! An order-preserving worker pool for chunk work (compression, decompression,
//! hashing) that keeps the caller's thread free for sequential I/O and the
//! whole-artifact hash.
//!
//! Job `n` goes to worker `n % workers`, each worker handles its jobs in
//! order, and results are collected round-robin, so they come back in
//! submission order without any reordering buffer. The channels are bounded,
//! which bounds memory: at most `workers * DEPTH` jobs are in flight.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Jobs queued per worker beyond the one it is working on.
const DEPTH: usize = 2;

/// The caller's end of the pool; dropping it stops the workers.
pub(crate) struct Pool<'scope, J, R> {
    to: Vec<SyncSender<J>>,
    from: Vec<Receiver<R>>,
    _handles: Vec<ScopedJoinHandle<'scope, ()>>,
    submitted: usize,
    received: usize,
}

impl<'scope, J: Send + 'scope, R: Send + 'scope> Pool<'scope, J, R> {
    /// Starts `workers` threads in `scope`; each builds its own state with
    /// `init` (e.g. a zstd context) and maps jobs with `work`.
    pub(crate) fn start<'env, S, I, W>(
        scope: &'scope Scope<'scope, 'env>,
        workers: usize,
        init: I,
        work: W,
    ) -> Self
    where
        I: Fn() -> S + Send + Sync + 'scope,
        W: Fn(&mut S, J) -> R + Send + Sync + 'scope,
        'env: 'scope,
    {
        let workers = workers.max(1);
        let init = std::sync::Arc::new(init);
        let work = std::sync::Arc::new(work);
        let mut to = Vec::with_capacity(workers);
        let mut from = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (job_tx, job_rx) = sync_channel::<J>(DEPTH);
            let (res_tx, res_rx) = sync_channel::<R>(DEPTH);
            let init = init.clone();
            let work = work.clone();
            handles.push(scope.spawn(move || {
                let mut state = init();
                while let Ok(job) = job_rx.recv() {
                    if res_tx.send(work(&mut state, job)).is_err() {
                        break;
                    }
                }
            }));
            to.push(job_tx);
            from.push(res_rx);
        }
        Pool {
            to,
            from,
            _handles: handles,
            submitted: 0,
            received: 0,
        }
    }

    /// Jobs submitted and not yet received.
    pub(crate) fn in_flight(&self) -> usize {
        self.submitted - self.received
    }

    /// Whether another job can be submitted without waiting long.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight() < self.to.len() * DEPTH
    }

    /// Queues a job. Fails only if a worker died (it panicked).
    pub(crate) fn submit(&mut self, job: J) -> Result<(), WorkerGone> {
        let w = self.submitted % self.to.len();
        self.to[w].send(job).map_err(|_| WorkerGone)?;
        self.submitted += 1;
        Ok(())
    }

    /// The result of the oldest job still in flight.
    pub(crate) fn receive(&mut self) -> Result<R, WorkerGone> {
        let w = self.received % self.from.len();
        let r = self.from[w].recv().map_err(|_| WorkerGone)?;
        self.received += 1;
        Ok(r)
    }
}

/// A worker thread ended unexpectedly.
#[derive(Debug)]
pub(crate) struct WorkerGone;

impl From<WorkerGone> for std::io::Error {
    fn from(_: WorkerGone) -> Self {
        std::io::Error::other("a worker thread stopped unexpectedly")
    }
}

/// Threads to use by default: every core the process may run on.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        let out = std::thread::scope(|s| {
            let mut pool = Pool::start(
                s,
                3,
                || 0u32,
                |count: &mut u32, j: u64| {
                    *count += 1;
                    // Uneven work so workers finish out of order.
                    std::thread::sleep(std::time::Duration::from_micros((j % 4) * 200));
                    j * 2
                },
            );
            let mut out = Vec::new();
            let mut next = 0u64;
            while out.len() < 50 {
                while next < 50 && pool.has_room() {
                    pool.submit(next).unwrap();
                    next += 1;
                }
                out.push(pool.receive().unwrap());
            }
            out
        });
        assert_eq!(out, (0..50).map(|j| j * 2).collect::<Vec<_>>());
    }
}
