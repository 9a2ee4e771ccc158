//! Acceptance 1, 2, 3 and 5: a GnuPG-signed announcement becomes one
//! encrypted copy per member that Sequoia and GnuPG decrypt and verify, no
//! plaintext anywhere else, and a member with an expired key gets nothing.

use embargo_relay::crypto::open_copy;
use embargo_relay::sink::{CaptureSink, Captured};
use sequoia_openpgp::KeyHandle;
use sequoia_openpgp::policy::StandardPolicy;

use embargo_relay::clock::Clock;

use crate::common::*;

const CANARY: &str = "CANARY-7f3a9c-kubelet-traversal";
const SUBJECT: &str = "[EMBARGOED] CVE-2026-1234: kubelet path traversal";

#[tokio::test(flavor = "multi_thread")]
async fn gpg_signed_announcement_reaches_each_member_encrypted_to_that_member_alone() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let daemon = Daemon::start(&f.write_config(sink.addr()), &f.path("daemon.log"));
    let until = (now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string();
    let body = format!("Embargo-Until: {until}\n\nThe secret is {CANARY}.\n");
    let (mail, signed_part) = f.gpg_signed_with_part(PST, SUBJECT, &body);

    let reply = send(daemon.addr, PST, &mail)
        .await
        .expect("announcement accepted");
    assert!(reply.contains("announcement accepted as"), "{reply}");

    let usable: Vec<&TestMember> = f.usable_members().collect();
    // The receipt follows the copies once all were tried.
    sink.wait_until(PATIENCE, |g| {
        copies(g).len() >= usable.len() && !receipts(g).is_empty()
    })
    .await;
    f.wait_until_no_pending().await;
    let all = sink.captured();
    let captured: Vec<Captured> = copies(&all).into_iter().cloned().collect();
    assert_eq!(
        captured.len(),
        usable.len(),
        "exactly one copy per usable member"
    );

    // The PST's receipt: encrypted to the signer, says what happened.
    let id = reply.rsplit(' ').next().unwrap();
    let receipt = receipts(&all);
    assert_eq!(receipt.len(), 1, "one receipt");
    assert_eq!(receipt[0].envelope.rcpt_to, vec![PST.to_owned()]);
    let list_cert = f.list.clone().strip_secret_key_material();
    let p = StandardPolicy::new();
    let opened = open_copy(
        &p,
        &f.members[0].secret,
        &list_cert,
        armored_payload(&receipt[0].raw),
    )
    .expect("the PST decrypts its receipt");
    let text = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
    for expected in [
        format!("Embargo id:     {id}"),
        format!(
            "Embargo lifts:  {} UTC",
            until.replace('T', " ").trim_end_matches('Z')
        ),
        "Copies sent:    3 of 5 members".to_owned(),
        format!("{EXPIRED_MEMBER} (Org 3): certificate"),
        format!("{MISSING_MEMBER} (Missing D): certificate file"),
        "Public advisory: none held".to_owned(),
    ] {
        assert!(
            text.contains(&expected),
            "receipt lacks {expected:?}:\n{text}"
        );
    }
    assert!(
        !text.contains(CANARY),
        "the receipt does not repeat the announcement"
    );

    // Message-IDs: one per delivery, none naming the embargo, so that
    // someone who sees the traffic cannot link the copies by them.
    let message_ids: Vec<String> = all
        .iter()
        .map(|c| {
            let text = String::from_utf8_lossy(&c.raw);
            text.lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .expect("a Message-ID")
                .to_owned()
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = message_ids.iter().collect();
    assert_eq!(distinct.len(), message_ids.len(), "{message_ids:?}");
    assert!(
        message_ids.iter().all(|m| !m.contains(id)),
        "the embargo id {id} in {message_ids:?}"
    );

    let others: Vec<&TestMember> = f.members.iter().collect();
    for m in &usable {
        let copies: Vec<_> = captured
            .iter()
            .filter(|c| c.envelope.rcpt_to == vec![m.email.clone()])
            .collect();
        assert_eq!(
            copies.len(),
            1,
            "{}: one envelope, addressed to this member only",
            m.email
        );
        let raw = &copies[0].raw;
        let text = String::from_utf8_lossy(raw);
        assert!(
            text.contains("Subject: [embargoed announcement]\r\n"),
            "{text}"
        );
        assert!(text.contains("multipart/encrypted"), "{text}");
        assert!(text.contains(&format!("From: {LIST}")), "{text}");
        assert!(
            !text.contains("kubelet"),
            "real subject leaked into the outer copy"
        );
        for other in others.iter().filter(|o| o.email != m.email) {
            assert!(
                !text.contains(&other.email),
                "{}'s copy names {}",
                m.email,
                other.email
            );
        }

        // Sequoia, with this member's key alone.
        let opened = open_copy(&p, &m.secret, &list_cert, armored_payload(raw))
            .expect("decrypts and verifies");
        assert_eq!(
            opened.signer,
            Some(f.list.fingerprint()),
            "signed by the list key"
        );
        assert_eq!(opened.recipients.len(), 1, "one PKESK only");
        let own: Vec<KeyHandle> = m
            .secret
            .keys()
            .map(|k| KeyHandle::from(k.key().keyid()))
            .collect();
        assert!(
            own.iter().any(|h| h.aliases(&opened.recipients[0])),
            "PKESK names this member's key"
        );
        for other in others.iter().filter(|o| o.email != m.email) {
            assert!(
                open_copy(&p, &other.secret, &list_cert, armored_payload(raw)).is_err(),
                "{} can read {}'s copy",
                other.email,
                m.email
            );
        }
        let plain = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
        assert!(plain.contains("protected-headers=\"v1\""), "{plain}");
        assert!(
            plain.contains(&format!("Subject: {SUBJECT}\r\n")),
            "{plain}"
        );
        assert!(plain.contains(CANARY), "the body arrives intact");
        assert!(
            find(opened.plaintext.expose(), &signed_part).is_some(),
            "the PST's signed part is inside, byte for byte"
        );
        // The copy states when the embargo lifts, in UTC, in a header and in words.
        assert!(
            plain.contains(&format!("\r\nEmbargo-Until: {until}\r\n")),
            "{plain}"
        );
        let words = format!(
            "EMBARGOED until {} UTC",
            until.replace('T', " ").trim_end_matches(":00Z")
        );
        assert!(plain.contains(&words), "{words} in {plain}");

        // GnuPG 2.2, as the member's mail client, with the member key and the list certificate.
        let gpg = Gpg::new();
        gpg.import(&embargo_relay::crypto::armored_secret(&m.secret).unwrap());
        gpg.import(&embargo_relay::crypto::armored_public(&list_cert).unwrap());
        let (gplain, status) = gpg
            .decrypt(armored_payload(raw))
            .unwrap_or_else(|s| panic!("gpg could not decrypt {}'s copy: {s}", m.email));
        assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
        let validsig = status
            .lines()
            .find(|l| l.starts_with("[GNUPG:] VALIDSIG "))
            .unwrap_or_else(|| panic!("no valid signature: {status}"));
        assert!(
            validsig.ends_with(&f.list.fingerprint().to_hex()),
            "signed by the list key: {validsig}"
        );
        assert!(String::from_utf8_lossy(&gplain).contains(CANARY));
    }

    // Acceptance 5: the members with an expired or a missing certificate got
    // nothing, and the audit says who and why.
    for m in [EXPIRED_MEMBER, MISSING_MEMBER] {
        let got = captured
            .iter()
            .any(|c| c.envelope.rcpt_to.contains(&m.to_owned()));
        assert!(!got, "{m} got a copy");
    }
    let audit = f.audit();
    let skipped = |who: &str| {
        audit
            .iter()
            .find(|r| r.event == "skipped" && r.member.as_deref() == Some(who))
            .map(|r| r.detail.clone())
    };
    let expired = skipped(EXPIRED_MEMBER).expect("the expired member's skip is audited");
    assert!(expired.contains("not alive"), "{expired}");
    let missing = skipped(MISSING_MEMBER).expect("the missing certificate's skip is audited");
    assert!(
        missing.contains("not-there.asc") && missing.contains("unreadable"),
        "{missing}"
    );
    assert_eq!(audit.iter().filter(|r| r.event == "skipped").count(), 2);
    assert_eq!(
        audit.iter().filter(|r| r.event == "sent").count(),
        usable.len()
    );
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("member skipped")
            && log.contains(EXPIRED_MEMBER)
            && log.contains(MISSING_MEMBER),
        "{log}"
    );

    // Acceptance 3: the canary is nowhere but inside the decrypted copies.
    assert!(
        captured
            .iter()
            .all(|c| find(&c.raw, CANARY.as_bytes()).is_none()),
        "canary in outbound bytes"
    );
    assert!(!log.contains(CANARY), "canary in the log");
    let files = all_files(&f.state_dir());
    assert!(files.iter().any(|(p, _)| p.ends_with("spool.sqlite")));
    for (path, bytes) in files {
        assert!(
            find(&bytes, CANARY.as_bytes()).is_none(),
            "canary in {}",
            path.display()
        );
        assert!(
            find(&bytes, b"kubelet path traversal").is_none(),
            "subject in {}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_smarthost_failure_is_retried_with_backoff() {
    let f = Fixture::new();
    let daemon = f.start_in_process(&Tweaks::default()).await;
    let sink = &daemon.sink;
    sink.fail_next(2);
    send(
        daemon.addr(),
        PST,
        &f.gpg_signed(PST, "retry", &embargoed("body")),
    )
    .await
    .unwrap();
    let n = f.usable_members().count();
    // The backoff runs on the manual clock: moved on a second at a time
    // until every copy is in.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while copies(&sink.captured()).len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "copies never all sent"
        );
        daemon
            .clock
            .set(daemon.clock.now() + chrono::Duration::seconds(1));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let got = sink.captured();
    assert_eq!(
        copies(&got).len(),
        n,
        "every member got its copy after the 451s"
    );
    let deferred: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "deferred")
        .collect();
    assert_eq!(deferred.len(), 2, "{deferred:?}");
    assert!(deferred[0].detail.contains("451"), "{}", deferred[0].detail);
}

/// Issue 20: a delivery's place to send is given back once the smarthost
/// has answered, not once the outcome is committed. With two places to
/// send (four in the lane) and every commit of outcomes held three
/// seconds (a slow disk), each copy is at the sink while the first
/// commit still waits; held until each commit, the copies would come one
/// commit apart (the roster's two skipped members take places too).
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_commit_does_not_hold_the_next_copy() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config_with(
        sink.addr(),
        &Tweaks {
            outbound: vec![("concurrency", "2".to_owned())],
            ..Tweaks::default()
        },
    );
    let daemon = Daemon::start_with(
        &config,
        &f.path("daemon.log"),
        &[(embargo_relay::failpoint::VAR, "record-batch:sleep=3000")],
    );
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "slow disk", &embargoed("x")),
    )
    .await
    .expect("accepted");
    let n = f.usable_members().count();
    assert!(n >= 3, "{n}");
    wait_copies(&sink, n).await;
    let committed = f.audit().iter().filter(|r| r.event == "sent").count();
    assert!(
        committed + 1 < n,
        "{committed} of {n} copies were committed before the last one was sent"
    );
    // And each is committed in the end.
    let deadline = std::time::Instant::now() + PATIENCE;
    while f.audit().iter().filter(|r| r.event == "sent").count() < n {
        assert!(std::time::Instant::now() < deadline, "not all committed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Issue 21: every member copy opens with the PST's terms (deployment,
/// sharing), the lift time in UTC and the SHA-256 of each attachment, and
/// the digests are those of the attachments the member decrypts, for
/// attachments of many sizes, each member's key kind.
#[tokio::test(flavor = "multi_thread")]
async fn every_copy_states_the_terms_and_the_attachments_digests() {
    use base64::Engine;
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let daemon = Daemon::start(&f.write_config(sink.addr()), &f.path("daemon.log"));
    let until = (now() + chrono::Duration::days(3))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string();
    let sizes = [0usize, 1, 57, 4000];
    let content = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 31 % 251) as u8).collect() };
    let mut entity = format!(
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nEmbargo-Until: {until}\r\nDeployment: forbidden\r\nTLP: AMBER\r\n\r\nThe fix and a proof of concept are attached.\r\n"
    )
    .into_bytes();
    for (i, n) in sizes.iter().enumerate() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(content(*n));
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        entity.extend_from_slice(
            format!(
                "--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"part-{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                lines.join("\r\n")
            )
            .as_bytes(),
        );
    }
    entity.extend_from_slice(b"--b1--\r\n");
    let mail = f.gpg_signed_entity(PST, "CVE-2026-77: terms", &entity);
    send(daemon.addr, PST, &mail).await.expect("accepted");
    let usable: Vec<&TestMember> = f.usable_members().collect();
    wait_copies(&sink, usable.len()).await;
    let list_cert = f.list.clone().strip_secret_key_material();
    let p = StandardPolicy::new();
    let all = sink.captured();
    let lifts = until.replace('T', " ").trim_end_matches(":00Z").to_owned();
    for m in &usable {
        let copy = copies(&all)
            .into_iter()
            .find(|c| c.envelope.rcpt_to == vec![m.email.clone()])
            .unwrap_or_else(|| panic!("a copy for {}", m.email));
        let opened = open_copy(&p, &m.secret, &list_cert, armored_payload(&copy.raw))
            .unwrap_or_else(|e| panic!("{} decrypts its copy: {e}", m.email));
        let text = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
        for said in [
            format!("EMBARGOED until {lifts} UTC"),
            "Deployment during the embargo: FORBIDDEN".to_owned(),
            "Sharing: TLP:AMBER: share only on a need-to-know basis".to_owned(),
        ] {
            assert!(text.contains(&said), "{}: {said}:\n{text}", m.email);
        }
        // The digests listed are those of what the member decrypted.
        let inner = mail_parser::MessageParser::default()
            .parse(opened.plaintext.expose())
            .unwrap();
        let mut seen = 0;
        for part in inner.attachments() {
            let Some(name) = mail_parser::MimeHeaders::attachment_name(part) else {
                continue;
            };
            let Some(i) = name
                .strip_prefix("part-")
                .and_then(|n| n.strip_suffix(".bin"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            assert_eq!(part.contents(), &content(sizes[i])[..], "{name}");
            let digest = openssl::sha::sha256(part.contents())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            assert!(
                text.contains(&format!("  {digest}  {name}\r\n")),
                "{}: {name} {digest}:\n{text}",
                m.email
            );
            seen += 1;
        }
        assert_eq!(seen, sizes.len(), "{}", m.email);
    }
}

/// Issue 21: the PST's receipt warns of a lift on a Friday and of an
/// embargo shorter than the list's minimum notice (7 days by default);
/// warnings, not refusals: both are relayed.
#[tokio::test(flavor = "multi_thread")]
async fn the_receipt_warns_of_a_friday_lift_and_a_short_embargo() {
    use chrono::Datelike;
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let daemon = Daemon::start(&f.write_config(sink.addr()), &f.path("daemon.log"));
    // The next Friday 16:00 UTC at least a day ahead; and a Tuesday to
    // Thursday lift two days ahead for the short embargo alone.
    let mut friday = (now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(16, 0, 0)
        .unwrap()
        .and_utc();
    while friday.weekday() != chrono::Weekday::Fri {
        friday += chrono::Duration::days(1);
    }
    let mut short = (now() + chrono::Duration::days(2))
        .date_naive()
        .and_hms_opt(16, 0, 0)
        .unwrap()
        .and_utc();
    while !matches!(
        short.weekday(),
        chrono::Weekday::Tue | chrono::Weekday::Wed | chrono::Weekday::Thu
    ) {
        short += chrono::Duration::days(1);
    }
    let cases = [
        ("CVE-2026-81: friday", friday),
        ("CVE-2026-82: short", short),
    ];
    for (subject, until) in cases {
        let body = format!(
            "Embargo-Until: {}\n\nDetails.\n",
            until.format("%Y-%m-%dT%H:%M:%SZ")
        );
        send(daemon.addr, PST, &f.gpg_signed(PST, subject, &body))
            .await
            .expect("a warning is no refusal");
    }
    sink.wait_until(PATIENCE, |g| receipts(g).len() >= 2).await;
    let texts = receipt_texts(&f, &sink.captured());
    assert_eq!(texts.len(), 2, "the PST decrypts both receipts");
    let receipt = |subject: &str| {
        texts
            .iter()
            .find(|t| t.contains(subject))
            .unwrap_or_else(|| panic!("a receipt for {subject}"))
            .clone()
    };
    let on_friday = receipt("CVE-2026-81: friday");
    assert!(
        on_friday.contains("Warnings about the lift time"),
        "{on_friday}"
    );
    assert!(
        on_friday.contains(&format!(
            "the embargo lifts on a Friday ({} 16:00 UTC)",
            friday.format("Friday %Y-%m-%d")
        )),
        "{on_friday}"
    );
    let short_one = receipt("CVE-2026-82: short");
    assert!(
        short_one.contains("of notice, less than the list's minimum of 7 days"),
        "{short_one}"
    );
    assert!(
        !short_one.contains("Friday") && !short_one.contains("weekend"),
        "{short_one}"
    );
}
