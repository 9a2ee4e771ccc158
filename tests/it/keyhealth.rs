//! Issue 17, key health against the embargo: the PST's receipt names the
//! members whose key expires before the embargo lifts, and a member
//! skipped for a key problem is told that a message was not sent to it,
//! with nothing of the message.

use embargo_relay::crypto;

use crate::common::*;

const SOON: &str = "psirt@expiring-e.example";

#[tokio::test(flavor = "multi_thread")]
async fn keys_expiring_before_the_lift_are_named_and_skipped_members_told() {
    let f = Fixture::new();
    // A member whose key expires 29 hours from now: the embargo lifts in
    // 48, the reminder comes at 24.
    let soon = crypto::generate_key(
        &format!("Expiring E <{SOON}>"),
        now() - chrono::Duration::hours(1),
        Some(std::time::Duration::from_secs(30 * 3600)),
    )
    .unwrap();
    std::fs::write(
        f.path("keys/soon.asc"),
        crypto::armored_public(&soon.clone().strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    let tweaks = Tweaks {
        members: vec![(SOON.into(), "Expiring E".into(), "keys/soon.asc".into())],
        ..Tweaks::default()
    };
    let d = f.start_in_process(&tweaks).await;
    let canary = "CANARY-keyhealth-51d2";
    let text = embargoed(canary);
    let until: chrono::DateTime<chrono::Utc> = chrono::DateTime::parse_from_rfc3339(&text[15..35])
        .unwrap()
        .into();
    let mail = f.gpg_signed(PST, "CVE-2026-171: key health", &text);
    send(d.addr(), PST, &mail).await.expect("accepted");
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !receipts(g).is_empty())
        .await;
    // Its copy went out (its key works today), and the receipt says it
    // will miss what comes at the lift.
    assert!(
        copies(&got).iter().any(|c| c.envelope.rcpt_to == [SOON]),
        "the expiring member has its copy"
    );
    let receipt = receipt_texts(&f, &got).join("\n");
    assert!(
        receipt.contains("Keys that expire before the embargo lifts")
            && receipt.contains(&format!("{SOON} (Expiring E): expires ")),
        "{receipt}"
    );
    assert!(
        !receipt.contains(&format!("{GPG_MEMBER} (Org 1): expires")),
        "a key without expiry is not named: {receipt}"
    );

    // The members skipped for their keys (one expired, one missing) are
    // told, each once, with nothing of the announcement.
    let told = |g: &[embargo_relay::sink::Captured], to: &str| {
        g.iter()
            .filter(|c| {
                c.envelope.rcpt_to == [to]
                    && find(
                        &c.raw,
                        b"Subject: A message of the list was not sent to you",
                    )
                    .is_some()
            })
            .count()
    };
    let got = d
        .sink
        .wait_until(PATIENCE, |g| {
            told(g, EXPIRED_MEMBER) >= 1 && told(g, MISSING_MEMBER) >= 1
        })
        .await;
    f.wait_until_no_pending().await;
    let got_all = d.sink.captured();
    for to in [EXPIRED_MEMBER, MISSING_MEMBER] {
        assert_eq!(told(&got_all, to), 1, "{to}: one notice");
        let notice = got_all.iter().find(|c| c.envelope.rcpt_to == [to]).unwrap();
        let text = String::from_utf8_lossy(&notice.raw);
        assert!(
            text.contains("did not send you a message")
                && !text.contains(canary)
                && !text.contains("CVE-2026-171"),
            "{to}: {text}"
        );
    }
    assert!(got.len() <= got_all.len());

    // The reminder, a day before the lift, names the expiring key again.
    let at = until - chrono::Duration::hours(24) + chrono::Duration::minutes(1);
    d.clock.set(at);
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !reminders(g).is_empty())
        .await;
    let reminder = reminder_texts_at(&f, &got, at).join("\n");
    assert!(
        reminder.contains("Keys that expire before the embargo lifts")
            && reminder.contains(&format!("{SOON} (Expiring E): expires ")),
        "{reminder}"
    );
    d.stop().await;
}
