//! Parallel regions for the kernels: `n` tasks taken one at a time by the calling thread and
//! one helper per other pool thread, each from its own share first, then from the others'. The
//! helpers are the [`crew`](super::crew)'s threads, which stay awake between regions; when the
//! crew is running another caller's region, rayon's workers (as helper jobs).
//!
//! Why not `into_par_iter().for_each`: rayon splits the range into halves that other threads
//! steal, and the thread that finishes first then waits on its half's latch, which parks it
//! on a futex after a few dozen spin rounds. A decode step is about 60 such regions (GPT-2)
//! whose tasks take tens to hundreds of microseconds, so nearly every region ended with one
//! thread parked and woken again by the other (`perf stat`: about 50 context switches per
//! decoded token). Here every thread takes another task when it is free, so all finish within
//! one task of each other, and the caller spins (it has nothing else to do) until the tasks
//! that others took are done. A helper that has not started by then finds no task left, so the
//! caller never waits on a thread that has not started.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Most threads a region uses (the caller and its helpers).
const MAX_TEAM: usize = 64;

/// Thread `k`'s share of a region's tasks, `front..end` packed as `front | end << 32`: it takes
/// from the front, threads that have run out of their own take from the end.
struct Share(AtomicU64);

impl Share {
    fn take(&self, from_front: bool) -> Option<usize> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (front, end) = (cur & 0xFFFF_FFFF, cur >> 32);
            if front >= end {
                return None;
            }
            let (next, t) = if from_front {
                (cur + 1, front)
            } else {
                (front | (end - 1) << 32, end - 1)
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(t as usize),
                Err(now) => cur = now,
            }
        }
    }
}

/// Runs `f(0..n)`, each index once, on as many threads as the current rayon pool has (on the
/// calling thread alone when the pool has one thread or `n` < 2). Returns when every call has
/// returned; a panic in a task is re-raised here, after the other tasks end.
///
/// Each thread starts on a contiguous share of the tasks (the caller the first), so a thread
/// streams consecutive weight rows as one run, as the hardware prefetchers like: taking tasks
/// from one shared counter in turn measured 4–10% slower for q4_0 decode than rayon's halves.
///
/// # Panics
/// If `n` does not fit in 32 bits.
pub(crate) fn run(n: usize, f: impl Fn(usize) + Sync) {
    let team = rayon::current_num_threads().min(n).min(MAX_TEAM);
    if team <= 1 {
        (0..n).for_each(f);
        return;
    }
    assert!(u32::try_from(n).is_ok(), "{n} tasks");
    let shares: [Share; MAX_TEAM] = std::array::from_fn(|k| {
        if k >= team {
            return Share(AtomicU64::new(0));
        }
        let (a, b) = (n * k / team, n * (k + 1) / team);
        Share(AtomicU64::new(a as u64 | (b as u64) << 32))
    });
    let done = AtomicUsize::new(0);
    // The first panic of a task, re-raised once the region is over. Each task's panic is
    // caught so that the thread goes on taking tasks: the caller alone is then enough to run
    // every task, and no thread waits on one that stopped.
    let panic = Mutex::new(None);
    let work = |k: usize| {
        let own = &shares[k];
        let take = || {
            own.take(true)
                .or_else(|| (1..team).find_map(|j| shares[(k + j) % team].take(false)))
        };
        while let Some(t) = take() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(t))) {
                panic
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(p);
            }
            done.fetch_add(1, Ordering::Release);
        }
    };
    if !super::crew::run(team, &work) {
        rayon::scope(|s| {
            for k in 1..team {
                let work = &work;
                s.spawn(move |_| work(k));
            }
            work(0);
            // Spin for the tasks that rayon's workers took: the scope's own wait may sleep.
            while done.load(Ordering::Acquire) < n {
                std::hint::spin_loop();
            }
        });
    }
    // Every task was taken and, the threads that took them having left the region, is done.
    debug_assert_eq!(done.load(Ordering::Acquire), n);
    if let Some(p) = panic.into_inner().unwrap_or_else(PoisonError::into_inner) {
        resume_unwind(p);
    }
}

/// [`run`] over two buffers cut into chunks: task `i` gets `a[i·ca..][..ca]` and
/// `b[i·cb..][..cb]` (the last chunks may be shorter), for `i` in `0..n`.
///
/// # Panics
/// If `n` tasks need more chunks than a buffer has (`ca` or `cb` zero with `n` > 0 included).
pub(crate) fn run_chunks<A: Send, B: Send>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    n: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    assert!(n == 0 || (ca > 0 && cb > 0 && (n - 1) * ca < a.len() && (n - 1) * cb < b.len()));
    let (la, lb) = (a.len(), b.len());
    let (pa, pb) = (Shared(a.as_mut_ptr()), Shared(b.as_mut_ptr()));
    run(n, |i| {
        let (a0, b0) = (i * ca, i * cb);
        // SAFETY: task `i` is run once, and its ranges `a0..a0 + ca` and `b0..b0 + cb`
        // (clipped to the buffers, which the assert above shows they start inside) are
        // disjoint from every other task's; the buffers are borrowed mutably for the call.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts_mut(pa.get().add(a0), ca.min(la - a0)),
                std::slice::from_raw_parts_mut(pb.get().add(b0), cb.min(lb - b0)),
            )
        };
        f(i, x, y)
    });
}

/// [`run`] over `a` cut into chunks of `ca` (the last may be shorter): task `i` gets
/// `a[i·ca..][..ca]`.
///
/// # Panics
/// If `ca` is zero and `a` is not empty.
pub(crate) fn for_chunks<A: Send>(a: &mut [A], ca: usize, f: impl Fn(usize, &mut [A]) + Sync) {
    let n = a.len().div_ceil(ca.max(1));
    assert!(ca > 0 || n == 0);
    // A zero-sized second buffer (never allocated) for `run_chunks`.
    let mut none = vec![(); n];
    run_chunks(a, ca, &mut none, 1, n, |i, x, _| f(i, x));
}

/// A buffer's base pointer shared by the tasks of [`run_chunks`], each of which touches only
/// its own chunk.
struct Shared<T>(*mut T);

impl<T> Shared<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the tasks given a `Shared` write disjoint chunks of a buffer of `Send` elements that
// the caller of `run_chunks` borrowed mutably for the duration.
unsafe impl<T: Send> Sync for Shared<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index runs exactly once, on pools of 1–4 threads and for task counts around the
    /// team size; the chunked form hands each task its own chunks.
    #[test]
    fn every_task_runs_once() {
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            for n in [0usize, 1, 2, 3, 5, 64, 301] {
                pool.install(|| {
                    let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    run(n, |t| {
                        seen[t].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{n}");
                    let (mut a, mut b) = (vec![0usize; 3 * n + 1], vec![0usize; n]);
                    run_chunks(&mut a, 3, &mut b, 1, n, |i, x, y| {
                        x.fill(i + 1);
                        y[0] = i + 1;
                    });
                    for (j, v) in a[..3 * n].iter().enumerate() {
                        assert_eq!(*v, j / 3 + 1);
                    }
                    assert!(b.iter().enumerate().all(|(j, v)| *v == j + 1));
                });
            }
        }
    }

    /// A panicking task ends the region with that panic, once the other tasks are done: no
    /// hang waiting for a task that will never report, whether the task is in the caller's
    /// share (5) or a helper's (12).
    #[test]
    fn a_panicking_task_is_re_raised_not_waited_for() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        for bad in [5, 12] {
            let ran = AtomicUsize::new(0);
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install(|| {
                    run(16, |t| {
                        ran.fetch_add(1, Ordering::Relaxed);
                        assert!(t != bad, "task {bad} fails");
                    })
                })
            }));
            let msg = got.expect_err("the panic is re-raised");
            assert_eq!(
                msg.downcast_ref::<String>().map(String::as_str),
                Some(&*format!("task {bad} fails"))
            );
            assert_eq!(ran.load(Ordering::Relaxed), 16);
        }
    }

    /// Regions from several threads at once (one on the crew, the others on rayon's workers)
    /// and a region inside a region's task each run every task once.
    #[test]
    fn concurrent_and_nested_regions_run_every_task_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        std::thread::scope(|s| {
            for caller in 0..4 {
                let pool = &pool;
                s.spawn(move || {
                    for round in 0..50 {
                        let n = 7 + (caller + round) % 13;
                        let seen: Vec<AtomicUsize> =
                            (0..n * n).map(|_| AtomicUsize::new(0)).collect();
                        pool.install(|| {
                            run(n, |t| {
                                run(n, |u| {
                                    seen[t * n + u].fetch_add(1, Ordering::Relaxed);
                                })
                            })
                        });
                        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
    }

    /// A region after the helpers have parked (idle past the crew's yield time) still runs on
    /// two threads at once: task 0 (the caller's) waits for task 1 (a helper's) to start.
    #[test]
    fn a_region_after_idle_wakes_its_helper() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let started = AtomicUsize::new(0);
            let both = AtomicUsize::new(0);
            pool.install(|| {
                run(2, |_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    let t0 = std::time::Instant::now();
                    while started.load(Ordering::SeqCst) < 2 {
                        if t0.elapsed() > std::time::Duration::from_secs(10) {
                            return;
                        }
                        std::hint::spin_loop();
                    }
                    both.fetch_add(1, Ordering::SeqCst);
                })
            });
            assert_eq!(both.load(Ordering::SeqCst), 2, "the two tasks ran at once");
        }
    }
}
