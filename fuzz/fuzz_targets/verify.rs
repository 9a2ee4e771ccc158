//! The verify pipeline with the corpus's fixed test keys at the corpus's
//! fixed time: any mail is either authorized (and then carries a good
//! signature by a PST key, whose user ID is the From) or refused with a
//! reason; never a panic, and no refusal reason quotes the mail.
#![no_main]

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use embargo_relay::config::{MemberPosts, PolicyConfig};
use embargo_relay::crypto::{Keyring, ListKey};
use embargo_relay::intake::mime::MimeLimits;
use embargo_relay::intake::{Examined, Gate, Rejection, examine};
use libfuzzer_sys::fuzz_target;
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;

struct Keys {
    list: ListKey,
    pst: Vec<Arc<Cert>>,
    known: Keyring,
    policy: PolicyConfig,
    now: DateTime<Utc>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    // libfuzzer-sys aborts at every panic, even one the code under test
    // catches. The relay catches parser panics (sequoia 2.4.2 has one on a
    // truncated SEIPD packet) and refuses the mail, so only a panic that
    // escapes `examine` is a crash: libfuzzer-sys still aborts on those.
    std::panic::set_hook(Box::new(|info| eprintln!("panic (caught or not): {info}")));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/keys");
    let load = |stem: &str| {
        Arc::new(
            Cert::from_file(dir.join(format!("{stem}.key")))
                .unwrap()
                .strip_secret_key_material(),
        )
    };
    let list = ListKey::from_cert(Cert::from_file(dir.join("list.key")).unwrap()).unwrap();
    let pst: Vec<Arc<Cert>> = [
        "pst",
        "pst-expired",
        "pst-revoked-hard",
        "pst-revoked-soft",
        "pst-not-yet-valid",
        "pst-no-sign-flag",
        "pst-rsa1024",
        "pst-dsa",
    ]
    .iter()
    .map(|s| load(s))
    .collect();
    let mut known = pst.clone();
    known.push(load("member"));
    Keys {
        list,
        pst,
        known: Keyring::new(known),
        policy: PolicyConfig {
            max_embargo: chrono::Duration::days(14),
            public_recipients: vec!["security-announce@project.example.org".into()],
            reminder_before: chrono::Duration::hours(24),
            ack_reminder_before: chrono::Duration::hours(24),
            late_after: chrono::Duration::seconds(60),
            signature_max_age: chrono::Duration::hours(72),
            member_posts: MemberPosts::List,
            inline_pgp: true,
            mime: MimeLimits::default(),
            release: Default::default(),
        },
        now: DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
            .unwrap()
            .into(),
    }
});

fuzz_target!(|raw: &[u8]| {
    let k = &*KEYS;
    let gate = Gate {
        list: &k.list,
        pst: &k.pst,
        pst_smime: &[],
        member_smime: &[],
        list_smime: None,
        known: &k.known,
        policy: &k.policy,
        max_size: 1 << 20,
        addresses: &["list@example.org"],
        others: &[],
        shared_keys: &[],
    };
    let p = embargo_relay::crypto::policy();
    match examine(raw, &gate, &p, k.now) {
        Ok(Examined::Announcement(a, digests, _)) => {
            assert!(!digests.is_empty(), "an announcement without a signature");
            assert!(
                k.pst.iter().any(|c| c.fingerprint().to_hex() == a.signer),
                "an announcement not signed by a PST key"
            );
        }
        Ok(_) => {}
        Err(rejection) => {
            let reason = rejection.to_string();
            assert!(!reason.is_empty());
            // Structural and cryptographic reasons are fixed text and key
            // fingerprints: the content markers every seed carries (signed
            // text, unsigned injected text) never show up in them. (From and
            // embargo-field refusals name the offending header value.)
            let structural = matches!(
                rejection,
                Rejection::Unsigned
                    | Rejection::Malformed(_)
                    | Rejection::Limit(_)
                    | Rejection::Signature(_)
                    | Rejection::Encrypted(_)
                    | Rejection::EncryptedUnsigned
            );
            if structural {
                for marker in [
                    "EMBARGOED-PLAINTEXT",
                    "UNSIGNED-INJECTED",
                    "details of the flaw",
                ] {
                    assert!(
                        !reason.contains(marker),
                        "the reason quotes the mail: {reason}"
                    );
                }
            }
        }
    }
});
