//! Rayon thread pools that stay correct after `fork()`.
//!
//! Beam starts SDK workers as processes. A forked child inherits a copy of the parent's memory,
//! including rayon's pool bookkeeping, but none of its threads: using the parent's pool in the
//! child would hang forever. We therefore never use rayon's global pool. Each process has its own
//! registry of pools, tagged with the pid that made it; a process whose pid differs from its
//! registry's (a forked child) makes a fresh one and never touches the parent's, whose lock may
//! have been held, at the fork, by a thread that does not exist in the child.
//!
//! A registry keeps the pools of the `POOLS_KEPT` thread counts used last, so a caller that
//! varies `threads` does not keep a pool (and its threads) per count it ever asked for.
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::Error;

/// The most threads one hashing call may ask for. Far above any machine's cores; it stops a
/// mistyped count from starting (and keeping) tens of thousands of threads.
pub const MAX_THREADS: usize = 1024;

/// Pools kept per process: those of the thread counts used last (the default count among them,
/// as long as it is in use).
pub const POOLS_KEPT: usize = 4;

struct Registry {
    pid: u32,
    /// (threads, pool), the pool used last at the end.
    pools: Mutex<Vec<(usize, Arc<ThreadPool>)>>,
}

impl Registry {
    fn pools(&self) -> MutexGuard<'_, Vec<(usize, Arc<ThreadPool>)>> {
        self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// This process's registry. Never freed: a forked child leaves its parent's copy (lock, pools
/// without threads) untouched, as dropping the pools would wait for threads that do not exist.
static CURRENT: AtomicPtr<Registry> = AtomicPtr::new(ptr::null_mut());

fn registry() -> &'static Registry {
    let pid = std::process::id();
    loop {
        let current = CURRENT.load(Ordering::Acquire);
        // SAFETY: a published registry is never freed.
        if let Some(found) = unsafe { current.as_ref() } {
            if found.pid == pid {
                return found;
            }
        }
        let fresh = Box::into_raw(Box::new(Registry { pid, pools: Mutex::new(Vec::new()) }));
        match CURRENT.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just published, never freed.
            Ok(_) => return unsafe { &*fresh },
            // Another thread of this process published one first: use that one.
            // SAFETY: `fresh` was never published.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The pool of `threads` threads; an error when the system will not start them (a container's
/// pid or memory limit), which the caller reports rather than panicking.
fn pool_for(threads: usize) -> Result<Arc<ThreadPool>, Error> {
    let mut pools = registry().pools();
    let pool = match pools.iter().position(|(n, _)| *n == threads) {
        Some(i) => pools.remove(i).1,
        None => Arc::new(
            ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("beam-phash-{i}"))
                .build()
                .map_err(|e| Error::System(format!("cannot start {threads} threads: {e}")))?,
        ),
    };
    pools.push((threads, Arc::clone(&pool)));
    if pools.len() > POOLS_KEPT {
        // The least recently used: its threads end once no call holds it any more.
        pools.remove(0);
    }
    Ok(pool)
}

/// Run `f` inside a pool of `threads` threads (None: one per core).
pub fn install<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R, Error> {
    let threads = threads.unwrap_or_else(default_threads).max(1);
    Ok(pool_for(threads)?.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn sum_in(threads: usize) -> u64 {
        install(Some(threads), || (0..10_000u64).into_par_iter().sum()).unwrap()
    }

    #[test]
    fn keeps_the_pools_of_the_counts_used_last() {
        for threads in 2..=(POOLS_KEPT + 6) {
            assert_eq!(sum_in(threads), 49_995_000);
        }
        let pools = registry().pools();
        assert!(pools.len() <= POOLS_KEPT, "{} pools kept", pools.len());
        drop(pools);
        let last = pool_for(POOLS_KEPT + 6).unwrap();
        assert_eq!(last.current_num_threads(), POOLS_KEPT + 6);
        // The same pool again, not a new one, while it is among the last used.
        assert!(Arc::ptr_eq(&last, &pool_for(POOLS_KEPT + 6).unwrap()));
    }

    /// A child forked while another thread of the parent holds the registry's lock (a call to
    /// `install` in progress) hashes on pools of its own instead of waiting for that lock forever.
    #[test]
    fn a_child_forked_while_the_registry_is_locked_runs() {
        assert_eq!(sum_in(2), 49_995_000);
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = registry().pools();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        locked_rx.recv().unwrap();
        // SAFETY: the child only runs pool code and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let ok = sum_in(2) == 49_995_000 && sum_in(3) == 49_995_000;
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut status = 0;
        loop {
            let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
            if done == child {
                break;
            }
            if Instant::now() > deadline {
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, &mut status, 0);
                }
                panic!("the forked child hung on the parent's registry");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
    }
}
