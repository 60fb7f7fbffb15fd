//! Rayon thread pools that stay correct after `fork()`.
//!
//! Beam starts SDK workers as processes. A forked child inherits a copy of the parent's memory,
//! including rayon's pool bookkeeping, but none of its threads: using the parent's pool in the
//! child would hang forever. We therefore never use rayon's global pool; each pool is built
//! lazily and tagged with the pid that built it, and a pid change rebuilds it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

struct Pools {
    pid: u32,
    by_threads: HashMap<usize, Arc<ThreadPool>>,
}

fn registry() -> &'static Mutex<Pools> {
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(Pools { pid: std::process::id(), by_threads: HashMap::new() }))
}

/// The most threads one hashing call may ask for. Far above any machine's cores; it stops a
/// mistyped count from starting (and keeping) tens of thousands of threads.
pub const MAX_THREADS: usize = 1024;

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn pool_for(threads: usize) -> Arc<ThreadPool> {
    let mut pools = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = std::process::id();
    if pools.pid != pid {
        // We are in a forked child. The parent's pools have no threads here; forget them
        // without running their destructors (which would wait for threads that do not exist).
        for (_, pool) in pools.by_threads.drain() {
            std::mem::forget(pool);
        }
        pools.pid = pid;
    }
    pools
        .by_threads
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("beam-phash-{i}"))
                    .build()
                    .expect("cannot start hashing threads"),
            )
        })
        .clone()
}

/// Run `f` inside a pool of `threads` threads (None: one per core).
pub fn install<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> R {
    let threads = threads.unwrap_or_else(default_threads).max(1);
    pool_for(threads).install(f)
}
