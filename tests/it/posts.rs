//! Issue 4, acceptance 6: a member's reply, signed by the member's own key
//! and encrypted to the list key (GnuPG), reaches every member under
//! `member_posts = "list"` and only the PST under `"pst"`, always encrypted
//! to each recipient alone and labelled with the member's organization.

use embargo_relay::compose;
use embargo_relay::crypto;
use embargo_relay::sink::Captured;

use crate::common::*;

const REPLY: &str = "REPLY-patch-review-6a1c";

fn posts(got: &[Captured]) -> Vec<&Captured> {
    got.iter()
        .filter(|c| find(&c.raw, b"Subject: [embargoed list post]").is_some())
        .collect()
}

fn member_posts(policy: &str) -> Tweaks {
    Tweaks {
        policy: vec![("member_posts", Tweaks::text(policy))],
        ..Tweaks::default()
    }
}

/// The GnuPG-using member (Distro A), with its secret key in a fresh GNUPGHOME.
fn member_gpg(f: &Fixture) -> (Gpg, String) {
    let gpg = Gpg::new();
    let m = f.members.iter().find(|m| m.email == GPG_MEMBER).unwrap();
    gpg.import(&crypto::armored_secret(&m.secret).unwrap());
    let list = f.list.clone().strip_secret_key_material();
    gpg.import(&crypto::armored_public(&list).unwrap());
    (gpg, m.secret.fingerprint().to_hex())
}

/// A reply as mutt or Thunderbird send it: signed and encrypted to the list.
fn reply(f: &Fixture, gpg: &Gpg, fpr: &str, encrypt: bool) -> Vec<u8> {
    // Each reply distinct: the same text signed in the same second is a replay.
    let nonce = crypto::random_hex(4);
    let entity = compose::text_part(
        Some("Re: CVE-2026-60"),
        &format!("{REPLY}: looks right ({nonce}).\n"),
    );
    if !encrypt {
        let sig = gpg.detach_sign(fpr, &entity);
        return compose::multipart_signed(GPG_MEMBER, LIST, "Re: x", &entity, &sig);
    }
    let list_fpr = f.list.fingerprint().to_hex();
    let sealed = gpg.sign_encrypt(fpr, &list_fpr, &entity);
    compose::multipart_encrypted(GPG_MEMBER, LIST, "...", &sealed)
}

/// Decrypts each post with its recipient's key; returns (recipient, plaintext).
fn opened(f: &Fixture, got: &[&Captured]) -> Vec<(String, String)> {
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    let list = f.list.clone().strip_secret_key_material();
    got.iter()
        .map(|c| {
            let to = c.envelope.rcpt_to[0].clone();
            let m = f.members.iter().find(|m| m.email == to).unwrap();
            let o = crypto::open_copy(&p, &m.secret, &list, armored_payload(&c.raw))
                .expect("the recipient decrypts its copy, signed by the list");
            assert_eq!(o.recipients.len(), 1, "encrypted to one recipient alone");
            (
                to,
                String::from_utf8_lossy(o.plaintext.expose()).into_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn member_replies_go_to_the_list_or_the_pst_always_encrypted() {
    let f = Fixture::new();
    let (gpg, fpr) = member_gpg(&f);

    // member_posts = "list" (the default): every usable member gets it.
    let daemon = f.start_in_process(&Tweaks::default()).await;
    let sink = &daemon.sink;
    let (code, text) = send(daemon.addr(), GPG_MEMBER, &reply(&f, &gpg, &fpr, false))
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("must be encrypted"), "{text}");
    send(daemon.addr(), GPG_MEMBER, &reply(&f, &gpg, &fpr, true))
        .await
        .expect("a signed, encrypted member reply is accepted");
    let n = f.usable_members().count();
    let got = sink.wait_until(PATIENCE, |g| posts(g).len() >= n).await;
    f.wait_until_no_pending().await;
    let mut to: Vec<String> = opened(&f, &posts(&got))
        .into_iter()
        .map(|(to, text)| {
            assert!(text.contains(REPLY), "{text}");
            assert!(
                text.contains(&format!("Posted to the list by {GPG_MEMBER} (Org 1)")),
                "names the member and organization: {text}"
            );
            assert!(text.contains("Subject: [Org 1] Re: CVE-2026-60"), "{text}");
            to
        })
        .collect();
    to.sort();
    let mut everyone: Vec<String> = f.usable_members().map(|m| m.email.clone()).collect();
    everyone.sort();
    assert_eq!(to, everyone);
    for c in sink.captured() {
        assert!(
            find(&c.raw, REPLY.as_bytes()).is_none(),
            "never plaintext on the wire"
        );
    }
    assert!(
        copies(&sink.captured()).is_empty(),
        "not relayed as an announcement"
    );
    assert!(
        f.audit()
            .iter()
            .any(|r| r.event == "member-post" && r.detail.contains("Org 1"))
    );
    daemon.stop().await;

    // member_posts = "pst": the PST alone.
    let daemon = f.start_in_process(&member_posts("pst")).await;
    let sink = &daemon.sink;
    let before = posts(&sink.captured()).len();
    send(daemon.addr(), GPG_MEMBER, &reply(&f, &gpg, &fpr, true))
        .await
        .expect("accepted for the PST");
    let got = sink.wait_until(PATIENCE, |g| posts(g).len() > before).await;
    f.wait_until_no_pending().await;
    let captured = sink.captured();
    let all = posts(&captured);
    let new = opened(&f, &all[before..]);
    assert_eq!(
        new.len(),
        1,
        "{:?}",
        new.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
    assert_eq!(new[0].0, PST);
    assert!(new[0].1.contains(REPLY));
    drop(got);
    daemon.stop().await;

    // member_posts = "reject": refused.
    let daemon = f.start_in_process(&member_posts("reject")).await;
    let (code, text) = send(daemon.addr(), GPG_MEMBER, &reply(&f, &gpg, &fpr, true))
        .await
        .unwrap_err();
    assert!(
        code == 550 && text.contains("does not relay member posts"),
        "{text}"
    );
    daemon.stop().await;
}
