//! A release hook's call (issue 21): a signed JSON POST (`webhook`) or
//! GitHub's publish call for the repository security advisories an
//! announcement names (`github`), made once the row's checks in
//! `deliver.rs` passed (for a lift hook: never before the lift, by the
//! clock now and the time that passed). Judged by the answer's status
//! alone (its body is never read, however long: nor shown): 2xx sent;
//! 408, 425, 429, 5xx, a GitHub rate limit and no answer retried with the
//! outbound backoff; any other answer failed for good (for GitHub, unless
//! the advisory is published already). The PST hears of a failure in a
//! fresh receipt.
//!
//! Exactly once per success, as for releases: the outcome is committed
//! after the answer, and a crash in between calls the hook again at
//! restart. Every call of one delivery carries the same
//! `X-Embargo-Relay-Delivery` id, so a receiver can tell a repeat; an
//! advisory GitHub already shows as published counts as published.

use hyper::body::Bytes;

use crate::config::{HookKind, ReleaseHook};
use crate::context::Pinned;
use crate::discovery::https::{Client, Request, Response, Url};
use crate::embargo::GithubAdvisory;
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

/// The most of an answer read: a GitHub advisory, when a refused publish
/// call is checked against its state.
const MAX_ANSWER: usize = 1 << 20;

/// How a call went, for `deliver.rs` to record. The words name the hook's
/// answer (a status), never an advisory (embargoed until published).
pub(super) enum Called {
    /// Done.
    Sent(String),
    /// No answer, or one worth trying again: retried with backoff.
    Retry(String),
    /// Any other answer, or nothing to call: failed for good.
    Failed(String),
    /// Shutdown came first: still pending, called again after the restart.
    Abandoned,
}

/// How one answer is taken.
enum Verdict {
    Done,
    Retry,
    Refused,
}

/// 2xx done; 408, 425, 429, 5xx retried, and a 403 that says it is a rate
/// limit (GitHub's, with `retry-after` or no requests left); the rest refused.
fn verdict(r: &Response) -> Verdict {
    let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
    let rate_limited = r.status == 403
        && (header("retry-after").is_some() || header("x-ratelimit-remaining") == Some("0"));
    match r.status {
        200..=299 => Verdict::Done,
        408 | 425 | 429 | 500..=599 => Verdict::Retry,
        _ if rate_limited => Verdict::Retry,
        _ => Verdict::Refused,
    }
}

/// Calls the hook of delivery `d`.
pub(super) async fn call(
    pinned: &Pinned,
    shutdown: &tokio_util::sync::CancellationToken,
    a: &Record,
    d: &DueDelivery,
) -> Called {
    let config = pinned.config();
    let name = d.to.as_str();
    let Some(hook) = config.hook(name) else {
        tracing::error!(message_id = %d.message_id, hook = %name, "release hook no longer configured: not called");
        return Called::Failed(format!(
            "the hook `{name}` is no longer configured: not called"
        ));
    };
    // A reload may have changed what the name stands for.
    let wanted = match d.kind {
        Kind::CancelHook => hook.on_cancel,
        _ => hook.on_lift,
    };
    if !wanted {
        return Called::Failed(format!(
            "the hook `{name}` is no longer called at a {}: not called",
            if d.kind == Kind::CancelHook {
                "cancel"
            } else {
                "lift"
            }
        ));
    }
    let client = match Client::new(
        hook.extra_ca.as_deref(),
        Vec::new(),
        hook.timeout,
        MAX_ANSWER,
    ) {
        Ok(client) => client,
        Err(e) => return Called::Retry(e),
    };
    crate::failpoint::hit("before-hook");
    // Unlike a public release, a call is abandoned on shutdown (an
    // endpoint that hangs would hold the stop for up to its timeout): it
    // stays pending and is made again, with the same delivery id, after
    // the restart.
    let called = async {
        match hook.kind {
            HookKind::Webhook => webhook(&client, hook, pinned, a, d).await,
            HookKind::Github => github(&client, hook, a, d).await,
        }
    };
    let called = tokio::select! {
        _ = shutdown.cancelled() => Called::Abandoned,
        called = called => called,
    };
    match &called {
        Called::Sent(detail) => {
            tracing::info!(message_id = %d.message_id, hook = %name, kind = ?d.kind, %detail, "release hook called")
        }
        Called::Retry(detail) => {
            tracing::warn!(message_id = %d.message_id, hook = %name, %detail, "release hook failed; retried")
        }
        Called::Failed(detail) => {
            tracing::error!(message_id = %d.message_id, hook = %name, %detail, "release hook refused; not retried")
        }
        Called::Abandoned => {}
    }
    called
}

/// The webhook's signed POST.
async fn webhook(
    client: &Client,
    hook: &ReleaseHook,
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
) -> Called {
    let body = webhook_body(relay, a, d);
    let signature = match crate::crypto::hmac_sha256_hex(hook.secret.expose(), &body) {
        Ok(s) => format!("sha256={s}"),
        Err(e) => return Called::Retry(e),
    };
    let event = if d.kind == Kind::CancelHook {
        "cancel"
    } else {
        "lift"
    };
    let headers = [
        ("Content-Type", "application/json"),
        (SIGNATURE_HEADER, signature.as_str()),
        (DELIVERY_HEADER, d.copy_id.as_str()),
        (EVENT_HEADER, event),
    ];
    let request = Request {
        method: hyper::Method::POST,
        url: &hook.url,
        headers: &headers,
        body: Bytes::from(body),
    };
    match client.send_for_status(&request).await {
        // The words of a TLS or connection error name the host (from
        // the configuration), never more.
        Err(e) => Called::Retry(format!("no answer: {e}")),
        Ok(r) => {
            let detail = format!("the endpoint answered HTTP {}", r.status);
            match verdict(&r) {
                Verdict::Done => Called::Sent(detail),
                Verdict::Retry => Called::Retry(detail),
                Verdict::Refused => Called::Failed(format!("{detail}; not retried")),
            }
        }
    }
}

/// Publishes each advisory the announcement names, in order: done when
/// every one is published (or GitHub shows it published already).
async fn github(client: &Client, hook: &ReleaseHook, a: &Record, d: &DueDelivery) -> Called {
    let all = &a.terms.github;
    if all.is_empty() {
        return Called::Failed("the announcement names no GitHub advisory".to_owned());
    }
    let Ok(token) = std::str::from_utf8(hook.secret.expose()) else {
        return Called::Failed("the GitHub token is not text".to_owned());
    };
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Accept", "application/vnd.github+json"),
        ("X-GitHub-Api-Version", GITHUB_API_VERSION),
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
        (DELIVERY_HEADER, d.copy_id.as_str()),
    ];
    let (mut retry, mut refused) = (None, Vec::new());
    for (i, advisory) in all.iter().enumerate() {
        // Named by its place only: the advisory is embargoed until it is published.
        let which = format!("advisory {} of {}", i + 1, all.len());
        let url = hook.url.with_path(&github_path(advisory));
        let request = Request {
            method: hyper::Method::PATCH,
            url: &url,
            headers: &headers,
            body: Bytes::from_static(br#"{"state":"published"}"#),
        };
        let answer = match client.send_for_status(&request).await {
            Ok(r) => r,
            Err(e) => {
                retry.get_or_insert(format!("{which}: no answer: {e}"));
                continue;
            }
        };
        match verdict(&answer) {
            Verdict::Done => {}
            Verdict::Retry => {
                retry.get_or_insert(format!("{which}: GitHub answered HTTP {}", answer.status));
            }
            Verdict::Refused if published(client, &url, &headers).await => {}
            Verdict::Refused => refused.push(format!(
                "{which}: GitHub answered HTTP {}; not retried",
                answer.status
            )),
        }
    }
    match (retry, refused.is_empty()) {
        (Some(why), _) => Called::Retry(why),
        (None, false) => Called::Failed(refused.join("; ")),
        (None, true) => Called::Sent(format!(
            "GitHub shows {} advisory(ies) published",
            all.len()
        )),
    }
}

/// Whether GitHub shows the advisory at `url` as published (a publish
/// call refused because it is, say, after a crash between GitHub's answer
/// and the outcome's commit).
async fn published(client: &Client, url: &Url, headers: &[(&str, &str)]) -> bool {
    let request = Request {
        method: hyper::Method::GET,
        url,
        headers: &headers[..3],
        body: Bytes::new(),
    };
    let Ok(answer) = client.send(&request).await else {
        return false;
    };
    answer.status == 200
        && serde_json::from_slice::<serde_json::Value>(&answer.body)
            .is_ok_and(|v| v["state"] == "published")
}

/// `PATCH /repos/{owner}/{repo}/security-advisories/{ghsa_id}`: the
/// names are checked when the announcement is read (letters, digits and
/// `-._` only), so nothing needs escaping.
fn github_path(a: &GithubAdvisory) -> String {
    format!(
        "/repos/{}/{}/security-advisories/{}",
        a.owner, a.repo, a.ghsa
    )
}

/// The webhook's JSON body. At the lift: the embargo, its lift time, the
/// public lists and, when a public advisory was held, its subject and
/// text (else both null: nothing of the announcement). At a cancel: the
/// embargo and when, nothing of the announcement.
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
        let advisory =
            crate::embargo::public_advisory(a.entity.expose()).filter(|_| !a.public_to.is_empty());
        let subject = advisory.as_ref().map(|_| a.subject.as_str());
        serde_json::json!({
            "event": "lift",
            "list": config.list_address,
            "embargo": d.message_id,
            "delivery": d.copy_id,
            "lift_time": a.terms.until.to_rfc3339(),
            "called_at": now.to_rfc3339(),
            "public_lists": a.public_to,
            "subject": subject,
            "advisory": advisory,
        })
    };
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status from 100 to 599, with and without GitHub's rate-limit
    /// headers: only 2xx is done; 408, 425, 429, 5xx and a 403 that says
    /// it is a rate limit are retried; the rest refused.
    #[test]
    fn answers_are_judged_by_status_and_rate_limit() {
        let answer = |status: u16, headers: &[(&'static str, &'static str)]| {
            let mut map = hyper::HeaderMap::new();
            for (n, v) in headers {
                map.insert(*n, v.parse().unwrap());
            }
            Response {
                status,
                headers: map,
                body: Bytes::new(),
            }
        };
        for status in 100..600u16 {
            let plain = verdict(&answer(status, &[]));
            let expected = match status {
                200..=299 => "done",
                408 | 425 | 429 | 500..=599 => "retry",
                _ => "refused",
            };
            let got = |v: Verdict| match v {
                Verdict::Done => "done",
                Verdict::Retry => "retry",
                Verdict::Refused => "refused",
            };
            assert_eq!(got(plain), expected, "{status}");
            for limited in [
                &[("retry-after", "60")][..],
                &[("x-ratelimit-remaining", "0")][..],
            ] {
                let v = got(verdict(&answer(status, limited)));
                let want = if status == 403 { "retry" } else { expected };
                assert_eq!(v, want, "{status} {limited:?}");
            }
            let not_limited = got(verdict(&answer(
                status,
                &[("x-ratelimit-remaining", "4999")],
            )));
            assert_eq!(not_limited, expected, "{status}");
        }
    }
}
