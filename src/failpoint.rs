//! Named crash points for the crash-safety tests: when the environment
//! variable `EMBARGO_RELAY_FAILPOINT` names a point, the process aborts
//! there, as a `kill -9` would stop it. Unset (always, in production), a
//! point costs one environment look-up.
//!
//! The value is `POINT` (abort at the first hit), `POINT@N` (abort at the
//! N-th hit, e.g. mid-fan-out), `POINT:stall` (block that thread forever,
//! as a hung disk would; for the watchdog test), `POINT:panic` (panic at
//! every hit, as a bug there would) or `POINT:sleep=MS` (wait MS
//! milliseconds at every hit, for a test to act in between). `POINT:fail`
//! makes [`fails`] say yes there: the code then fails as it would on a real
//! fault (a spool that reports corruption).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable that names the point to abort at.
pub const VAR: &str = "EMBARGO_RELAY_FAILPOINT";

/// How often the named point was reached so far.
static HITS: AtomicUsize = AtomicUsize::new(0);

/// Aborts (or stalls) the process if `VAR` names `point`.
pub fn hit(point: &str) {
    let Some(value) = std::env::var_os(VAR) else {
        return;
    };
    let value = value.to_string_lossy();
    let (name, action) = match value.split_once(['@', ':']) {
        Some((name, rest)) => (name, rest),
        None => (value.as_ref(), "1"),
    };
    if name != point {
        return;
    }
    if action == "panic" {
        panic!("failpoint {point}: panicking");
    }
    if let Some(ms) = action.strip_prefix("sleep=") {
        eprintln!("embargo-relay: failpoint {point}: sleeping {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        return;
    }
    if action == "stall" {
        eprintln!("embargo-relay: failpoint {point}: stalling");
        loop {
            std::thread::park();
        }
    }
    let nth: usize = action.parse().unwrap_or(1);
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= nth {
        eprintln!("embargo-relay: failpoint {point}: aborting");
        std::process::abort();
    }
}

/// Whether `VAR` asks the code at `point` to fail (`POINT:fail`).
pub fn fails(point: &str) -> bool {
    std::env::var_os(VAR).is_some_and(|v| v.to_string_lossy() == format!("{point}:fail"))
}
