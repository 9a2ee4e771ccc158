//! Named crash points for the crash-safety tests: when the environment
//! variable `EMBARGO_RELAY_FAILPOINT` names a point, the process aborts
//! there, as a `kill -9` would stop it. Unset (always, in production), a
//! point costs one environment look-up.

/// The environment variable that names the point to abort at.
pub const VAR: &str = "EMBARGO_RELAY_FAILPOINT";

/// Aborts the process if `VAR` names `point`.
pub fn hit(point: &str) {
    if std::env::var_os(VAR).is_some_and(|v| v == point) {
        eprintln!("embargo-relay: failpoint {point}: aborting");
        std::process::abort();
    }
}
