//! Issue 4, acceptance 5 and the replay window: a signature seen before
//! (whatever the outer headers), older than `signature_max_age`, or dated in
//! the future is rejected, nothing is relayed, and the PST is told.

use embargo_relay::clock::Clock;
use embargo_relay::compose;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn replays_stale_and_future_signatures_are_rejected_and_the_pst_is_told() {
    let f = Fixture::new();
    // A short window, so that a signature becomes stale within the test
    // (on the list's manual clock).
    let InProcess {
        sink,
        clock,
        running,
        ..
    } = f
        .start_in_process(&Tweaks {
            policy: vec![("signature_max_age", Tweaks::text("3s"))],
            ..Tweaks::default()
        })
        .await;
    let addr = running.smtp_addr;

    // Signed now, sent after the window passed.
    let stale = f.gpg_signed(PST, "CVE-2026-20: stale", &embargoed("old news"));
    // Signed by the PST's key with its clock a day ahead.
    let future = {
        let part = compose::text_part(Some("CVE-2026-21: ahead"), &embargoed("from tomorrow"));
        let t = (now() + chrono::Duration::days(1)).format("%Y%m%dT%H%M%S!");
        let out = f.pst_gpg.run(
            &[
                "--faked-system-time",
                &t.to_string(),
                "--armor",
                "--detach-sign",
                "--local-user",
                &f.pst_fpr,
            ],
            &part,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        compose::multipart_signed(PST, LIST, "x", &part, &out.stdout)
    };

    // The genuine announcement, then the same bytes from elsewhere, then the same signed
    // part and signature under new outer headers (Message-ID, Subject).
    let (good, part) = f.gpg_signed_with_part(PST, "CVE-2026-19: real", &embargoed("genuine"));
    send(addr, PST, &good).await.expect("accepted");
    // The same bytes under the same envelope are the same submission
    // (tests/it/resubmit.rs); under another envelope, a replay.
    let (code, text) = send(addr, "relay@elsewhere.example", &good)
        .await
        .unwrap_err();
    assert!(
        code == 550 && text.contains("replayed"),
        "byte-identical: {text}"
    );
    let sig_at = find(&good, b"-----BEGIN PGP SIGNATURE-----").unwrap();
    let sig_end = find(&good, b"-----END PGP SIGNATURE-----").unwrap() + 27;
    let rewrapped = compose::multipart_signed(
        PST,
        LIST,
        "Re: something else entirely",
        &part,
        &good[sig_at..sig_end],
    );
    assert_ne!(rewrapped, good);
    let (code, text) = send(addr, PST, &rewrapped).await.unwrap_err();
    assert!(
        code == 550 && text.contains("replayed"),
        "new headers: {text}"
    );

    // The window passes (gpg signed a moment after the clock started).
    clock.set(clock.now() + chrono::Duration::seconds(10));
    let (code, text) = send(addr, PST, &stale).await.unwrap_err();
    assert!(
        code == 550 && text.contains("more than 3 seconds ago"),
        "stale: {text}"
    );
    let (code, text) = send(addr, PST, &future).await.unwrap_err();
    assert!(
        code == 550 && text.contains("in the future"),
        "future: {text}"
    );
    // The stale mail again from elsewhere is a replay of its refusal.
    let (code, text) = send(addr, "relay@elsewhere.example", &stale)
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("replayed"), "{text}");

    // The PST heard of each: the stale and the future signature, and one
    // replay notice per replayed message (not one per replay).
    let told = |g: &[embargo_relay::sink::Captured]| refusal_texts(&f, g).len() >= 4;
    let got = sink.wait_until(PATIENCE, told).await;
    f.wait_until_nothing_due(clock.now()).await;
    let texts = refusal_texts(&f, &sink.captured());
    let count = |needle: &str| texts.iter().filter(|t| t.contains(needle)).count();
    assert_eq!(count("more than 3 seconds ago"), 1, "{texts:#?}");
    assert_eq!(count("in the future"), 1, "{texts:#?}");
    assert_eq!(count("rejected as a replay"), 2, "{texts:#?}");
    assert_eq!(texts.len(), 4, "{texts:#?}");
    // Only the genuine announcement reached the members.
    assert_eq!(copies(&got).len(), f.usable_members().count());
    assert_eq!(copies(&sink.captured()).len(), f.usable_members().count());
    // Each rejection audited: on its own, or, the same reason again from the
    // same host within the minute, counted in one record written at the
    // latest when the daemon stops.
    running.shutdown().await;
    let rejected: u64 = f
        .audit()
        .iter()
        .filter(|r| r.event == "rejected")
        .map(|r| {
            r.detail
                .split_once(" more rejections from peer ")
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or(1)
        })
        .sum();
    assert_eq!(rejected, 5, "each rejection audited");
}
