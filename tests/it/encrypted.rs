//! Issue 4, acceptance 3: announcements encrypted to the list key, made by
//! GnuPG, in both RFC 3156 forms, are decrypted and held to the same PST
//! check; encrypted but unsigned, signed by someone else, not for the list
//! or tampered: rejected, nothing relayed, no plaintext in any reason.

use embargo_relay::compose;
use embargo_relay::crypto;
use embargo_relay::sink::CaptureSink;

use crate::common::*;

/// `gpg` run with `args` over `data`, which must succeed.
fn gpg_ok(gpg: &Gpg, args: &[&str], data: &[u8]) -> Vec<u8> {
    let out = gpg.run(args, data);
    assert!(
        out.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_announcements_are_decrypted_and_held_to_the_pst_check() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let daemon = Daemon::start(&f.write_config(sink.addr()), &f.path("daemon.log"));
    let list_public = crypto::armored_public(&f.list.clone().strip_secret_key_material()).unwrap();
    let list_fpr = f.list.fingerprint().to_hex();
    f.pst_gpg.run(&["--import"], &list_public);
    let eve = Gpg::new();
    let eve_fpr = eve.generate("Eve <eve@evil.example>");
    eve.run(&["--import"], &list_public);
    let enc = |gpg: &Gpg, extra: &[&str], data: &[u8]| {
        let mut args = vec!["--armor", "--trust-model", "always", "--encrypt"];
        args.extend_from_slice(extra);
        gpg_ok(gpg, &args, data)
    };

    // RFC 3156 §6.2, as `gpg --sign --encrypt` and Thunderbird make it: the
    // OpenPGP message is signed and encrypted; its content is the entity.
    let combined_text = "CANARY-combined-51f0";
    let entity = compose::text_part(Some("CVE-2026-30: combined"), &embargoed(combined_text));
    let armored = enc(
        &f.pst_gpg,
        &[
            "--sign",
            "--local-user",
            &f.pst_fpr,
            "--recipient",
            &list_fpr,
        ],
        &entity,
    );
    let combined = compose::multipart_encrypted(PST, LIST, "...", &armored);
    send(daemon.addr, PST, &combined)
        .await
        .expect("signed+encrypted by the PST is accepted");

    // RFC 3156 §6.1, as mutt makes it: a multipart/signed entity, encrypted.
    let nested_text = "CANARY-nested-0b7d";
    let part = compose::text_part(Some("CVE-2026-31: nested"), &embargoed(nested_text));
    let sig = f.pst_gpg.detach_sign(&f.pst_fpr, &part);
    let (ctype, body) = embargo_relay::entity::signed_body(&part, &sig);
    let mut signed_entity = format!("Content-Type: {ctype}\r\n\r\n").into_bytes();
    signed_entity.extend_from_slice(&body);
    let armored = enc(&f.pst_gpg, &["--recipient", &list_fpr], &signed_entity);
    send(
        daemon.addr,
        PST,
        &compose::multipart_encrypted(PST, LIST, "...", &armored),
    )
    .await
    .expect("an encrypted multipart/signed entity is accepted");

    // What must be refused; each carries a canary that must never show.
    let secret = "CANARY-refused-9e2a";
    let plain = compose::text_part(Some("x"), &embargoed(secret));
    let unsigned = enc(&f.pst_gpg, &["--recipient", &list_fpr], &plain);
    let by_eve = enc(
        &eve,
        &["--sign", "--local-user", &eve_fpr, "--recipient", &list_fpr],
        &plain,
    );
    let not_for_list = enc(
        &f.pst_gpg,
        &[
            "--sign",
            "--local-user",
            &f.pst_fpr,
            "--recipient",
            &f.pst_fpr,
        ],
        &plain,
    );
    let tampered = {
        let good = enc(
            &f.pst_gpg,
            &[
                "--sign",
                "--local-user",
                &f.pst_fpr,
                "--recipient",
                &list_fpr,
            ],
            &plain,
        );
        // Flip bits in the body of the encrypted data (binary), re-armored.
        let binary = gpg_ok(&f.pst_gpg, &["--dearmor"], &good);
        let mut bad = binary.clone();
        let at = bad.len() - 40;
        bad[at] ^= 0x55;
        gpg_ok(&f.pst_gpg, &["--enarmor"], &bad)
    };
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "unsigned",
            unsigned,
            "encrypted to the list, but not signed",
        ),
        (
            "signed by a non-PST key",
            by_eve,
            "signature not from a PST key",
        ),
        ("not for the list", not_for_list, "not to the list key"),
        ("tampered", tampered, "decryption failed"),
    ];
    for (name, armored, reason) in &cases {
        let mail = compose::multipart_encrypted(PST, LIST, "...", armored);
        let (code, text) = send(daemon.addr, PST, &mail).await.expect_err(name);
        assert_eq!(code, 550, "{name}: {text}");
        assert!(
            text.contains(reason),
            "{name}: {text:?} should say {reason:?}"
        );
        assert!(!text.contains(secret));
    }

    // The two genuine ones reached every usable member; the PST's refusal
    // notices never carry the plaintext either.
    let n = f.usable_members().count();
    let got = wait_copies(&sink, 2 * n).await;
    f.wait_until_no_pending().await;
    assert_eq!(copies(&sink.captured()).len(), 2 * n);
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    let list_cert = f.list.clone().strip_secret_key_material();
    for m in f.usable_members() {
        let texts: Vec<String> = copies(&got)
            .iter()
            .filter(|c| c.envelope.rcpt_to == vec![m.email.clone()])
            .map(|c| {
                let o = crypto::open_copy(&p, &m.secret, &list_cert, armored_payload(&c.raw))
                    .expect("member decrypts");
                String::from_utf8_lossy(o.plaintext.expose()).into_owned()
            })
            .collect();
        assert!(
            texts.iter().any(|t| t.contains(combined_text)),
            "{}",
            m.email
        );
        assert!(texts.iter().any(|t| t.contains(nested_text)), "{}", m.email);
        assert!(texts.iter().all(|t| !t.contains(secret)));
    }
    for c in sink.captured() {
        assert!(find(&c.raw, secret.as_bytes()).is_none());
        assert!(find(&c.raw, combined_text.as_bytes()).is_none());
        assert!(find(&c.raw, nested_text.as_bytes()).is_none());
    }
    let log = std::fs::read(f.path("daemon.log")).unwrap();
    for canary in [secret, combined_text, nested_text] {
        assert!(
            find(&log, canary.as_bytes()).is_none(),
            "{canary} in the log"
        );
        for (path, bytes) in all_files(&f.state_dir()) {
            assert!(
                find(&bytes, canary.as_bytes()).is_none(),
                "{canary} in {path:?}"
            );
        }
    }
    for record in f.audit() {
        assert!(!record.detail.contains(secret));
    }
    drop(daemon);
}
