//! A release hook's call (issue 21): a signed JSON POST (`webhook`) or
//! GitHub's publish call for a repository security advisory (`github`),
//! made once the row's checks in `deliver.rs` passed (for a lift hook:
//! never before the lift, by the clock now and the time that passed).
//! Its outcome is recorded like a mail's: 2xx sent, 408/425/429/5xx and
//! no answer retried with the outbound backoff, any other answer failed
//! for good; the PST hears of a failure in a fresh receipt.
//!
//! Exactly once per success, as for releases: the outcome is committed
//! after the 2xx, and a crash in between calls the hook again at restart.
//! Every call of one delivery carries the same `X-Embargo-Relay-Delivery`
//! id, so a receiver can tell a repeat; publishing a GitHub advisory twice
//! publishes it once.

use hyper::body::Bytes;

use crate::config::{HookKind, ReleaseHook};
use crate::context::Pinned;
use crate::discovery::https::{Client, Failure, Request};
use crate::record::Record;
use crate::spool::{DueDelivery, Kind};

/// The header with the body's HMAC-SHA256 (`sha256=<hex>`), keyed with the
/// hook's secret.
const SIGNATURE_HEADER: &str = "X-Embargo-Relay-Signature";
/// The header naming the delivery: the same on every call of it.
const DELIVERY_HEADER: &str = "X-Embargo-Relay-Delivery";
/// The header naming the event: `lift` or `cancel`.
const EVENT_HEADER: &str = "X-Embargo-Relay-Event";
/// The GitHub REST API version the `github` hook speaks.
const GITHUB_API_VERSION: &str = "2022-11-28";

/// The most of an answer read (it is never shown: only its status).
const MAX_ANSWER: usize = 64 * 1024;

/// What one call sends.
struct Call {
    method: hyper::Method,
    url: crate::discovery::https::Url,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

/// How a call went, for `deliver.rs` to record.
pub(super) enum Called {
    /// A 2xx answer: done.
    Sent(String),
    /// No answer, or one worth trying again: retried with backoff.
    Retry(String),
    /// Any other answer, or nothing to call: failed for good.
    Failed(String),
    /// Shutdown came first: still pending, called again after the restart.
    Abandoned,
}

/// Calls the hook of delivery `d`.
pub(super) async fn call(
    pinned: &Pinned,
    shutdown: &tokio_util::sync::CancellationToken,
    a: &Record,
    d: &DueDelivery,
) -> Called {
    let config = pinned.config();
    let (name, advisory) = crate::config::hook_row(&d.to);
    let Some(hook) = config.hook(name) else {
        tracing::error!(message_id = %d.message_id, hook = %name, "release hook no longer configured: not called");
        return Called::Failed(format!(
            "the hook `{name}` is no longer configured: not called"
        ));
    };
    let call = match prepare(hook, pinned, a, d, advisory) {
        Ok(call) => call,
        Err(why) => {
            tracing::error!(message_id = %d.message_id, hook = %name, %why, "release hook not called");
            return Called::Failed(why);
        }
    };
    crate::failpoint::hit("before-hook");
    let client = Client::new(
        hook.extra_ca.as_deref(),
        Vec::new(),
        hook.timeout,
        MAX_ANSWER,
    );
    let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    // Unlike a public release, a call is abandoned on shutdown (an
    // endpoint that hangs would hold the stop for up to its timeout): it
    // stays pending and is made again, with the same delivery id, after
    // the restart.
    let answer = match &client {
        Ok(client) => {
            let request = Request {
                method: call.method.clone(),
                url: &call.url,
                headers: &headers,
                body: call.body.clone(),
            };
            let send = client.send(&request);
            tokio::select! {
                _ = shutdown.cancelled() => return Called::Abandoned,
                answer = send => answer,
            }
        }
        Err(e) => Err(Failure::Other(e.clone())),
    };
    let status = match answer {
        Ok(r) => r.status,
        Err(e) => {
            // The words of a TLS or connection error name the host (from
            // the configuration), never the path (a GitHub advisory's
            // repository is embargoed until it is published).
            tracing::warn!(message_id = %d.message_id, hook = %name, error = %e, "release hook: no answer");
            return Called::Retry(format!("no answer: {e}"));
        }
    };
    let detail = format!("the endpoint answered HTTP {status}");
    match status {
        200..=299 => {
            tracing::info!(message_id = %d.message_id, hook = %name, status, kind = ?d.kind, "release hook called");
            Called::Sent(detail)
        }
        408 | 425 | 429 | 500..=599 => {
            tracing::warn!(message_id = %d.message_id, hook = %name, status, "release hook failed; retried");
            Called::Retry(detail)
        }
        _ => {
            tracing::error!(message_id = %d.message_id, hook = %name, status, "release hook refused; not retried");
            Called::Failed(format!("{detail}; not retried"))
        }
    }
}

/// The request for delivery `d` of `hook`: what it says is public by now
/// (a lift hook runs only after its checks in `deliver_one`), or, for a
/// cancel, nothing from the announcement at all.
fn prepare(
    hook: &ReleaseHook,
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
    advisory: Option<usize>,
) -> Result<Call, String> {
    match hook.kind {
        HookKind::Webhook => {
            let body = webhook_body(relay, a, d);
            let signature = crate::crypto::hmac_sha256_hex(hook.secret.expose(), &body)?;
            let event = if d.kind == Kind::CancelHook {
                "cancel"
            } else {
                "lift"
            };
            Ok(Call {
                method: hyper::Method::POST,
                url: hook.url.clone(),
                headers: vec![
                    ("Content-Type", "application/json".to_owned()),
                    (SIGNATURE_HEADER, format!("sha256={signature}")),
                    (DELIVERY_HEADER, d.copy_id.clone()),
                    (EVENT_HEADER, event.to_owned()),
                ],
                body: Bytes::from(body),
            })
        }
        HookKind::Github => {
            let n = advisory.ok_or("a github hook's delivery names no advisory")?;
            let gh = n
                .checked_sub(1)
                .and_then(|i| a.terms.github.get(i))
                .ok_or_else(|| format!("the announcement names no GitHub advisory #{n}"))?;
            let token = std::str::from_utf8(hook.secret.expose())
                .map_err(|_| "the GitHub token is not text".to_owned())?;
            Ok(Call {
                method: hyper::Method::PATCH,
                url: hook.url.with_path(&github_path(gh)),
                headers: vec![
                    ("Accept", "application/vnd.github+json".to_owned()),
                    ("X-GitHub-Api-Version", GITHUB_API_VERSION.to_owned()),
                    ("Authorization", format!("Bearer {token}")),
                    ("Content-Type", "application/json".to_owned()),
                    (DELIVERY_HEADER, d.copy_id.clone()),
                ],
                body: Bytes::from_static(br#"{"state":"published"}"#),
            })
        }
    }
}

/// `PATCH /repos/{owner}/{repo}/security-advisories/{ghsa_id}`: the
/// names are checked when the announcement is read (letters, digits and
/// `-._` only), so nothing needs escaping.
fn github_path(a: &crate::embargo::GithubAdvisory) -> String {
    format!(
        "/repos/{}/{}/security-advisories/{}",
        a.owner, a.repo, a.ghsa
    )
}

/// The webhook's JSON body. At the lift: the embargo, its lift time, the
/// public lists, the public advisory's subject and text (none held:
/// null). At a cancel: the embargo and when, nothing of the announcement.
fn webhook_body(relay: &Pinned, a: &Record, d: &DueDelivery) -> Vec<u8> {
    let config = relay.config();
    let now = relay.clock.now();
    let body = if d.kind == Kind::CancelHook {
        serde_json::json!({
            "event": "cancel",
            "list": config.list_address,
            "embargo": d.message_id,
            "delivery": d.copy_id,
            "cancelled_at": now.to_rfc3339(),
        })
    } else {
        serde_json::json!({
            "event": "lift",
            "list": config.list_address,
            "embargo": d.message_id,
            "delivery": d.copy_id,
            "lift_time": a.terms.until.to_rfc3339(),
            "called_at": now.to_rfc3339(),
            "public_lists": a.public_to,
            "subject": a.subject,
            "advisory": crate::embargo::public_advisory(a.entity.expose()),
        })
    };
    body.to_string().into_bytes()
}
