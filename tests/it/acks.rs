//! Issue 17, acknowledgements: each copy says how to acknowledge; a
//! member's signed, encrypted `Acknowledge: <id>` is recorded against its
//! certificate, never relayed; `embargo show`, the receipt and the PST's
//! reminder say who acknowledged and who did not; a forged one (a key off
//! the roster, another member's address, a replay, an embargo the signer
//! had no copy of) is refused.

use embargo_relay::compose;
use embargo_relay::crypto;
use sequoia_openpgp::Cert;

use crate::common::*;

/// `text` from `from`, signed with `secret` and encrypted to the list.
pub fn signed_encrypted(f: &Fixture, from: &str, secret: &Cert, text: &str) -> Vec<u8> {
    let gpg = Gpg::new();
    gpg.import(&crypto::armored_secret(secret).unwrap());
    gpg.import(&crypto::armored_public(&f.list.clone().strip_secret_key_material()).unwrap());
    let entity = compose::text_part(Some("Re: CVE-2026-173"), text);
    let sealed = gpg.sign_encrypt(
        &secret.fingerprint().to_hex(),
        &f.list.fingerprint().to_hex(),
        &entity,
    );
    compose::multipart_encrypted(from, LIST, "...", &sealed)
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledgements_are_recorded_shown_and_never_relayed() {
    let f = Fixture::new();
    let d = f.start_in_process(&Tweaks::default()).await;
    let text = embargoed("the details");
    let until: chrono::DateTime<chrono::Utc> = chrono::DateTime::parse_from_rfc3339(&text[15..35])
        .unwrap()
        .into();
    let mail = f.gpg_signed(PST, "CVE-2026-173: acks", &text);
    let reply = send(d.addr(), PST, &mail).await.expect("accepted");
    let id = reply.rsplit(' ').next().unwrap().to_owned();
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !receipts(g).is_empty())
        .await;
    // The copy says how.
    let copy = copies(&got)
        .into_iter()
        .find(|c| c.envelope.rcpt_to == [GPG_MEMBER])
        .unwrap();
    let member = |email: &str| f.members.iter().find(|m| m.email == email).unwrap();
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    let opened = crypto::open_copy(
        &p,
        &member(GPG_MEMBER).secret,
        &f.list.clone().strip_secret_key_material(),
        armored_payload(&copy.raw),
    )
    .unwrap();
    let plain = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
    assert!(plain.contains(&format!("Acknowledge: {id}")), "{plain}");
    let before = d.sink.captured().len();

    // Distro A acknowledges; Distro B does not.
    let ack = signed_encrypted(
        &f,
        GPG_MEMBER,
        &member(GPG_MEMBER).secret,
        &format!("Acknowledge: {id}\n\nThanks.\n"),
    );
    let answer = send_to(d.addr(), GPG_MEMBER, LIST, &ack)
        .await
        .expect("recorded");
    assert!(answer.contains("acknowledgement of"), "{answer}");
    // Forgeries: the same signed mail from another envelope (a replay),
    // Distro A's key under Distro B's address, a key off the roster, an
    // embargo the signer had no copy of.
    let (code, text) = send_to(d.addr(), "other@distro-a.example", LIST, &ack)
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("replay"), "{text}");
    let as_b = signed_encrypted(
        &f,
        SQ_MEMBER,
        &member(GPG_MEMBER).secret,
        &format!("Acknowledge: {id}\n"),
    );
    let (code, text) = send_to(d.addr(), SQ_MEMBER, LIST, &as_b).await.unwrap_err();
    assert!(code >= 550, "{text}");
    let stranger = crypto::generate_key(
        "Stranger <x@stranger.example>",
        now() - chrono::Duration::hours(1),
        None,
    )
    .unwrap();
    let (code, text) = send_to(
        d.addr(),
        "x@stranger.example",
        LIST,
        &signed_encrypted(
            &f,
            "x@stranger.example",
            &stranger,
            &format!("Acknowledge: {id}\n"),
        ),
    )
    .await
    .unwrap_err();
    assert!(code >= 550, "{text}");
    let (code, text) = send_to(
        d.addr(),
        GPG_MEMBER,
        LIST,
        &signed_encrypted(
            &f,
            GPG_MEMBER,
            &member(GPG_MEMBER).secret,
            "Acknowledge: 0123456789abcdef\n",
        ),
    )
    .await
    .unwrap_err();
    assert!(
        code == 550 && text.contains("no embargo whose copy went to"),
        "{text}"
    );
    // A first line meant as one but malformed is refused, not relayed.
    let (code, text) = send_to(
        d.addr(),
        GPG_MEMBER,
        LIST,
        &signed_encrypted(
            &f,
            GPG_MEMBER,
            &member(GPG_MEMBER).secret,
            &format!("Acknowledge: <{id}>.\n"),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        code == 550 && text.contains("acknowledgement's first line"),
        "{text}"
    );
    // Nothing of it was relayed.
    f.wait_until_no_pending().await;
    assert!(
        d.sink.captured()[before..]
            .iter()
            .all(|c| find(&c.raw, b"[embargoed list post]").is_none()),
        "an acknowledgement went to the list"
    );

    // `embargo show` says who.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["embargo", "--config"])
        .arg(&d.config)
        .args(["show", &id])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let line = |m: &str| {
        shown
            .lines()
            .find(|l| l.trim_start().starts_with(m))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(shown.contains("acknowledged 1 of "), "{shown}");
    assert!(line(GPG_MEMBER).contains("acknowledged"), "{shown}");
    assert!(line(SQ_MEMBER).contains("not yet"), "{shown}");

    // And the reminder before the lift.
    let at = until - chrono::Duration::hours(24) + chrono::Duration::minutes(1);
    d.clock.set(at);
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !reminders(g).is_empty())
        .await;
    let reminder = reminder_texts_at(&f, &got, at).join("\n");
    assert!(
        reminder.contains(&format!("{GPG_MEMBER} (Org 1): acknowledged"))
            && reminder.contains(&format!("{SQ_MEMBER} (Org 2): not yet")),
        "{reminder}"
    );
    // Distro B, who has not acknowledged, is reminded to (encrypted to it,
    // nothing of the announcement in it); Distro A, who has, is not.
    let is_ack_reminder = |c: &&embargo_relay::sink::Captured| {
        find(&c.raw, b"Subject: [embargo-relay acknowledgement reminder]").is_some()
    };
    let got = d
        .sink
        .wait_until(PATIENCE, |g| g.iter().filter(is_ack_reminder).count() >= 1)
        .await;
    f.wait_until_nothing_due(at).await;
    let got_all = d.sink.captured();
    let asked: Vec<_> = got_all.iter().filter(is_ack_reminder).collect();
    assert_eq!(
        asked.len(),
        1,
        "one reminder: {:?}",
        asked
            .iter()
            .map(|c| &c.envelope.rcpt_to)
            .collect::<Vec<_>>()
    );
    assert_eq!(asked[0].envelope.rcpt_to, [SQ_MEMBER]);
    assert!(got.len() <= got_all.len());
    let opened = crypto::open_copy_at(
        &p,
        &member(SQ_MEMBER).secret,
        &f.list.clone().strip_secret_key_material(),
        armored_payload(&asked[0].raw),
        Some(at),
    )
    .unwrap();
    let plain = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
    assert!(
        plain.contains(&format!("Acknowledge: {id}"))
            && !plain.contains("CVE-2026-173")
            && !plain.contains("the details"),
        "{plain}"
    );
    d.stop().await;
}
