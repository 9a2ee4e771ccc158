//! Acceptance 4: unsigned, non-PST, wrong From, bad signature: each gets a
//! 5xx naming the reason and an audit record, and nothing is sent.

use embargo_relay::compose;
use embargo_relay::sink::CaptureSink;
use sequoia_openpgp::policy::StandardPolicy;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn forged_or_broken_announcements_are_refused_and_nothing_is_sent() {
    let f = Fixture::new();
    let daemon = f.start_in_process(&Tweaks::default()).await;
    let sink = &daemon.sink;
    let p = StandardPolicy::new();

    let unsigned =
        format!("From: {PST}\r\nTo: {LIST}\r\nSubject: plain\r\n\r\nnot signed\r\n").into_bytes();
    let intruder = embargo_relay::crypto::generate_key(
        "Eve <eve@evil.example>",
        now() - chrono::Duration::hours(1),
        None,
    )
    .unwrap();
    let not_pst = compose::signed_announcement(
        &p,
        &intruder,
        now(),
        PST,
        LIST,
        "fake",
        &embargoed("forged"),
    )
    .unwrap();
    let wrong_from = f.gpg_signed(
        GPG_MEMBER,
        "spoof",
        &embargoed("From is a member, signature is the PST's"),
    );
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let no_embargo = f.gpg_signed(PST, "no embargo", "no field block at all");
    let no_offset = f.gpg_signed(PST, "local time", "Embargo-Until: 2030-01-01T16:00:00\n\nx");
    let past = f.gpg_signed(
        PST,
        "past",
        &format!(
            "Embargo-Until: {}\n\nx",
            at(now() - chrono::Duration::hours(1))
        ),
    );
    let too_long = f.gpg_signed(
        PST,
        "long",
        &format!(
            "Embargo-Until: {}\n\nx",
            at(now() + chrono::Duration::days(30))
        ),
    );
    let tampered = {
        let good = f.gpg_signed(PST, "tamper", &embargoed("pay 100 dollars"));
        // "pay " is in the signed body only (not in the random Message-ID or boundary).
        let at = find(&good, b"pay 100").unwrap() + 4;
        let mut bad = good.clone();
        bad[at..at + 3].copy_from_slice(b"999");
        bad
    };
    let cases: [(&str, Vec<u8>, u16, &str); 8] = [
        ("unsigned", unsigned, 550, "not PGP/MIME signed"),
        ("non-PST key", not_pst, 550, "signature not from a PST key"),
        (
            "From not on the key",
            wrong_from,
            550,
            "is not a user ID of the signing key",
        ),
        ("tampered", tampered, 550, "signature does not verify"),
        (
            "no embargo",
            no_embargo,
            554,
            "invalid embargo: Embargo-Until is missing",
        ),
        ("no offset", no_offset, 554, "explicit offset"),
        ("past", past, 554, "is not in the future"),
        ("too long", too_long, 554, "exceeds the maximum of 14 days"),
    ];
    for (name, mail, code, reason) in &cases {
        let (got_code, text) = send(daemon.addr(), PST, mail).await.expect_err(name);
        assert_eq!(got_code, *code, "{name}: {text}");
        assert!(
            text.contains(reason),
            "{name}: reply {text:?} should name {reason:?}"
        );
    }
    let rejected: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "rejected")
        .collect();
    assert_eq!(rejected.len(), cases.len());
    for ((name, _, _, reason), record) in cases.iter().zip(&rejected) {
        assert!(
            record.detail.contains(reason),
            "{name}: audit {:?}",
            record.detail
        );
    }

    // A replay of an accepted announcement (not the same submission: from
    // another envelope) is refused too.
    let good = f.gpg_signed(PST, "real", &embargoed("genuine announcement"));
    send(daemon.addr(), PST, &good)
        .await
        .expect("a genuine announcement is still accepted");
    let (code, text) = send(daemon.addr(), "relay@elsewhere.example", &good)
        .await
        .expect_err("replay");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("replayed"), "{text}");

    // Only the genuine announcement went out: one copy per usable member.
    let n = f.usable_members().count();
    wait_copies(sink, n).await;
    f.wait_until_no_pending().await;
    assert_eq!(
        copies(&sink.captured()).len(),
        n,
        "nothing but the genuine announcement was sent"
    );

    // The four that were signed by the PST but invalid also reached the PST
    // as signed, encrypted refusals naming the reason; the forgeries did not.
    // The replay is reported too, once.
    let refused = sink
        .wait_until(PATIENCE, |g| refusal_texts(&f, g).len() >= 5)
        .await;
    let texts = refusal_texts(&f, &refused);
    assert_eq!(texts.len(), 5, "{texts:#?}");
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("rejected as a replay"))
            .count(),
        1
    );
    for (_, _, _, reason) in &cases[4..] {
        assert!(
            texts.iter().any(|t| t.contains(reason)),
            "no refusal says {reason:?}"
        );
    }
    assert!(
        texts.iter().all(|t| !t.contains("EMBARGOED until")),
        "a refusal states no embargo"
    );

    // Mail for anyone but the list is refused at RCPT.
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(daemon.addr().port())
            .build();
    let env = lettre::address::Envelope::new(
        Some(PST.parse().unwrap()),
        vec!["someone@else.example".parse().unwrap()],
    )
    .unwrap();
    let err = lettre::AsyncTransport::send_raw(&transport, &env, &good)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("550"), "{err}");
}

/// A refusal the PST must hear of, or a roster command's receipt, that
/// cannot be queued is a 451, not an answer given with the notice lost:
/// the sender tries again and the PST is told then.
#[tokio::test(flavor = "multi_thread")]
async fn a_notice_to_the_pst_that_cannot_be_queued_is_a_451() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let refused = f.gpg_signed(
        PST,
        "refused",
        "Embargo-Until: 2020-01-01T00:00:00Z\n\nlate\n",
    );
    let failing = Daemon::start_with(
        &config,
        &f.path("daemon.log"),
        &[(embargo_relay::failpoint::VAR, "notice:fail")],
    );
    let (code, text) = send(failing.addr, PST, &refused).await.unwrap_err();
    assert_eq!(code, 451, "the sender keeps the mail: {text}");
    drop(failing);
    // Sent again once the spool works: refused, and the PST told.
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    let (code, text) = send(daemon.addr, PST, &refused).await.unwrap_err();
    assert!(
        code == 554 && text.contains("invalid embargo"),
        "{code} {text}"
    );
    let told = |g: &[embargo_relay::sink::Captured]| {
        refusal_texts(&f, g)
            .iter()
            .any(|t| t.contains("The list refused your mail"))
    };
    let got = sink.wait_until(PATIENCE, told).await;
    assert!(told(&got), "the PST hears of it");
}
