//! The helper threads of [`team::run`](super::team::run)'s parallel regions: threads of quill's
//! own that stay awake for a while after a region, so the next region starts on all of them at
//! once.
//!
//! Why not rayon's workers (what `team::run` used before): an idle rayon worker yields a few
//! dozen times and then sleeps on a futex, about 20–30 µs after its last job here. Between two
//! regions of a batched decode step the calling thread norms, quantizes and adds 8 rows, which
//! takes about that long, so at batch 8 the helper was asleep at the start of 88% of regions
//! and began its share 24 µs late on average (about 60 regions a step, GPT-2 q4_0, measured by
//! timing each helper job's start), and the caller paid a futex wake each time. A crew helper
//! spins for [`SPIN`] after its region, then yields until [`YIELD`], and only then parks.
//!
//! One region runs on the crew at a time: a second caller (another thread's forward pass, or a
//! region inside a region's task) finds the crew busy and `team::run` gives it rayon's pool.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a helper spins on the region counter after its last region before it starts to
/// yield its core: longer than the serial work between two regions of a decode step.
const SPIN: Duration = Duration::from_micros(100);

/// How long after its last region a helper parks (until the next region unparks it); between
/// [`SPIN`] and this it yields, so other threads (sampling on rayon's pool, another process)
/// get the core.
const YIELD: Duration = Duration::from_millis(2);

/// An open region: the work each thread runs (`work(k)` on helper `k`, `work(0)` on the
/// caller) and how many threads it is for.
struct Region<'a> {
    work: &'a (dyn Fn(usize) + Sync),
    team: usize,
}

/// The crew's shared state (one per process).
struct Crew {
    /// Held by the caller of the open region.
    busy: AtomicBool,
    /// Counts regions opened: a helper waits for it to change.
    epoch: AtomicU64,
    /// The open region, null between regions. Its lifetime is the caller's: the caller nulls
    /// it and then waits until `active` is zero before it returns.
    region: AtomicPtr<Region<'static>>,
    /// Helpers between loading `region` and leaving it.
    active: AtomicUsize,
    /// Helpers parked or about to park.
    sleeping: AtomicUsize,
    /// The helpers (helper `k` at `k - 1`), to unpark.
    threads: Mutex<Vec<Thread>>,
}

static CREW: Crew = Crew {
    busy: AtomicBool::new(false),
    epoch: AtomicU64::new(0),
    region: AtomicPtr::new(null_mut()),
    active: AtomicUsize::new(0),
    sleeping: AtomicUsize::new(0),
    threads: Mutex::new(Vec::new()),
};

/// Runs `work(0)` on the calling thread and `work(k)`, `k` in `1..team`, on the crew's helpers
/// that join before the region closes; returns once `work(0)` has returned and every helper that
/// joined has left. `work` must itself hand out the region's tasks (a helper may join late, or
/// not at all) and must not unwind (`team::run` catches each task's panic). Returns false,
/// having run nothing, when the crew is running another region.
pub(super) fn run(team: usize, work: &(dyn Fn(usize) + Sync)) -> bool {
    let c = &CREW;
    if c.busy
        .compare_exchange(false, true, SeqCst, SeqCst)
        .is_err()
    {
        return false;
    }
    c.hire(team - 1);
    let region = Region { work, team };
    /// Closes the region when the caller is done (also if `work(0)` unwinds): no helper reads
    /// `region` after this returns.
    struct Close(&'static Crew);
    impl Drop for Close {
        fn drop(&mut self) {
            self.0.region.store(null_mut(), SeqCst);
            while self.0.active.load(SeqCst) > 0 {
                std::hint::spin_loop();
            }
            self.0.busy.store(false, SeqCst);
        }
    }
    let close = Close(c);
    // The lifetime is erased for the shared pointer; `close` nulls it and waits out every helper
    // that loaded it before `region` and `work` go out of scope.
    c.region
        .store((&region as *const Region<'_>).cast_mut().cast(), SeqCst);
    c.epoch.fetch_add(1, SeqCst);
    // A helper counts itself in `sleeping` before its last look at `epoch` and parking, so
    // either it sees the new epoch or this sees it sleeping (both sequentially consistent).
    // (Only the helpers this region is for: others, left from a larger pool, stay parked.)
    if c.sleeping.load(SeqCst) > 0 {
        let threads = c.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for t in threads.iter().take(team - 1) {
            t.unpark();
        }
    }
    work(0);
    drop(close);
    true
}

impl Crew {
    /// Starts helpers until there are `n` (fewer if the system refuses threads: their shares
    /// are then taken by the threads that run).
    fn hire(&'static self, n: usize) {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        while threads.len() < n {
            let k = threads.len() + 1;
            // The helper starts from the current epoch, so it joins the region about to open.
            let seen = self.epoch.load(SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("quill-crew-{k}"))
                .spawn(move || self.serve(k, seen));
            match spawned {
                Ok(h) => threads.push(h.thread().clone()),
                Err(_) => return,
            }
        }
    }

    /// Helper `k`'s life: wait for a region, join it, leave it.
    fn serve(&self, k: usize, mut seen: u64) {
        // Idle time counts from the last region this helper joined: regions for fewer threads
        // (a smaller pool's) do not keep it awake.
        let mut worked = Instant::now();
        loop {
            seen = self.wait(seen, worked);
            self.active.fetch_add(1, SeqCst);
            let p = self.region.load(SeqCst);
            if !p.is_null() {
                // SAFETY: a non-null `region` is the open region's, and its caller waits until
                // `active` (counted above, before the load) is zero before it returns.
                let r = unsafe { &*p };
                if k < r.team {
                    // `work` catches its tasks' panics; this keeps a helper alive (and counted
                    // out of `active`) should anything else unwind.
                    let _ = catch_unwind(AssertUnwindSafe(|| (r.work)(k)));
                    worked = Instant::now();
                }
            }
            self.active.fetch_sub(1, SeqCst);
        }
    }

    /// Waits until `epoch` differs from `seen` and returns it: spinning, then yielding, then
    /// parked, by the time since `start`.
    fn wait(&self, seen: u64, start: Instant) -> u64 {
        let mut spins = 0u32;
        loop {
            let e = self.epoch.load(SeqCst);
            if e != seen {
                return e;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let idle = start.elapsed();
            if idle < SPIN {
                std::hint::spin_loop();
            } else if idle < YIELD {
                std::thread::yield_now();
            } else {
                self.sleeping.fetch_add(1, SeqCst);
                if self.epoch.load(SeqCst) == seen {
                    std::thread::park();
                }
                self.sleeping.fetch_sub(1, SeqCst);
            }
        }
    }
}
