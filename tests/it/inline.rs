//! Issue 4, "only the signed part counts": inline PGP (a cleartext-signed
//! body, `gpg --clearsign`) is refused unless `policy.inline_pgp` allows
//! it, and then only when the whole body is one signed block.

use embargo_relay::intake::mime::to_crlf;

use crate::common::*;

fn mail(body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: {PST}\r\nTo: {LIST}\r\nSubject: CVE-2026-80: inline\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&to_crlf(body));
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_pgp_only_when_allowed_and_only_as_one_whole_block() {
    let f = Fixture::new();
    let text = "INLINE-CANARY-2b8e: details for members.";
    let signed = |body: &str| {
        let out = f.pst_gpg.run(
            &["--clearsign", "--local-user", &f.pst_fpr],
            embargoed(body).as_bytes(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };

    // Not allowed by default.
    let daemon = f.start_in_process(&Tweaks::default()).await;
    let (code, reply) = send(daemon.addr(), PST, &mail(&signed(text)))
        .await
        .unwrap_err();
    assert!(code == 550 && reply.contains("inline PGP"), "{reply}");
    daemon.stop().await;

    let daemon = f
        .start_in_process(&Tweaks {
            policy: vec![("inline_pgp", "true".into())],
            ..Tweaks::default()
        })
        .await;
    let sink = &daemon.sink;
    // Text outside the block: refused, whatever the signature.
    let mut wrapped = b"UNSIGNED preface\n".to_vec();
    wrapped.extend_from_slice(&signed("wrapped"));
    let (code, reply) = send(daemon.addr(), PST, &mail(&wrapped)).await.unwrap_err();
    assert!(
        code == 554 && reply.contains("exactly one signed block"),
        "{reply}"
    );
    let mut trailer = signed("trailer");
    trailer.extend_from_slice(b"\nUNSIGNED trailer\n");
    let (code, reply) = send(daemon.addr(), PST, &mail(&trailer)).await.unwrap_err();
    assert!(
        code == 554 && reply.contains("exactly one signed block"),
        "{reply}"
    );
    // Tampered signed text.
    let tampered = String::from_utf8(signed("pay 100"))
        .unwrap()
        .replace("pay 100", "pay 999");
    let (code, reply) = send(daemon.addr(), PST, &mail(tampered.as_bytes()))
        .await
        .unwrap_err();
    assert!(code == 550 && reply.contains("does not verify"), "{reply}");

    // One whole block: relayed, and members see the signed text.
    send(daemon.addr(), PST, &mail(&signed(text)))
        .await
        .expect("accepted when allowed");
    let n = f.usable_members().count();
    let got = wait_copies(sink, n).await;
    f.wait_until_no_pending().await;
    assert_eq!(copies(&sink.captured()).len(), n);
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    let list = f.list.clone().strip_secret_key_material();
    let c = copies(&got)[0];
    let m = f
        .members
        .iter()
        .find(|m| c.envelope.rcpt_to == vec![m.email.clone()])
        .unwrap();
    let o =
        embargo_relay::crypto::open_copy(&p, &m.secret, &list, armored_payload(&c.raw)).unwrap();
    let plain = String::from_utf8_lossy(o.plaintext.expose()).into_owned();
    assert!(plain.contains(text), "{plain}");
    assert!(
        !plain.contains("BEGIN PGP SIGNED MESSAGE"),
        "the signed text, not the armor"
    );
    daemon.stop().await;
}
