//! Issue 16, scoped announcements: `Recipients:` names part of the roster
//! (organizations or addresses); only those members and the PST get the
//! copy, the lifted notice and the replies in its thread; an unknown name is
//! refused by its position in the clear and by name only in the encrypted
//! refusal; the receipt states the scope.

use std::collections::BTreeSet;

use embargo_relay::compose;
use embargo_relay::crypto;
use embargo_relay::sink::Captured;

use crate::common::*;

/// An announcement body scoped to `recipients`, lifting at `until`.
fn scoped(recipients: &str, until: chrono::DateTime<chrono::Utc>, text: &str) -> String {
    format!(
        "Embargo-Until: {}\nRecipients: {recipients}\n\n{text}",
        until.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

fn recipients_of(got: &[&Captured]) -> BTreeSet<String> {
    got.iter().map(|c| c.envelope.rcpt_to[0].clone()).collect()
}

fn set(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|a| a.to_string()).collect()
}

fn posts(got: &[Captured]) -> Vec<&Captured> {
    got.iter()
        .filter(|c| find(&c.raw, b"Subject: [embargoed list post]").is_some())
        .collect()
}

/// The Message-ID a captured mail carries, without angle brackets.
fn message_id(c: &Captured) -> String {
    let text = String::from_utf8_lossy(&c.raw);
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .expect("a Message-ID");
    line[11..]
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// Distro A's reply to the copy `in_reply_to`, signed and encrypted to the
/// list as a mail client sends it.
fn reply_to(f: &Fixture, in_reply_to: &str) -> Vec<u8> {
    reply_with(f, &format!("In-Reply-To: <{in_reply_to}>"))
}

/// Distro A's reply with `header` (In-Reply-To, References) on top.
fn reply_with(f: &Fixture, header: &str) -> Vec<u8> {
    let gpg = Gpg::new();
    let m = f.members.iter().find(|m| m.email == GPG_MEMBER).unwrap();
    gpg.import(&crypto::armored_secret(&m.secret).unwrap());
    gpg.import(&crypto::armored_public(&f.list.clone().strip_secret_key_material()).unwrap());
    let fpr = m.secret.fingerprint().to_hex();
    // Each reply distinct: the same text signed in the same second is a replay.
    let text = format!("SCOPE-REPLY: patched here ({}).\n", crypto::random_hex(4));
    let entity = compose::text_part(Some("Re: CVE-2026-91"), &text);
    let sealed = gpg.sign_encrypt(&fpr, &f.list.fingerprint().to_hex(), &entity);
    let mut mail = format!("{header}\r\n").into_bytes();
    mail.extend(compose::multipart_encrypted(
        GPG_MEMBER, LIST, "...", &sealed,
    ));
    mail
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_announcement_and_its_thread_reach_its_recipients_alone() {
    let f = Fixture::new();
    let d = f.start_in_process(&Tweaks::default()).await;
    let until = now() + chrono::Duration::days(2);

    // A name on no member: refused, by position in the clear.
    let unknown = f.gpg_signed(
        PST,
        "CVE-2026-90: scoped",
        &scoped("Org 1, QZ7CANARY Nobody Inc", until, "x"),
    );
    let (code, text) = send(d.addr(), PST, &unknown).await.unwrap_err();
    assert!(
        code == 554 && text.contains("Recipients: entry 2"),
        "{text}"
    );
    assert!(
        !text.contains("QZ7CANARY"),
        "no mail text in the clear: {text}"
    );
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !refusal_texts(&f, g).is_empty())
        .await;
    assert!(
        refusal_texts(&f, &got)[0].contains("QZ7CANARY Nobody Inc"),
        "named in the encrypted refusal"
    );
    assert!(copies(&got).is_empty());
    assert!(
        !f.audit().iter().any(|r| r.detail.contains("QZ7CANARY")),
        "nor in the audit trail"
    );

    // Scoped to Distro A by its organization, in another case.
    let mail = f.gpg_signed(
        PST,
        "CVE-2026-91: scoped",
        &scoped("org 1", until, "SCOPED-TEXT for Distro A."),
    );
    send(d.addr(), PST, &mail).await.expect("accepted");
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !receipts(g).is_empty())
        .await;
    f.wait_until_no_pending().await;
    let got = {
        let _ = got;
        d.sink.captured()
    };
    let scope = set(&[PST, GPG_MEMBER]);
    assert_eq!(recipients_of(&copies(&got)), scope, "copies");
    assert_eq!(copies(&got).len(), 2, "one copy each");
    let receipt = &receipt_texts(&f, &got)[0];
    assert!(
        receipt.contains("Scope:") && receipt.contains("Recipients: org 1"),
        "{receipt}"
    );

    // Distro A replies to its copy: the thread, not the list, gets it.
    let copy = copies(&got)
        .into_iter()
        .find(|c| c.envelope.rcpt_to == [GPG_MEMBER.to_owned()])
        .unwrap();
    send(d.addr(), GPG_MEMBER, &reply_to(&f, &message_id(copy)))
        .await
        .expect("a member's reply is accepted");
    let got = d.sink.wait_until(PATIENCE, |g| posts(g).len() >= 2).await;
    f.wait_until_no_pending().await;
    assert_eq!(recipients_of(&posts(&d.sink.captured())), scope, "posts");
    drop(got);
    assert!(
        f.audit()
            .iter()
            .any(|r| r.event == "member-post" && r.detail.contains("its thread")),
        "{:?}",
        f.audit()
    );
    // Who a reply reaches, by its thread headers.
    let post_to = |header: String, n: usize| {
        let d = &d;
        let f = &f;
        async move {
            let before = d.sink.captured().len();
            send(d.addr(), GPG_MEMBER, &reply_with(f, &header))
                .await
                .expect("a member's reply is accepted");
            d.sink
                .wait_until(PATIENCE, |g| posts(&g[before..]).len() >= n)
                .await;
            f.wait_until_no_pending().await;
            recipients_of(&posts(&d.sink.captured()[before..]))
        }
    };
    let copy_id = message_id(copy);
    let host = copy_id.split('@').nth(1).unwrap().to_owned();
    // The id in another case: the same thread.
    assert_eq!(
        post_to(format!("In-Reply-To: <{}>", copy_id.to_uppercase()), 2).await,
        scope
    );
    // An id at this host that names nothing: the PST alone (fails closed).
    assert_eq!(
        post_to(format!("In-Reply-To: <0123456789ab@{host}>"), 1).await,
        set(&[PST])
    );
    // An unscoped announcement's copy and the scoped one: the members in
    // both threads, not the wider one.
    // (It lifts a day after A: A's lift below is A's alone.)
    let wide = f.gpg_signed(
        PST,
        "CVE-2026-93: everyone",
        &format!(
            "Embargo-Until: {}\n\nfor all.",
            (until + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
        ),
    );
    let before = d.sink.captured().len();
    send(d.addr(), PST, &wide).await.expect("accepted");
    f.wait_until_no_pending().await;
    let wide_copy = message_id(
        copies(&d.sink.captured()[before..])
            .into_iter()
            .find(|c| c.envelope.rcpt_to == [GPG_MEMBER.to_owned()])
            .unwrap(),
    );
    assert_eq!(
        post_to(format!("References: <{wide_copy}> <{copy_id}>"), 2).await,
        scope
    );
    // With no thread named, a post goes to every member (the policy).
    assert_eq!(
        post_to("X-Nothing: here".to_owned(), 3).await,
        set(&[PST, GPG_MEMBER, SQ_MEMBER])
    );

    // The PST's follow-up in the scoped thread must name its recipients:
    // without them it would quote the thread to every member.
    let follow_up = |body: String| {
        let mut mail = format!("In-Reply-To: <{copy_id}>\r\n").into_bytes();
        mail.extend(f.gpg_signed(PST, "Re: CVE-2026-91: scoped", &body));
        mail
    };
    let (code, text) = send(d.addr(), PST, &follow_up(embargoed("update for all")))
        .await
        .unwrap_err();
    assert!(
        code == 554 && text.contains("went to part of the roster"),
        "{text}"
    );
    send(d.addr(), PST, &follow_up(scoped("Org 1", until, "update")))
        .await
        .expect("a follow-up naming its recipients is accepted");
    f.wait_until_no_pending().await;

    // A second announcement scoped to Distro B by address, then cancelled:
    // the command's notices reach that scope alone.
    let other = f.gpg_signed(
        PST,
        "CVE-2026-92: scoped",
        &scoped(&SQ_MEMBER.to_uppercase(), until, "for Distro B."),
    );
    let reply = send(d.addr(), PST, &other).await.expect("accepted");
    let b = reply.rsplit(' ').next().unwrap().to_owned();
    f.wait_until_no_pending().await;
    let before = d.sink.captured().len();
    let cancel = f.gpg_signed(PST, "embargo command", &format!("Embargo-Cancel: {b}\n"));
    send(d.addr(), PST, &cancel).await.expect("cancelled");
    d.sink
        .wait_until(PATIENCE, |g| lifted_notices(&g[before..]).len() >= 2)
        .await;
    f.wait_until_no_pending().await;
    let got = d.sink.captured();
    assert_eq!(
        recipients_of(&lifted_notices(&got[before..])),
        set(&[PST, SQ_MEMBER]),
        "the cancel notices"
    );
    assert!(
        !got[before..]
            .iter()
            .any(|c| c.envelope.rcpt_to == [GPG_MEMBER.to_owned()]),
        "nothing of B's embargo reached Distro A"
    );

    // At the lift, A's lifted notices go to its scope alone.
    let lifted_before = got.len();
    // (The scoped follow-up above lifts at the same time: four notices.)
    d.clock.set(until + chrono::Duration::seconds(1));
    d.sink
        .wait_until(PATIENCE, |g| lifted_notices(&g[lifted_before..]).len() >= 4)
        .await;
    f.wait_until_nothing_due(until + chrono::Duration::seconds(1))
        .await;
    let got = d.sink.captured();
    assert_eq!(
        recipients_of(&lifted_notices(&got[lifted_before..])),
        scope,
        "lifted notices"
    );
    let b_copy = |c: &&Captured| c.envelope.rcpt_to == [SQ_MEMBER.to_owned()];
    let to_b: Vec<&Captured> = got[..before].iter().filter(b_copy).collect();
    assert_eq!(
        (
            copies(&got[..before]).into_iter().filter(b_copy).count(),
            to_b.len()
        ),
        (2, 3),
        "Distro B got B's copy, the unscoped one and the unthreaded post, nothing of A's"
    );
    // (The unscoped announcement's reminder to acknowledge falls due
    // then too: that one is Distro B's.)
    let ack_reminder =
        |c: &Captured| find(&c.raw, b"Subject: [embargo-relay acknowledgement reminder]").is_some();
    assert!(
        !got[lifted_before..]
            .iter()
            .any(|c| b_copy(&c) && !ack_reminder(c)),
        "nothing of A's lift reached Distro B"
    );
    d.stop().await;
}
