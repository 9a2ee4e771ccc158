//! Issue 4, acceptance 7 (second half): the PST adds a member with a signed
//! `Roster-Add:` (certificate attached) and removes one with
//! `Roster-Remove:`; each gets a signed receipt, the roster file is
//! rewritten, and the next announcement reaches exactly the roster in force.

use embargo_relay::crypto;
use embargo_relay::intake::mime::to_crlf;
use embargo_relay::sink::Captured;

use crate::common::*;

const NEW: &str = "security@newdistro.example";

/// A PST command mail: `field` in the text part, `attachment` (armored) beside it.
pub fn command(f: &Fixture, field: &str, attachment: Option<&[u8]>) -> Vec<u8> {
    // A nonce: the same text signed twice in one second would be a replay.
    let nonce = crypto::random_hex(4);
    let mut entity = format!(
        "Content-Type: multipart/mixed; boundary=\"rb\"\r\n\r\n--rb\r\nContent-Type: text/plain\r\n\r\n{field}\r\n\r\nRoster change {nonce}.\r\n"
    )
    .into_bytes();
    if let Some(key) = attachment {
        entity.extend_from_slice(
            b"--rb\r\nContent-Type: application/pgp-keys; name=\"key.asc\"\r\nContent-Disposition: attachment; filename=\"key.asc\"\r\n\r\n",
        );
        entity.extend_from_slice(&to_crlf(key));
        entity.extend_from_slice(b"\r\n");
    }
    entity.extend_from_slice(b"--rb--\r\n");
    f.gpg_signed_entity(PST, "roster", &entity)
}

fn copies_to(got: &[Captured], who: &str) -> usize {
    copies(got)
        .iter()
        .filter(|c| c.envelope.rcpt_to == vec![who.to_owned()])
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn roster_add_and_remove_by_signed_pst_command() {
    let f = Fixture::new();
    let tweaks = Tweaks {
        list: vec![("roster_file", Tweaks::text("roster.toml"))],
        ..Tweaks::default()
    };
    let daemon = f.start_in_process(&tweaks).await;
    let sink = &daemon.sink;
    let new_key = crypto::generate_key(
        &format!("New Distro <{NEW}>"),
        now() - chrono::Duration::hours(1),
        None,
    )
    .unwrap();
    let fpr = new_key.fingerprint().to_hex();
    let public = crypto::armored_public(&new_key.clone().strip_secret_key_material()).unwrap();

    // Refused, with the reason to the PST: no certificate, wrong fingerprint.
    let add = format!("Roster-Add: {NEW}, New Distro, {fpr}");
    let (code, text) = send(daemon.addr(), PST, &command(&f, &add, None))
        .await
        .unwrap_err();
    assert!(
        code == 550 && text.contains("attach the member's certificate"),
        "{text}"
    );
    let other = crypto::generate_key("X <x@x.example>", now(), None).unwrap();
    let wrong = crypto::armored_public(&other.strip_secret_key_material()).unwrap();
    let (code, text) = send(daemon.addr(), PST, &command(&f, &add, Some(&wrong)))
        .await
        .unwrap_err();
    assert!(
        code == 550 && text.contains("not the fingerprint given") && !text.contains(&fpr),
        "{text}"
    );

    // Added: the receipt, the file, and the next announcement reaches them.
    let add_mail = command(&f, &add, Some(&public));
    let reply = send(daemon.addr(), PST, &add_mail)
        .await
        .expect("Roster-Add applied");
    assert!(reply.contains("roster updated"), "{reply}");
    // The same mail again (an MTA that lost our answer): the same answer,
    // applied once, one receipt.
    let again = send(daemon.addr(), PST, &add_mail)
        .await
        .expect("the same roster command again is answered as accepted");
    assert_eq!(again, reply, "the same answer");
    let file = std::fs::read_to_string(f.path("roster.toml")).unwrap();
    assert!(file.contains(NEW) && file.contains("New Distro"), "{file}");
    assert_eq!(file.matches(NEW).count(), 1, "{file}");
    assert!(f.path(&format!("keys/{fpr}.asc")).exists());
    let said = |g: &[Captured]| {
        refusal_texts(&f, g)
            .iter()
            .any(|t| t.contains(&format!("Added {NEW} (New Distro)")))
    };
    let got = sink.wait_until(PATIENCE, said).await;
    assert!(said(&got), "signed, encrypted receipt to the PST");
    let receipts_of_add = |g: &[Captured]| {
        refusal_texts(&f, g)
            .iter()
            .filter(|t| t.contains(&format!("Added {NEW} (New Distro)")))
            .count()
    };
    let first = f.gpg_signed(PST, "CVE-2026-70: after add", &embargoed("welcome"));
    send(daemon.addr(), PST, &first).await.expect("accepted");
    let n = f.usable_members().count();
    let got = wait_copies(sink, n + 1).await;
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    let list = f.list.clone().strip_secret_key_material();
    let theirs: Vec<&Captured> = copies(&got)
        .into_iter()
        .filter(|c| c.envelope.rcpt_to == vec![NEW.to_owned()])
        .collect();
    assert_eq!(theirs.len(), 1, "the new member got the announcement");
    let opened = crypto::open_copy(&p, &new_key, &list, armored_payload(&theirs[0].raw))
        .expect("encrypted to the new member's key");
    assert!(String::from_utf8_lossy(opened.plaintext.expose()).contains("welcome"));

    // Removed: the next announcement does not reach them.
    let reply = send(
        daemon.addr(),
        PST,
        &command(&f, &format!("Roster-Remove: {NEW}"), None),
    )
    .await
    .expect("Roster-Remove applied");
    assert!(reply.contains("roster updated"), "{reply}");
    assert!(
        !std::fs::read_to_string(f.path("roster.toml"))
            .unwrap()
            .contains(NEW)
    );
    // The old add mail once more, after the removal: still only a resend,
    // never applied a second time.
    let again = send(daemon.addr(), PST, &add_mail)
        .await
        .expect("answered as accepted");
    assert!(again.contains("roster updated (roster-add)"), "{again}");
    assert!(
        !std::fs::read_to_string(f.path("roster.toml"))
            .unwrap()
            .contains(NEW),
        "a resent add does not add the removed member back"
    );
    // A config-file member cannot be removed by mail.
    let (code, text) = send(
        daemon.addr(),
        PST,
        &command(&f, &format!("Roster-Remove: {GPG_MEMBER}"), None),
    )
    .await
    .unwrap_err();
    assert!(code == 550 && text.contains("remove it there"), "{text}");
    let second = f.gpg_signed(PST, "CVE-2026-71: after remove", &embargoed("bye"));
    send(daemon.addr(), PST, &second).await.expect("accepted");
    let got = wait_copies(sink, 2 * n + 1).await;
    f.wait_until_no_pending().await;
    assert_eq!(copies(&got).len(), 2 * n + 1);
    assert_eq!(copies_to(&sink.captured(), NEW), 1, "nothing after removal");
    assert_eq!(
        receipts_of_add(&sink.captured()),
        1,
        "one receipt for the add"
    );
    let audit = f.audit();
    for event in ["roster-add", "roster-remove"] {
        assert!(audit.iter().any(|r| r.event == event), "{event} audited");
    }
    daemon.stop().await;

    // After a restart the roster file is read back.
    let daemon = f.start_in_process(&tweaks).await;
    let reply = send(daemon.addr(), PST, &command(&f, &add, Some(&public)))
        .await
        .expect("added again after a restart");
    assert!(reply.contains("roster updated"), "{reply}");
    daemon.stop().await;
    let daemon = f.start_in_process(&tweaks).await;
    let (code, text) = send(daemon.addr(), PST, &command(&f, &add, Some(&public)))
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("already a member"), "{text}");
    daemon.stop().await;
}
