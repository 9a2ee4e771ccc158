//! Issue 4, acceptance 4: only the signed part counts. A genuine PST
//! signature wrapped in unsigned material is rejected, or (text outside the
//! parts of the root multipart/signed) stripped: no unsigned text reaches a
//! member as if signed.

use embargo_relay::compose;
use embargo_relay::crypto;

use crate::common::*;

const UNSIGNED: &str = "UNSIGNED-INJECTED-3d9c";

/// A mail whose root is `multipart/<sub>` holding `parts` (each a whole entity).
fn wrap(sub: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!(
        "From: {PST}\r\nTo: {LIST}\r\nSubject: wrapped\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/{sub}; boundary=\"outer\"\r\n\r\n"
    )
    .into_bytes();
    for p in parts {
        out.extend_from_slice(b"--outer\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--outer--\r\n");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn wrapped_signatures_never_relay_unsigned_text() {
    let f = Fixture::new();
    let InProcess { sink, running, .. } = f.start_in_process(&Tweaks::default()).await;
    let addr = running.smtp_addr;

    // One genuine signed entity, reused inside every wrapper.
    let part = compose::text_part(Some("CVE-2026-40: wrapped"), &embargoed("signed text"));
    let sig = f.pst_gpg.detach_sign(&f.pst_fpr, &part);
    let (ctype, body) = embargo_relay::entity::signed_body(&part, &sig);
    let mut signed_entity = format!("Content-Type: {ctype}\r\n\r\n").into_bytes();
    signed_entity.extend_from_slice(&body);
    let text = format!("Content-Type: text/plain\r\n\r\n{UNSIGNED}\r\n").into_bytes();
    let html = format!("Content-Type: text/html\r\n\r\n<p>{UNSIGNED}</p>\r\n").into_bytes();
    let forwarded = {
        let mut m = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
        m.extend_from_slice(&f.gpg_signed_entity(PST, "inner", &part));
        m
    };
    let attachment = {
        let mut m =
            b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"\r\nContent-Disposition: attachment\r\n"
                .to_vec();
        m.extend_from_slice(
            &signed_entity[signed_entity.iter().position(|b| *b == b'\n').unwrap() + 1..],
        );
        m
    };
    let three_parts = {
        let good = f.gpg_signed_entity(PST, "x", &part);
        let mut bad = good.clone();
        // A third part after the signature, inside the multipart/signed.
        let end = String::from_utf8_lossy(&good).rfind("--\r\n").unwrap();
        let boundary_start = String::from_utf8_lossy(&good[..end])
            .rfind("\r\n--")
            .unwrap()
            + 2;
        let delimiter = good[boundary_start..end].to_vec();
        let mut extra = b"\r\n".to_vec();
        extra.extend_from_slice(&delimiter);
        extra.extend_from_slice(b"\r\nContent-Type: text/plain\r\n\r\n");
        extra.extend_from_slice(UNSIGNED.as_bytes());
        bad.splice(boundary_start - 2..boundary_start - 2, extra);
        bad
    };
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "unsigned preamble part",
            wrap("mixed", &[text.clone(), signed_entity.clone()]),
            "not PGP/MIME signed",
        ),
        (
            "HTML beside the signed part",
            wrap("alternative", &[signed_entity.clone(), html]),
            "not PGP/MIME signed",
        ),
        (
            "signed mail forwarded inside",
            wrap("mixed", &[text.clone(), forwarded]),
            "not PGP/MIME signed",
        ),
        (
            "signed part as an attachment",
            wrap("mixed", &[text, attachment]),
            "not PGP/MIME signed",
        ),
        (
            "third part inside multipart/signed",
            three_parts,
            "exactly two parts",
        ),
    ];
    for (name, mail, reason) in &cases {
        let (code, reply) = send(addr, PST, mail).await.expect_err(name);
        assert!(code >= 550, "{name}: {reply}");
        assert!(
            reply.contains(reason),
            "{name}: {reply:?} should say {reason:?}"
        );
    }

    // Text in the preamble and epilogue of the root multipart/signed is not
    // signed: it is stripped, and only the signed part is relayed.
    let mut with_outside = f.gpg_signed_entity(PST, "CVE-2026-40: wrapped", &part);
    let at = find(&with_outside, b"This is an OpenPGP/MIME signed message").unwrap();
    with_outside.splice(at..at, format!("{UNSIGNED} preamble\r\n").into_bytes());
    with_outside.extend_from_slice(format!("{UNSIGNED} epilogue\r\n").as_bytes());
    send(addr, PST, &with_outside)
        .await
        .expect("preamble and epilogue are ignored");

    let n = f.usable_members().count();
    let got = wait_copies(&sink, n).await;
    f.wait_until_no_pending().await;
    assert_eq!(copies(&sink.captured()).len(), n, "only the genuine one");
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    let list_cert = f.list.clone().strip_secret_key_material();
    for m in f.usable_members() {
        let c = copies(&got)
            .into_iter()
            .find(|c| c.envelope.rcpt_to == vec![m.email.clone()])
            .unwrap();
        let o = crypto::open_copy(&p, &m.secret, &list_cert, armored_payload(&c.raw)).unwrap();
        let text = String::from_utf8_lossy(o.plaintext.expose()).into_owned();
        assert!(text.contains("signed text"), "{text}");
        assert!(!text.contains(UNSIGNED), "unsigned text relayed: {text}");
    }
    running.shutdown().await;
}
