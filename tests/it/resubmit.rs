//! Issue 14, point 3: resubmission is idempotent, replays stay refused.
//! An MTA that lost our 250 (a crash 13 ms after the final dot) sends the
//! same bytes again: that is answered as accepted, relays nothing twice,
//! is audited as a duplicate and tells the PST nothing. The same signed
//! mail under another envelope is a replay, refused and reported as before.
//! The line: the same envelope (sender and recipients, in any case or
//! order) and the same bytes.

use std::io::Write;
use std::process::{Command, Stdio};

use embargo_relay::sink::CaptureSink;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_same_submission_again_is_accepted_once_and_a_replay_is_refused() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    let mail = f.gpg_signed(
        PST,
        "CVE-2026-31: resent",
        &embargoed("resent after a lost 250"),
    );
    let first = send(daemon.addr, PST, &mail).await.unwrap();
    let id = first.rsplit(' ').next().unwrap().to_owned();
    let again = send(daemon.addr, PST, &mail)
        .await
        .expect("the same submission again is answered as accepted");
    assert!(
        again.contains(&format!("already accepted as {id}")),
        "{again}"
    );

    // Through submit too (the MTA's pipe): exit 0, the same answer.
    let mut child = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .env_remove("RUST_LOG")
        .args(["submit", "--sender", PST, "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&mail).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("already accepted as {id}")),
        "{said}"
    );

    // The same bytes from another envelope sender: a replay, as before.
    let (code, text) = send(daemon.addr, "someone@elsewhere.example", &mail)
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("replayed"), "{text}");

    // One copy each, one receipt; the PST hears of the replay alone.
    let n = f.usable_members().count();
    sink.wait_until(PATIENCE, |g| {
        copies(g).len() >= n && !receipts(g).is_empty()
    })
    .await;
    f.wait_until_no_pending().await;
    let got = sink.captured();
    assert_eq!(copies(&got).len(), n, "nothing relayed twice");
    assert_eq!(receipts(&got).len(), 1);
    let notices = refusal_texts(&f, &got);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("someone@elsewhere.example"),
        "{}",
        notices[0]
    );
    let audit = f.audit();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.event == "duplicate" && r.message_id.as_deref() == Some(id.as_str()))
            .count(),
        2,
        "{audit:?}"
    );
}

/// Commands and refusals too: the same command mail again is answered as
/// accepted and applied once; the same refused mail again gets the same
/// refusal, and the PST one notice.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_command_or_refused_mail_again_gets_the_same_answer() {
    let f = Fixture::new();
    let daemon = f.start_in_process(&Tweaks::default()).await;
    let sink = &daemon.sink;
    let first = send(
        daemon.addr(),
        PST,
        &f.gpg_signed(PST, "CVE-2026-32: held", &embargoed("held")),
    )
    .await
    .unwrap();
    let id = first.rsplit(' ').next().unwrap().to_owned();
    let later = (now() + chrono::Duration::days(4)).format("%Y-%m-%dT%H:%M:%SZ");
    let extend = f.gpg_signed(PST, "extend", &format!("Embargo-Extend: {id} {later}\n"));
    let applied = send(daemon.addr(), PST, &extend).await.unwrap();
    assert!(applied.contains("command applied"), "{applied}");
    let again = send(daemon.addr(), PST, &extend)
        .await
        .expect("the same command mail again is answered as accepted");
    assert!(
        again.contains(&format!("already accepted as {id}")),
        "{again}"
    );

    let refused = f.gpg_signed(
        PST,
        "refused",
        "Embargo-Until: 2020-01-01T00:00:00Z\n\nlate\n",
    );
    let (code1, text1) = send(daemon.addr(), PST, &refused).await.unwrap_err();
    let (code2, text2) = send(daemon.addr(), PST, &refused).await.unwrap_err();
    assert_eq!((code1, code2), (554, 554), "{text1} / {text2}");
    assert!(
        text2.contains("invalid embargo"),
        "the same refusal: {text2}"
    );
    assert!(!text2.contains("replayed"), "{text2}");

    f.wait_until_no_pending().await;
    let texts = refusal_texts(&f, &sink.captured());
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("The list refused your mail"))
            .count(),
        1,
        "one refusal notice: {texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("rejected as a replay")),
        "no replay alarm: {texts:?}"
    );
}
