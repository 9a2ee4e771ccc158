//! The JSON API: what `status` and `embargo show` print, as data. Ids,
//! times, addresses, organizations and states only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{EmbargoPath, Web, blocking, json, relay_of};
use crate::spool::{DeliveryState, EmbargoInfo, Kind};

/// One list: its embargoes, its queue, its members' key health.
#[derive(Debug, Serialize)]
pub(crate) struct ListView {
    pub address: String,
    pub embargoes: Vec<EmbargoView>,
    /// Deliveries not sent yet, and given up on.
    pub pending: usize,
    pub failed: usize,
    /// Members whose key needs attention: address, organization, problem
    /// (the list's own words), whether it cannot be used now.
    pub keys: Vec<KeyView>,
    /// Every member's key: days until it stops receiving (`null`: never
    /// expires, or cannot receive now: see `keys`), soonest first.
    pub key_expiry: Vec<ExpiryView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ExpiryView {
    pub member: String,
    pub organization: String,
    /// `openpgp` or `smime`.
    pub kind: &'static str,
    pub days_left: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct KeyView {
    pub member: String,
    pub organization: String,
    pub problem: String,
    pub unusable: bool,
}

/// One embargo (an announcement), by its id as the PST's receipt names it.
#[derive(Debug, Serialize)]
pub(crate) struct EmbargoView {
    pub id: String,
    /// `held`, `lifted` or `cancelled`.
    pub state: String,
    pub lifts_at: String,
    /// Negative once lifted.
    pub seconds_to_lift: i64,
    pub received_at: String,
    pub copies: Copies,
    pub releases: Vec<Release>,
    /// Release hooks: `to` is the hook's name (`<name>#<n>` for a GitHub
    /// advisory, `<name> (cancel)` for a cancel's call).
    pub hooks: Vec<Release>,
    pub acknowledged: usize,
    /// Per member (`GET /api/v1/lists/{list}/embargoes/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberView>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Copies {
    pub sent: usize,
    pub pending: usize,
    pub skipped: usize,
    pub failed: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Release {
    pub to: String,
    pub state: String,
}

/// One member's copy of an embargo.
#[derive(Debug, Serialize)]
pub(crate) struct MemberView {
    pub address: String,
    pub organization: String,
    /// `scheduled` (not tried yet), `retrying`, `sent`, `skipped` (a key
    /// problem: nothing was sent), `failed` or `bounced`.
    pub state: String,
    pub acknowledged: bool,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn view(e: &EmbargoInfo, now: chrono::DateTime<chrono::Utc>, acknowledged: usize) -> EmbargoView {
    EmbargoView {
        id: e.id.clone(),
        state: e.state(now).to_string(),
        lifts_at: rfc3339(e.until),
        seconds_to_lift: (e.until - now).num_seconds(),
        received_at: rfc3339(e.received_at),
        copies: Copies {
            sent: e.copies.sent,
            pending: e.copies.pending,
            skipped: e.copies.skipped,
            failed: e.copies.failed,
        },
        releases: e
            .releases
            .iter()
            .map(|(to, state)| Release {
                to: to.clone(),
                state: state.clone(),
            })
            .collect(),
        hooks: e
            .hooks
            .iter()
            .map(|(to, state)| Release {
                to: to.clone(),
                state: state.clone(),
            })
            .collect(),
        acknowledged,
        members: None,
    }
}

/// `GET /api/v1/lists`: every list the daemon serves.
pub(crate) async fn lists(State(web): State<Arc<Web>>) -> Response {
    let relays = web.relays.get();
    let answer = blocking(move || {
        let mut out = Vec::new();
        for relay in relays {
            let now = relay.clock.now();
            let config = relay.config();
            let mut embargoes = Vec::new();
            for e in relay.spool.embargoes()? {
                let acked = relay.spool.acks(&e.id)?.len();
                embargoes.push(view(&e, now, acked));
            }
            let tally = relay.spool.delivery_tally()?;
            let state = |states: &[DeliveryState]| {
                tally
                    .iter()
                    .filter(|t| states.contains(&t.state))
                    .map(|t| t.count)
                    .sum::<usize>()
            };
            let directory = relay.directory();
            // The list's own S/MIME certificate first, as `status` has it.
            let list_keys = crate::keycheck::list_smime_issues(&config, now)
                .into_iter()
                .map(|i| KeyView {
                    member: config.list_address.clone(),
                    organization: "(the list's S/MIME certificate)".to_owned(),
                    problem: i.problem,
                    unusable: i.unusable,
                });
            let keys = list_keys
                .chain(directory.roster.members().iter().flat_map(|m| {
                    crate::keycheck::member_issues(m, now)
                        .into_iter()
                        .map(move |i| KeyView {
                            member: m.email.clone(),
                            organization: m.organization.clone(),
                            problem: i.problem,
                            unusable: i.unusable,
                        })
                }))
                .collect();
            let mut key_expiry: Vec<ExpiryView> = directory
                .roster
                .members()
                .iter()
                .map(|m| ExpiryView {
                    member: m.email.clone(),
                    organization: m.organization.clone(),
                    kind: if m.is_smime() { "smime" } else { "openpgp" },
                    days_left: crate::keycheck::member_receives_until(m, now)
                        .map(|t| (t - now).num_days()),
                })
                .collect();
            key_expiry.sort_by_key(|k| k.days_left.unwrap_or(i64::MAX));
            out.push(ListView {
                address: config.list_address.clone(),
                embargoes,
                pending: state(&[DeliveryState::Pending]),
                // A bounced copy failed too, as `status` counts it.
                failed: state(&[DeliveryState::Failed, DeliveryState::Bounced]),
                keys,
                key_expiry,
            });
        }
        Ok(serde_json::json!({ "lists": out }))
    })
    .await;
    match answer {
        Ok(v) => json(v),
        Err(r) => r,
    }
}

/// `GET /api/v1/lists/{list}/embargoes/{id}`: one embargo, member by member.
pub(crate) async fn embargo(State(web): State<Arc<Web>>, path: EmbargoPath) -> Response {
    let (list, id) = path.0;
    let Some(relay) = relay_of(&web, &list) else {
        return (StatusCode::NOT_FOUND, "no such list\n").into_response();
    };
    let answer = blocking(move || {
        let now = relay.clock.now();
        let e = match relay.spool.embargo(&id) {
            Ok(e) => e,
            Err(crate::spool::SpoolError::Refused(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let acks = relay.spool.acks(&id)?;
        let acked: std::collections::HashSet<String> =
            acks.iter().map(|(a, _)| a.to_ascii_lowercase()).collect();
        let directory = relay.directory();
        // One read of the copies, each looked up once: a large roster is
        // not scanned per member.
        let members = relay
            .spool
            .deliveries(Some(&id), None)?
            .into_iter()
            .filter(|d| d.kind == Kind::Copy)
            .map(|d| {
                // A pending copy not tried yet is scheduled; tried, retrying.
                let state = match d.state {
                    DeliveryState::Pending if d.attempts > 0 => "retrying".to_owned(),
                    DeliveryState::Pending => "scheduled".to_owned(),
                    other => other.to_string(),
                };
                MemberView {
                    organization: directory
                        .roster
                        .find(&d.member)
                        .map(|m| m.organization.clone())
                        .unwrap_or_default(),
                    acknowledged: acked.contains(&d.member.to_ascii_lowercase()),
                    address: d.member,
                    state,
                }
            })
            .collect();
        let mut v = view(&e, now, acks.len());
        v.members = Some(members);
        Ok(Some(v))
    })
    .await;
    match answer {
        Ok(Some(v)) => json(v),
        Ok(None) => (StatusCode::NOT_FOUND, "no such embargo\n").into_response(),
        Err(r) => r,
    }
}

/// One audit record as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct AuditView {
    pub at: String,
    pub event: String,
    pub embargo: Option<String>,
    pub member: Option<String>,
    /// The list's own words (a refusal's reason and peer, a delivery's
    /// outcome); withheld for bounces, whose detail quotes a remote server.
    pub detail: String,
}

/// The events whose detail quotes someone else's words.
fn withheld(event: &str) -> bool {
    event.starts_with("bounce") || event.starts_with("dsn")
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/lists/{list}/audit?limit=N`: the newest records first
/// (200 by default, at most 1000), this list's and the daemon's.
pub(crate) async fn audit(
    State(web): State<Arc<Web>>,
    axum::extract::Path(list): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Response {
    let Some(relay) = relay_of(&web, &list) else {
        return (StatusCode::NOT_FOUND, "no such list\n").into_response();
    };
    let limit = q.limit.unwrap_or(200).min(1000);
    let answer = blocking(move || {
        let records = relay.spool.audit_newest(limit)?;
        Ok(records
            .into_iter()
            .map(|r| AuditView {
                at: rfc3339(r.at),
                detail: if withheld(&r.event) {
                    "(the remote server's words are withheld here; `embargo-relay audit` shows them)".to_owned()
                } else {
                    r.detail
                },
                event: r.event,
                embargo: r.message_id,
                member: r.member,
            })
            .collect::<Vec<_>>())
    })
    .await;
    match answer {
        Ok(v) => json(serde_json::json!({ "audit": v })),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::withheld;

    #[test]
    fn a_bounces_remote_words_are_withheld_the_lists_own_are_not() {
        for event in ["bounced", "dsn-dropped"] {
            assert!(withheld(event), "{event}");
        }
        for event in [
            "rejected",
            "acknowledged",
            "sent",
            "roster-add",
            "key-refresh",
        ] {
            assert!(!withheld(event), "{event}");
        }
    }
}
