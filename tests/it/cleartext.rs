//! Issue 14, point 2: no text from a mail in any cleartext output. A canary
//! in every position a grammar or address error can quote, in signed and in
//! encrypted PST mails, over SMTP and through `submit`, appears in no SMTP
//! reply, no stderr line (an MTA's bounce), no log line and no spool file;
//! only inside the signed, encrypted refusal to the PST.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use embargo_relay::compose;
use embargo_relay::sink::CaptureSink;

use crate::common::*;

/// The mail's field block for case `i`, with its canary (lowercase, as
/// addresses are lowercased before they are quoted).
fn case(i: usize, until: &str) -> (String, String, &'static str) {
    let c = format!("qz7canary{i}x");
    let block = match i {
        0 => format!("{c}: x\nEmbargo-Until: {until}\n"),
        1 => format!("Embargo-Until: {c}\n"),
        2 => format!("Embargo-Until: {until}\nPublic-To: {c}\n"),
        3 => format!("Embargo-Cancel: {c}\n"),
        4 => format!("Embargo-Extend: 0123456789abcdef {c}\n"),
        5 => format!("Embargo-Cancel: 0123456789abcdef {c}\n"),
        6 => "Embargo-Cancel: cafe5eedcafe5eed\n".to_owned(),
        7 => format!("Roster-Remove: {c}\n"),
        8 => format!("Roster-Add: new@distro.example, Org, {c}\n"),
        9 => format!("Roster-Remove: {c}@nowhere.example\n"),
        10 => format!("Roster-Add: {c}, Org, 0123456789ABCDEF0123456789ABCDEF01234567\n"),
        _ => unreachable!(),
    };
    let canary = if i == 6 {
        "cafe5eedcafe5eed".to_owned()
    } else {
        c
    };
    let kind = match i {
        0..=2 => "announcement grammar",
        3..=6 => "embargo command",
        _ => "roster command",
    };
    (block, canary, kind)
}

const CASES: usize = 11;
/// The From address that is not the signer's: its own canary.
const FROM_CANARY: &str = "qz7canaryfrom@evil.example";

fn submit(config: &Path, raw: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .env_remove("RUST_LOG")
        .args([
            "submit",
            "--sender",
            "pst-bounces@project.example.org",
            "--config",
        ])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(raw);
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), all)
}

#[tokio::test(flavor = "multi_thread")]
async fn text_a_refusal_quotes_reaches_the_pst_encrypted_and_nowhere_else() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    let until = (now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let list_fpr = f.list.fingerprint().to_hex();
    f.pst_gpg.import(
        &embargo_relay::crypto::armored_public(&f.list.clone().strip_secret_key_material())
            .unwrap(),
    );
    // A PST mail, signed or signed and encrypted to the list, distinct each time.
    let mail = |block: &str, nonce: &str, encrypt: bool, from: &str| -> Vec<u8> {
        let entity = compose::text_part(Some("refused"), &format!("{block}\nnonce {nonce}\n"));
        if !encrypt {
            let sig = f.pst_gpg.detach_sign(&f.pst_fpr, &entity);
            return compose::multipart_signed(from, LIST, "refused", &entity, &sig);
        }
        let sealed = f.pst_gpg.sign_encrypt(&f.pst_fpr, &list_fpr, &entity);
        compose::multipart_encrypted(from, LIST, "...", &sealed)
    };

    let mut canaries = Vec::new();
    let mut nonce = 0;
    for encrypt in [false, true] {
        for i in 0..=CASES {
            let (block, canary, kind, from) = if i == CASES {
                (
                    format!("Embargo-Until: {until}\n"),
                    FROM_CANARY.to_owned(),
                    "From header",
                    FROM_CANARY,
                )
            } else {
                let (b, c, k) = case(i, &until);
                (b, c, k, PST)
            };
            for by_submit in [false, true] {
                nonce += 1;
                let raw = mail(&block, &nonce.to_string(), encrypt, from);
                let what = format!("{kind} case {i} (encrypted: {encrypt}, submit: {by_submit})");
                let answer = if by_submit {
                    let (code, out) = submit(&config, &raw);
                    assert!(code == 65 || code == 77, "{what}: refused: {code} {out}");
                    out
                } else {
                    let (code, text) = send(daemon.addr, PST, &raw).await.expect_err(&what);
                    assert!(code >= 500, "{what}: {code} {text}");
                    text
                };
                assert!(
                    !answer.to_lowercase().contains(&canary),
                    "{what}: the canary is in the clear: {answer}"
                );
                canaries.push((canary.clone(), what, i < CASES));
            }
        }
    }

    // The PST's refusals, decrypted: every authenticated case's canary is
    // there (the details go to the PST), and is nowhere in the clear.
    let refusals = sink
        .wait_until(PATIENCE, |g| refusal_texts(&f, g).len() >= 4 * CASES)
        .await;
    let texts = refusal_texts(&f, &refusals).join("\n").to_lowercase();
    for (canary, what, refused) in &canaries {
        if *refused {
            assert!(
                texts.contains(canary.as_str()),
                "{what}: the PST is not told what it wrote"
            );
        }
    }
    let log = std::fs::read_to_string(&daemon.log).unwrap().to_lowercase();
    let files = all_files(&f.state_dir());
    assert!(files.iter().any(|(p, _)| p.ends_with("spool.sqlite")));
    for (canary, what, _) in &canaries {
        assert!(!log.contains(canary.as_str()), "{what}: in the log");
        for c in sink.captured() {
            assert!(
                find(&c.raw.to_ascii_lowercase(), canary.as_bytes()).is_none(),
                "{what}: in a mail on the wire"
            );
        }
        for (path, bytes) in &files {
            assert!(
                find(&bytes.to_ascii_lowercase(), canary.as_bytes()).is_none(),
                "{what}: in {}",
                path.display()
            );
        }
    }
    // And the audit table says what was refused, by field.
    let audit = f.audit();
    assert!(
        audit.iter().any(|r| r.event == "rejected"
            && r.detail
                .contains("line 1: unknown field in the embargo block")),
        "{audit:?}"
    );
}

/// An embargo's time is confidential too: refusals that involve times
/// (an extension to an earlier or too late time, an Embargo-Until in the
/// past) name the problem in the SMTP reply and on `submit`'s stderr, and
/// give the times only in the PST's encrypted refusal.
#[tokio::test(flavor = "multi_thread")]
async fn embargo_times_stay_out_of_replies() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    let minute = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M").to_string();
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let held = now() + chrono::Duration::days(2);
    let reply = send(
        daemon.addr,
        PST,
        &f.gpg_signed(
            PST,
            "CVE-2026-77: held",
            &format!("Embargo-Until: {}\n\nx\n", stamp(held)),
        ),
    )
    .await
    .expect("accepted");
    let id = reply.rsplit(' ').next().unwrap().to_owned();
    let earlier = now() + chrono::Duration::days(1);
    let too_late = now() + chrono::Duration::days(400);
    let past = now() - chrono::Duration::days(1);
    let cases = [
        (
            format!("Embargo-Extend: {id} {}\n", stamp(earlier)),
            vec![held, earlier],
        ),
        (
            format!("Embargo-Extend: {id} {}\n", stamp(too_late)),
            vec![too_late],
        ),
        (format!("Embargo-Until: {}\n", stamp(past)), vec![past]),
    ];
    for (n, (block, times)) in cases.iter().enumerate() {
        for by_submit in [false, true] {
            let raw = f.gpg_signed(PST, "times", &format!("{block}\nnonce {n} {by_submit}\n"));
            let answer = if by_submit {
                let (code, out) = submit(&config, &raw);
                assert!(code == 65 || code == 77, "case {n}: {code} {out}");
                out
            } else {
                send(daemon.addr, PST, &raw).await.expect_err("refused").1
            };
            for t in times {
                assert!(
                    !answer.contains(&minute(*t)),
                    "case {n} (submit: {by_submit}): a time in the clear: {answer}"
                );
            }
        }
    }
    // The PST is told the times, encrypted.
    let got = sink
        .wait_until(PATIENCE, |g| refusal_texts(&f, g).len() >= 6)
        .await;
    let texts = refusal_texts(&f, &got).join("\n");
    for t in [held, earlier, too_late, past] {
        assert!(
            texts.contains(&minute(t)),
            "the PST is not told {t}: {texts}"
        );
    }
}
