//! Parallel regions for the kernels: `n` tasks taken one at a time by the calling thread and
//! one helper job per other pool thread, each from its own share first, then from the others'.
//!
//! Why not `into_par_iter().for_each`: rayon splits the range into halves that other threads
//! steal, and the thread that finishes first then waits on its half's latch, which parks it
//! on a futex after a few dozen spin rounds. A decode step is about 60 such regions (GPT-2)
//! whose tasks take tens to hundreds of microseconds, so nearly every region ended with one
//! thread parked and woken again by the other (`perf stat`: about 50 context switches per
//! decoded token). Here every thread takes another task when it is free, so all finish within
//! one task of each other, and the caller spins (it has nothing else to do) until the tasks
//! that others took are done. A helper job that no thread stole in time stays in the caller's
//! own deque, and rayon runs it there (it finds no task left and returns), so the caller never
//! waits on a thread that has not started.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

/// Runs `f(0..n)`, each index once, over the current rayon pool (on the calling thread alone
/// when the pool has one thread or `n` < 2). Returns when every call has returned; a panic in
/// a task is re-raised here, after the other tasks end.
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
    /// Counts its task as done when dropped, also when the task panics, so the caller's wait
    /// below always ends (and the scope then re-raises the panic).
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Release);
        }
    }
    let work = |k: usize| {
        let own = &shares[k];
        let take = || {
            own.take(true)
                .or_else(|| (1..team).find_map(|j| shares[(k + j) % team].take(false)))
        };
        while let Some(t) = take() {
            let _done = Done(&done);
            f(t);
        }
    };
    rayon::scope(|s| {
        for k in 1..team {
            let work = &work;
            s.spawn(move |_| work(k));
        }
        work(0);
        // Every task is taken; wait for those other threads are still running.
        while done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
    });
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
    /// hang waiting for a task that will never report.
    #[test]
    fn a_panicking_task_is_re_raised_not_waited_for() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let ran = AtomicUsize::new(0);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                run(16, |t| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    assert!(t != 5, "task 5 fails");
                })
            })
        }));
        assert!(got.is_err());
        assert_eq!(ran.load(Ordering::Relaxed), 16);
    }
}
