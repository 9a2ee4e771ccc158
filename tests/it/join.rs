//! Issue 4, acceptance 7 (first half): a join request to the request
//! address reaches the PST, and only the PST, encrypted, with a checklist of
//! the membership criteria it answers and leaves out.

use embargo_relay::crypto;
use embargo_relay::sink::Captured;

use crate::common::*;

const REQUEST: &str = "distributors-announce-request@lists.example.org";

#[tokio::test(flavor = "multi_thread")]
async fn a_join_request_reaches_the_pst_with_a_checklist() {
    let f = Fixture::new();
    let InProcess { sink, running, .. } = f.start_in_process(&Tweaks::default()).await;
    let addr = running.smtp_addr;
    let body = "Below are each criterion and why we, Seven-Corp, qualify.\r\n\r\n\
> 0. Have an actively monitored security email alias for our project.\r\n\r\n\
Yes: security@seven.example.\r\n\r\n\
> 6. Accept the Embargo Policy that is outlined above.\r\n\r\nWe accept.\r\n\r\n\
> 8. Have someone already on the list vouch for the person requesting membership\r\n\
   on behalf of your distribution.\r\n\r\nDistro A will vouch for us.\r\n";
    let raw = format!(
        "From: Seven Security <security@seven.example>\r\nTo: {REQUEST}\r\nSubject: Seven-Corp membership\r\n\r\n{body}"
    );
    let reply = send_to(addr, "security@seven.example", REQUEST, raw.as_bytes())
        .await
        .expect("a join request is accepted");
    assert!(
        reply.contains("forwarded to the list's security team"),
        "{reply}"
    );
    // The same submission again (an MTA resending): answered as accepted,
    // forwarded once. The same bytes from another envelope: a replay.
    let again = send_to(addr, "security@seven.example", REQUEST, raw.as_bytes())
        .await
        .expect("the same submission again is answered as accepted");
    assert!(again.contains("already accepted as"), "{again}");
    let (code, text) = send_to(addr, "other@seven.example", REQUEST, raw.as_bytes())
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("replayed"), "{text}");
    // Not both at once.
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(addr.port())
            .build();
    let both = lettre::address::Envelope::new(
        Some("security@seven.example".parse().unwrap()),
        vec![LIST.parse().unwrap(), REQUEST.parse().unwrap()],
    )
    .unwrap();
    let err = lettre::AsyncTransport::send_raw(&transport, &both, raw.as_bytes())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("request address alone"), "{err}");

    let is_request = |c: &&Captured| find(&c.raw, b"Subject: [embargoed list post]").is_some();
    let got = sink
        .wait_until(PATIENCE, |g| g.iter().filter(is_request).count() >= 1)
        .await;
    f.wait_until_no_pending().await;
    let captured = sink.captured();
    let forwarded: Vec<&Captured> = captured.iter().filter(is_request).collect();
    assert_eq!(forwarded.len(), 1, "one PST member, one copy");
    assert_eq!(forwarded[0].envelope.rcpt_to, vec![PST.to_owned()]);
    assert!(
        find(&forwarded[0].raw, b"Seven-Corp").is_none(),
        "encrypted"
    );
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    let list = f.list.clone().strip_secret_key_material();
    let opened = crypto::open_copy(
        &p,
        &f.members[0].secret,
        &list,
        armored_payload(&forwarded[0].raw),
    )
    .expect("the PST decrypts it");
    let text = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
    assert!(
        text.contains("Subject: [join request] Seven-Corp membership"),
        "{text}"
    );
    assert!(
        text.contains("[x] 0. Have an actively monitored security email alias"),
        "{text}"
    );
    assert!(text.contains("[ ] 1. Be an actively maintained"), "{text}");
    assert!(
        text.contains("[x] 8. Have someone already on the list vouch"),
        "{text}"
    );
    assert!(
        text.contains("Answered: 3 of 9. Not addressed: 1, 2, 3, 4, 5, 7."),
        "{text}"
    );
    assert!(
        text.contains("Distro A will vouch for us."),
        "the request itself: {text}"
    );
    assert!(text.contains("not authenticated"), "{text}");
    assert!(f.audit().iter().any(|r| r.event == "join-request"));
    drop(got);
    running.shutdown().await;
}
