//! Issue 3, acceptance 3 (mail part): the PST extends, releases and cancels
//! embargoes with signed command mails; each is answered in SMTP and by a
//! signed, encrypted receipt, and proved by what the sink receives.

use embargo_relay::crypto::open_copy;
use embargo_relay::sink::{CaptureSink, Captured};
use sequoia_openpgp::policy::StandardPolicy;

use crate::common::*;

const PUBLIC_A: &str = "oss-security@lists.example.net";
const PUBLIC_B: &str = "announce@project.example.org";

fn to(c: &Captured, who: &str) -> bool {
    c.envelope.rcpt_to == vec![who.to_owned()]
}

#[tokio::test(flavor = "multi_thread")]
async fn pst_command_mails_extend_release_and_cancel() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let daemon = Daemon::start(&f.write_config(sink.addr()), &f.path("daemon.log"));
    let a = announce_with_advisory(&f, daemon.addr, PUBLIC_A).await;
    let b = announce_with_advisory(&f, daemon.addr, PUBLIC_B).await;
    let list_cert = f.list.clone().strip_secret_key_material();
    let p = StandardPolicy::new();
    let receipt_saying = |needle: String| {
        let (p, list_cert, pst) = (&p, &list_cert, &f.members[0].secret);
        move |got: &[Captured]| {
            receipts(got).iter().any(|c| {
                open_copy(p, pst, list_cert, armored_payload(&c.raw))
                    .map(|o| String::from_utf8_lossy(o.plaintext.expose()).contains(&needle))
                    .unwrap_or(false)
            })
        }
    };
    let command = |text: String| f.gpg_signed(PST, "embargo command", &text);

    // Extend A: answered, and the receipt states the new time.
    let later = now() + chrono::Duration::days(3);
    let stamp = later.format("%Y-%m-%dT%H:%M:%SZ");
    let reply = send(
        daemon.addr,
        PST,
        &command(format!("Embargo-Extend: {a} {stamp}\n")),
    )
    .await
    .unwrap();
    assert!(
        reply.contains(&format!("command applied to embargo {a}")),
        "{reply}"
    );
    let lifts = format!("Embargo lifts:  {} UTC", later.format("%Y-%m-%d %H:%M:%S"));
    let got = sink
        .wait_until(PATIENCE, receipt_saying(lifts.clone()))
        .await;
    assert!(receipt_saying(lifts)(&got), "a receipt with the new time");

    // Release A now: its advisory goes out.
    send(
        daemon.addr,
        PST,
        &command(format!("Embargo-Release-Now: {a}\n")),
    )
    .await
    .unwrap();
    sink.wait_until(PATIENCE, |g| g.iter().any(|c| to(c, PUBLIC_A)))
        .await;
    f.wait_until_no_pending().await;
    let got = sink.captured();
    assert_eq!(
        got.iter().filter(|c| to(c, PUBLIC_A)).count(),
        1,
        "exactly once"
    );

    // Cancel B: never published; the receipt says so.
    let cancel = command(format!("Embargo-Cancel: {b}\n"));
    send(daemon.addr, PST, &cancel).await.unwrap();
    let got = sink
        .wait_until(PATIENCE, receipt_saying("Embargo state:  cancelled".into()))
        .await;
    if !receipt_saying("Embargo state:  cancelled".into())(&got) {
        let texts = receipt_texts(&f, &got);
        let log = std::fs::read_to_string(f.path("daemon.log")).unwrap();
        panic!("no cancelled receipt; receipts: {texts:#?}\nlog:\n{log}");
    }
    f.wait_until_no_pending().await;
    assert!(!sink.captured().iter().any(|c| to(c, PUBLIC_B)));
    // Issue 21: a receipt warns of the lift time (two days of notice here)
    // only while the embargo is held: not once released or cancelled.
    let texts = receipt_texts(&f, &sink.captured());
    let warned = |t: &String| t.contains("Warnings about the lift time");
    assert!(
        texts
            .iter()
            .filter(|t| t.contains("Embargo state:  held"))
            .all(|t| warned(t) && t.contains("less than the list's minimum of 7 days")),
        "{texts:#?}"
    );
    assert!(texts.iter().any(|t| t.contains("Embargo state:  held")));
    let after: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("Embargo state:  lifted") || t.contains("Embargo state:  cancelled"))
        .collect();
    assert!(after.len() >= 2, "{texts:#?}");
    assert!(!after.iter().any(|t| warned(t)), "{after:#?}");

    // Refused: an extension past the maximum, a replayed command, an unknown
    // embargo, a cancelled one.
    let too_far = (now() + chrono::Duration::days(20)).format("%Y-%m-%dT%H:%M:%SZ");
    let (code, text) = send(
        daemon.addr,
        PST,
        &command(format!("Embargo-Extend: {a} {too_far}\n")),
    )
    .await
    .unwrap_err();
    assert!(code == 550 && text.contains("maximum of 14 days"), "{text}");
    // The same command mail from another envelope is a replay (the same
    // envelope again would be the same submission, answered as accepted).
    let (code, text) = send(daemon.addr, "relay@elsewhere.example", &cancel)
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("replayed"), "{text}");
    let (code, text) = send(
        daemon.addr,
        PST,
        &command("Embargo-Cancel: 00000000000000ff\n".into()),
    )
    .await
    .unwrap_err();
    assert!(
        code == 550 && text.contains("no embargo with this id"),
        "{text}"
    );
    assert!(
        !text.contains("00000000000000ff"),
        "the id is not quoted in the clear: {text}"
    );
    // The encrypted refusal names the id the PST wrote.
    let said = |g: &[Captured]| {
        refusal_texts(&f, g)
            .iter()
            .any(|t| t.contains("no embargo with this id (you wrote `00000000000000ff`)"))
    };
    let got = sink.wait_until(PATIENCE, said).await;
    assert!(said(&got), "the PST is told why, signed and encrypted");
    let (code, text) = send(
        daemon.addr,
        PST,
        &command(format!("Embargo-Release-Now: {b}\n")),
    )
    .await
    .unwrap_err();
    assert!(code == 550 && text.contains("was cancelled"), "{text}");
    let audit = f.audit();
    for event in ["extended", "released-now", "cancelled"] {
        let record = audit
            .iter()
            .find(|r| r.event == event)
            .unwrap_or_else(|| panic!("{event} audited"));
        assert!(record.detail.contains("by PST "), "{}", record.detail);
    }
}
