//! The operator's commands: `embargo` (list, show, extend, cancel, release
//! now), `roster`, `audit` and `status`. They change the spool directly; a running daemon notices within a
//! second (`PRAGMA data_version`).

use chrono::{DateTime, Utc};

use crate::spool::EmbargoInfo;

mod audit;
mod embargo;
mod roster;
mod status;

pub use audit::audit;
pub use embargo::embargo;
pub use roster::roster;
pub use status::status;

/// Who the audit trail names for changes made here.
const ACTOR: &str = "operator (CLI)";

fn time_left(e: &EmbargoInfo, now: DateTime<Utc>) -> String {
    let left = e.until - now;
    if e.cancelled || left <= chrono::Duration::zero() {
        return "-".to_owned();
    }
    let (d, h, m) = (
        left.num_days(),
        left.num_hours() % 24,
        left.num_minutes() % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else {
        format!("{h}h {m}m")
    }
}

fn releases(e: &EmbargoInfo) -> String {
    if e.releases.is_empty() {
        return "none held".to_owned();
    }
    e.releases
        .iter()
        .map(|(to, state)| format!("{to} ({state})"))
        .collect::<Vec<_>>()
        .join(", ")
}
