//! Issue 5, acceptance 1 and 2: transient failures are retried on the
//! Postfix-like backoff (5 min doubling to 1 h) and delivered once; a 5xx
//! or a give-up after the retry lifetime is reported to the PST; one slow
//! member server holds up neither the other members nor the public release.

use std::time::Duration;

use chrono::{DateTime, Utc};
use embargo_relay::clock::{Clock, ManualClock};
use embargo_relay::daemon::Running;
use embargo_relay::sink::CaptureSink;

use crate::common::*;

/// The fixture's list with the production retry schedule (and `extra`
/// settings in `[outbound]`), its daemon in-process on a manual clock.
async fn list_on_manual_clock(
    extra: &[(&'static str, String)],
) -> (Fixture, CaptureSink, ManualClock, Running) {
    let f = Fixture::new();
    let mut outbound = vec![
        ("retry_initial", Tweaks::text("5m")),
        ("retry_max", Tweaks::text("1h")),
    ];
    outbound.extend_from_slice(extra);
    let list = f
        .start_in_process(&Tweaks {
            outbound,
            ..Tweaks::default()
        })
        .await;
    (f, list.sink, list.clock, list.running)
}

/// The `deferred` audit records of `member`, oldest first, with the next
/// attempt time each names.
fn deferrals(f: &Fixture, member: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    f.audit()
        .into_iter()
        .filter(|r| r.event == "deferred" && r.member.as_deref() == Some(member))
        .map(|r| {
            let next = r.detail.rsplit("next attempt at ").next().unwrap();
            (r.at, DateTime::parse_from_rfc3339(next).unwrap().into())
        })
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_451_is_retried_on_the_backoff_schedule_and_delivered_once() {
    let (f, sink, clock, running) = list_on_manual_clock(&[]).await;
    sink.answer_for(GPG_MEMBER, 451, Some(3));
    let t0 = clock.now();
    send(
        running.smtp_addr,
        PST,
        &f.gpg_signed(PST, "retry", &embargoed("body")),
    )
    .await
    .unwrap();
    let mut last = t0;
    for (n, minutes) in [5, 10, 20].into_iter().enumerate() {
        wait_for("the deferral", || deferrals(&f, GPG_MEMBER).len() > n).await;
        let (at, next) = deferrals(&f, GPG_MEMBER)[n];
        assert_eq!(at, last, "attempt {} ran when it fell due", n + 1);
        assert_eq!(
            next - at,
            chrono::Duration::minutes(minutes),
            "retry {}",
            n + 1
        );
        // A second early, nothing happens.
        clock.set(next - chrono::Duration::seconds(1));
        wait_settled(&running.relay, clock.now()).await;
        assert_eq!(sink.attempts(GPG_MEMBER), n + 1, "not retried early");
        clock.set(next);
        last = next;
    }
    let got = sink
        .wait_until(PATIENCE, |got| {
            copies(got)
                .iter()
                .any(|c| c.envelope.rcpt_to == [GPG_MEMBER])
        })
        .await;
    assert_eq!(sink.attempts(GPG_MEMBER), 4, "three 451s, then 250");
    clock.set(last + chrono::Duration::hours(6));
    wait_settled(&running.relay, clock.now()).await;
    let to_member = |got: &[embargo_relay::sink::Captured]| {
        copies(got)
            .iter()
            .filter(|c| c.envelope.rcpt_to == [GPG_MEMBER])
            .count()
    };
    assert_eq!(to_member(&got), 1);
    assert_eq!(
        to_member(&sink.captured()),
        1,
        "delivered once, never again"
    );
    assert_eq!(deferrals(&f, GPG_MEMBER).len(), 3);
    assert!(
        f.audit()
            .iter()
            .any(|r| r.event == "sent" && r.member.as_deref() == Some(GPG_MEMBER)),
        "the copy is recorded as sent"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_550_is_reported_to_the_pst_and_the_other_members_are_unaffected() {
    let f = Fixture::new();
    let daemon = f.start_in_process(&Tweaks::default()).await;
    let sink = &daemon.sink;
    sink.answer_for(SQ_MEMBER, 550, None);
    send(
        daemon.addr(),
        PST,
        &f.gpg_signed(PST, "bounce", &embargoed("CANARY-550")),
    )
    .await
    .unwrap();
    let got = sink
        .wait_until(PATIENCE, |got| !receipts(got).is_empty())
        .await;
    assert_eq!(sink.attempts(SQ_MEMBER), 1, "a 5xx is not retried");
    let delivered: Vec<_> = copies(&got)
        .iter()
        .map(|c| c.envelope.rcpt_to[0].clone())
        .collect();
    for m in f.usable_members().filter(|m| m.email != SQ_MEMBER) {
        assert!(delivered.contains(&m.email), "{} got its copy", m.email);
    }
    let receipt = receipt_texts(&f, &got).join("\n");
    let section = receipt
        .split("NOT DELIVERED")
        .nth(1)
        .unwrap_or_else(|| panic!("the receipt reports the failure: {receipt}"));
    assert!(section.contains(SQ_MEMBER), "{receipt}");
    assert!(section.contains("(Org 2)"), "the organization: {receipt}");
    assert!(
        section.contains("550"),
        "the remote server's answer: {receipt}"
    );
    assert!(!receipt.contains("CANARY-550"), "no content in the report");
    assert!(
        f.audit()
            .iter()
            .any(|r| r.event == "failed" && r.member.as_deref() == Some(SQ_MEMBER))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_is_given_up_after_the_retry_lifetime_and_the_pst_told() {
    let (f, sink, clock, running) =
        list_on_manual_clock(&[("retry_lifetime", Tweaks::text("1h"))]).await;
    sink.answer_for(GPG_MEMBER, 451, None);
    send(
        running.smtp_addr,
        PST,
        &f.gpg_signed(PST, "lifetime", &embargoed("body")),
    )
    .await
    .unwrap();
    // The first receipt (the copy still being retried) goes out at once.
    sink.wait_until(PATIENCE, |got| receipts(got).len() == 1)
        .await;
    // 5, 10, 20, 40 minutes: the attempt at 75 minutes is past the hour.
    for n in 0..4 {
        wait_for("the deferral", || deferrals(&f, GPG_MEMBER).len() > n).await;
        clock.set(deferrals(&f, GPG_MEMBER)[n].1);
    }
    let got = sink
        .wait_until(PATIENCE, |got| receipts(got).len() == 2)
        .await;
    assert_eq!(sink.attempts(GPG_MEMBER), 5);
    let texts = receipt_texts_at(&f, &got, clock.now());
    assert_eq!(texts.len(), 2);
    let last = texts.last().unwrap();
    let section = last
        .split("NOT DELIVERED")
        .nth(1)
        .unwrap_or_else(|| panic!("{last}"));
    assert!(section.contains(GPG_MEMBER), "{last}");
    assert!(section.contains("gave up after 1h"), "{last}");
    assert!(section.contains("451"), "the last answer: {last}");
    clock.set(clock.now() + chrono::Duration::days(1));
    wait_settled(&running.relay, clock.now()).await;
    assert_eq!(sink.attempts(GPG_MEMBER), 5, "never tried again");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_member_server_delays_neither_the_others_nor_the_release() {
    let (f, sink, clock, running) = list_on_manual_clock(&[]).await;
    // The smarthost takes this member's copy and never answers.
    sink.hold_for(GPG_MEMBER);
    let until = clock.now() + chrono::Duration::hours(1);
    let until_text = until.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = format!("Embargo-Until: {until_text}\n\nDetails.\n");
    let entity = embargo_relay::compose::text_with_advisory("CVE-2026-9: x", &body, "Public.");
    send(
        running.smtp_addr,
        PST,
        &f.gpg_signed_entity(PST, "CVE-2026-9: x", &entity),
    )
    .await
    .unwrap();
    let others = f.usable_members().filter(|m| m.email != GPG_MEMBER).count();
    let got = wait_copies(&sink, others).await;
    assert_eq!(copies(&got).len(), others);
    wait_for("the held copy to reach the sink", || sink.waiting() == 1).await;
    let until: DateTime<Utc> = DateTime::parse_from_rfc3339(&until_text).unwrap().into();
    clock.set(until);
    let got = sink
        .wait_until(PATIENCE, |got| {
            got.iter().any(|c| c.envelope.rcpt_to == [PUBLIC_DEFAULT])
        })
        .await;
    assert!(
        got.iter().any(|c| c.envelope.rcpt_to == [PUBLIC_DEFAULT]),
        "the release went out while the member's copy hung"
    );
    assert!(sink.waiting() >= 1, "and that copy is still hanging");
    sink.release();
    running.shutdown().await;
}
