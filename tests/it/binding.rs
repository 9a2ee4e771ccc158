//! Issue 16, "a signature binds its list": where the signed entity names
//! its recipients (protected To/Cc headers, as Thunderbird signs them) or
//! the announcement names its list (`List:`), this list must be the one
//! named; a mail signed for another list and replayed here is refused.

use embargo_relay::entity::text_plain_with;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_mail_signed_for_another_list_is_refused() {
    let f = Fixture::new();
    let d = f.start_in_process(&Tweaks::default()).await;
    let signed = |headers: &[(&str, &str)], body: &str| {
        let mut fields = vec![
            ("; protected-headers=", "\"v1\""),
            ("Subject", "CVE-2026-95"),
        ];
        fields.extend_from_slice(headers);
        let entity = text_plain_with(&fields, &embargoed(body));
        f.gpg_signed_entity(PST, "CVE-2026-95", &entity)
    };
    // The same entity signed and encrypted to the list, as Thunderbird
    // sends it with encryption on: the binding holds inside too.
    let list_public = f.list.clone().strip_secret_key_material();
    f.pst_gpg
        .import(&embargo_relay::crypto::armored_public(&list_public).unwrap());
    let encrypted = |headers: &[(&str, &str)], body: &str| {
        let mut fields = vec![
            ("; protected-headers=", "\"v1\""),
            ("Subject", "CVE-2026-95"),
        ];
        fields.extend_from_slice(headers);
        let entity = text_plain_with(&fields, &embargoed(body));
        let sealed = f
            .pst_gpg
            .sign_encrypt(&f.pst_fpr, &f.list.fingerprint().to_hex(), &entity);
        embargo_relay::compose::multipart_encrypted(PST, LIST, "...", &sealed)
    };
    let other = "vendors@other-list.example";
    let list_field = |list: &str, text: &str| {
        let until = now() + chrono::Duration::days(2);
        format!(
            "Embargo-Until: {}\nList: {list}\n\n{text}",
            until.format("%Y-%m-%dT%H:%M:%SZ")
        )
    };
    for (what, mail) in [
        ("signed To", signed(&[("To", other)], "to another list")),
        (
            "signed To, encrypted",
            encrypted(&[("To", other)], "to another list, encrypted"),
        ),
        (
            "signed To and Cc",
            signed(&[("To", other), ("Cc", "team@project.example")], "cc"),
        ),
        (
            "List: field",
            f.gpg_signed(PST, "CVE-2026-96", &list_field(other, "another list")),
        ),
    ] {
        let (code, text) = send(d.addr(), PST, &mail).await.unwrap_err();
        assert!(
            code == 550 && text.contains("does not name this list"),
            "{what}: {text}"
        );
    }
    // The PST hears of each (a replay from another list, or a slip in
    // `List:`), in the encrypted refusal.
    let got = d
        .sink
        .wait_until(PATIENCE, |g| refusal_texts(&f, g).len() >= 4)
        .await;
    assert!(
        refusal_texts(&f, &got)
            .iter()
            .all(|t| t.contains("does not name this list")),
        "{:?}",
        refusal_texts(&f, &got)
    );
    // A command carries `List:` beside its field; for another list it is
    // refused before it is applied.
    let id = send(
        d.addr(),
        PST,
        &f.gpg_signed(PST, "CVE-2026-98", &embargoed("x")),
    )
    .await
    .expect("accepted");
    let id = id.rsplit(' ').next().unwrap().to_owned();
    let cancel = |list: &str| {
        f.gpg_signed(
            PST,
            "embargo command",
            &format!("Embargo-Cancel: {id}\nList: {list}\n"),
        )
    };
    let (code, text) = send(d.addr(), PST, &cancel(other)).await.unwrap_err();
    assert!(
        code == 550 && text.contains("does not name this list"),
        "{text}"
    );
    let held = |f: &Fixture| {
        f.spool()
            .embargoes()
            .unwrap()
            .iter()
            .any(|e| e.id == id && e.state(now()) == "held")
    };
    assert!(held(&f), "not applied");
    send(d.addr(), PST, &cancel(LIST))
        .await
        .expect("a command naming this list is applied");
    assert!(!held(&f), "cancelled");
    // This list named, in either place, in any case: accepted.
    let upper = LIST.to_uppercase();
    for (what, mail) in [
        (
            "signed To",
            signed(&[("To", &format!("Distros <{upper}>"))], "to us"),
        ),
        (
            "signed Cc",
            signed(&[("To", other), ("Cc", LIST)], "cc to us"),
        ),
        (
            "List: field",
            f.gpg_signed(PST, "CVE-2026-97", &list_field(&upper, "ours")),
        ),
        ("no signed recipients", signed(&[], "unnamed")),
        (
            "signed To, encrypted",
            encrypted(&[("To", LIST)], "to us, encrypted"),
        ),
        (
            "undisclosed recipients",
            signed(&[("To", "undisclosed-recipients:;")], "undisclosed"),
        ),
    ] {
        send(d.addr(), PST, &mail)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
    d.stop().await;
}
