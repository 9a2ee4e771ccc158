//! Issue 18: S/MIME members. A private test CA made by `openssl`; the
//! list's S/MIME certificate from it; members' RSA keys made by GnuPG's
//! `gpgsm` (as Kleopatra makes them) with certificates from the CA. Every
//! S/MIME copy of a mixed announcement, for announcements of several
//! sizes, is decrypted and its list signature verified by the three
//! readers members use (exit status): `openssl cms`, `gpgsm`, and NSS's
//! `cmsutil` (Thunderbird's engine); the OpenPGP members' copies are
//! unchanged. An EC member's copy is read by OpenSSL (NSS 3.87 and gpgsm
//! 2.2 have no ECDH for CMS: `check` says so).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use embargo_relay::crypto;
use embargo_relay::sink::Captured;
use sequoia_openpgp::policy::StandardPolicy;

use crate::common::*;

const SMIME_A: &str = "psirt@smime-a.example";
const SMIME_B: &str = "security@smime-b.example";
const SMIME_EC: &str = "sec@smime-ec.example";

fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new(program);
    c.current_dir(dir).args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/deps): {e}"))
}

fn ok(dir: &Path, program: &str, args: &[&str], env: &[(&str, &Path)]) -> Vec<u8> {
    let out = run(dir, program, args, env);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The test PKI and the three readers' key stores.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) -> Vec<u8> {
        ok(self.dir.path(), "openssl", args, &[])
    }

    fn gpgsm(&self, args: &[&str]) -> std::process::Output {
        let home = self.path("gpgsm");
        let mut all = vec![
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--disable-crl-checks",
            "--disable-dirmngr",
        ];
        all.extend(args);
        run(self.dir.path(), "gpgsm", &all, &[("GNUPGHOME", &home)])
    }

    /// A CA certificate issued to `email` from `csr` with `ext` lines.
    fn issue(&self, name: &str, email: &str, key_usage: &str) {
        std::fs::write(
            self.path(&format!("{name}.ext")),
            format!(
                "subjectAltName=email:{email}\nkeyUsage=critical,{key_usage}\nextendedKeyUsage=emailProtection\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::Builder::new()
                .prefix("smime")
                .tempdir_in("/tmp")
                .unwrap(),
        };
        let home = pki.path("gpgsm");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        std::fs::write(home.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=embargo-relay test CA",
        ]);
        // The list's own certificate.
        pki.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "list.key",
            "-out",
            "list.csr",
            "-subj",
            "/CN=distributors list",
        ]);
        pki.issue("list", LIST, "digitalSignature,keyEncipherment");
        // Members' RSA keys made by gpgsm, as a KMail/Kleopatra user makes them.
        for (name, email) in [("a", SMIME_A), ("b", SMIME_B)] {
            std::fs::write(
                pki.path(&format!("{name}.params")),
                format!("Key-Type: RSA\nKey-Length: 2048\nKey-Usage: sign, encrypt\nName-DN: CN={name}\nName-Email: {email}\n"),
            )
            .unwrap();
            let out = pki.gpgsm(&["--gen-key", "--armor", &format!("{name}.params")]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(pki.path(&format!("{name}.csr")), &out.stdout).unwrap();
            pki.issue(name, email, "digitalSignature,keyEncipherment");
            assert!(
                pki.gpgsm(&["--import", &format!("{name}.pem")])
                    .status
                    .success()
            );
        }
        assert!(pki.gpgsm(&["--import", "ca.pem"]).status.success());
        let ca_fpr = String::from_utf8(pki.openssl(&[
            "x509",
            "-in",
            "ca.pem",
            "-noout",
            "-fingerprint",
            "-sha1",
        ]))
        .unwrap();
        std::fs::write(
            home.join("trustlist.txt"),
            format!("{} S relax\n", ca_fpr.trim().split('=').nth(1).unwrap()),
        )
        .unwrap();
        // NSS: a database trusting the CA, with the members' keys
        // (exported from gpgsm as PKCS #12, as a user moves a key).
        std::fs::create_dir(pki.path("nss")).unwrap();
        ok(
            pki.dir.path(),
            "certutil",
            &["-N", "-d", "nss", "--empty-password"],
            &[],
        );
        ok(
            pki.dir.path(),
            "certutil",
            &["-A", "-d", "nss", "-n", "ca", "-t", "C,C,C", "-i", "ca.pem"],
            &[],
        );
        for (name, email) in [("a", SMIME_A), ("b", SMIME_B)] {
            let p12 = pki.gpgsm(&["--export-secret-key-p12", email]);
            assert!(
                p12.status.success(),
                "{}",
                String::from_utf8_lossy(&p12.stderr)
            );
            std::fs::write(pki.path(&format!("{name}.p12")), &p12.stdout).unwrap();
            ok(
                pki.dir.path(),
                "pk12util",
                &["-i", &format!("{name}.p12"), "-d", "nss", "-W", ""],
                &[],
            );
            // OpenSSL reads gpgsm's PKCS #12 (RC2 for the certificate) with its legacy provider.
            let key = pki.openssl(&[
                "pkcs12",
                "-legacy",
                "-in",
                &format!("{name}.p12"),
                "-nodes",
                "-nocerts",
                "-passin",
                "pass:",
            ]);
            std::fs::write(pki.path(&format!("{name}.key")), key).unwrap();
        }
        // An EC member, made by OpenSSL.
        pki.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ec.key",
            "-out",
            "ec.csr",
            "-subj",
            "/CN=ec",
        ]);
        pki.issue("ec", SMIME_EC, "digitalSignature,keyAgreement");
        pki
    }

    /// A config fragment: the S/MIME members.
    fn members_toml(&self) -> String {
        [("a", SMIME_A, "A Corp"), ("b", SMIME_B, "B Corp"), ("ec", SMIME_EC, "EC Corp")]
            .iter()
            .map(|(name, email, org)| {
                format!(
                    "[[member]]\nemail = \"{email}\"\norganization = \"{org}\"\nsmime_cert = \"{}\"\n\n",
                    self.path(&format!("{name}.pem")).display()
                )
            })
            .collect()
    }
}

/// The enveloped CMS (DER) of an outer S/MIME message.
fn enveloped_der(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.contains("Content-Type: application/pkcs7-mime; smime-type=enveloped-data"),
        "{text}"
    );
    let body = &text[text.find("filename=\"smime.p7m\"\r\n\r\n").unwrap() + 24..];
    base64::engine::general_purpose::STANDARD
        .decode(body.replace("\r\n", ""))
        .unwrap()
}

/// A decrypted `multipart/signed`: the signed part's bytes and the signature (DER).
fn signed_parts(inner: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8_lossy(inner).into_owned();
    let b = text
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let delimiter = format!("\r\n--{b}\r\n");
    let start = inner
        .windows(delimiter.len())
        .position(|w| w == delimiter.as_bytes())
        .unwrap()
        + delimiter.len();
    let end = start
        + inner[start..]
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_bytes())
            .unwrap();
    let signed = inner[start..end].to_vec();
    let sig_part = &text[text.find("filename=\"smime.p7s\"\r\n\r\n").unwrap() + 24..];
    let sig_b64: String = sig_part
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .unwrap();
    (signed, sig)
}

/// The three readers on one S/MIME copy to `name`/`email`: each decrypts
/// it and verifies the list's signature (exit status); returns the signed
/// content as OpenSSL gives it.
fn read_everywhere(pki: &Pki, c: &Captured, name: &str, n: usize) -> String {
    let d = pki.dir.path();
    let eml = format!("copy-{name}-{n}.eml");
    std::fs::write(pki.path(&eml), &c.raw).unwrap();
    // OpenSSL: the whole message in, as a mail client hands it over (no
    // -binary on verify: with it OpenSSL rejoins the signed part's lines
    // with bare LFs, and no CRLF-signed part verifies).
    let inner = pki.openssl(&[
        "cms",
        "-decrypt",
        "-in",
        &eml,
        "-recip",
        &format!("{name}.pem"),
        "-inkey",
        &format!("{name}.key"),
    ]);
    let inner_file = format!("inner-{name}-{n}.eml");
    std::fs::write(pki.path(&inner_file), &inner).unwrap();
    let content = pki.openssl(&["cms", "-verify", "-in", &inner_file, "-CAfile", "ca.pem"]);
    // gpgsm: the DER in, then the detached signature over the signed part.
    let der = format!("copy-{name}-{n}.der");
    std::fs::write(pki.path(&der), enveloped_der(&c.raw)).unwrap();
    let out = pki.gpgsm(&["--decrypt", &der]);
    assert!(
        out.status.success(),
        "gpgsm --decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (signed, sig) = signed_parts(&out.stdout);
    let (part, p7s) = (format!("part-{name}-{n}"), format!("sig-{name}-{n}.p7s"));
    std::fs::write(pki.path(&part), &signed).unwrap();
    std::fs::write(pki.path(&p7s), &sig).unwrap();
    let out = pki.gpgsm(&["--verify", &p7s, &part]);
    assert!(
        out.status.success(),
        "gpgsm --verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // NSS: decode the envelope, then the signature with its content.
    let nss_inner = format!("nss-{name}-{n}.eml");
    ok(
        d,
        "cmsutil",
        &["-D", "-i", &der, "-d", "nss", "-o", &nss_inner, "-p", ""],
        &[],
    );
    let (signed_nss, sig_nss) = signed_parts(&std::fs::read(pki.path(&nss_inner)).unwrap());
    assert_eq!(signed_nss, signed, "NSS and gpgsm decrypt the same bytes");
    assert_eq!(sig_nss, sig);
    ok(
        d,
        "cmsutil",
        &[
            "-D",
            "-i",
            &p7s,
            "-c",
            &part,
            "-d",
            "nss",
            "-o",
            "/dev/null",
        ],
        &[],
    );
    // The signed content is exactly what the signature covers: tampered, refused by all.
    let tampered = format!("tampered-{name}-{n}");
    let mut bad = signed.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    std::fs::write(pki.path(&tampered), &bad).unwrap();
    assert!(!pki.gpgsm(&["--verify", &p7s, &tampered]).status.success());
    assert!(
        !run(
            d,
            "cmsutil",
            &[
                "-D",
                "-i",
                &p7s,
                "-c",
                &tampered,
                "-d",
                "nss",
                "-o",
                "/dev/null"
            ],
            &[]
        )
        .status
        .success()
    );
    String::from_utf8_lossy(&content).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn s_mime_members_get_copies_every_reader_opens_beside_unchanged_openpgp_copies() {
    let pki = tokio::task::spawn_blocking(Pki::new).await.unwrap();
    let f = Fixture::new();
    let daemon = f
        .start_in_process(&Tweaks {
            list: vec![
                (
                    "smime_cert",
                    Tweaks::text(&pki.path("list.pem").display().to_string()),
                ),
                (
                    "smime_key",
                    Tweaks::text(&pki.path("list.key").display().to_string()),
                ),
            ],
            extra: pki.members_toml(),
            ..Tweaks::default()
        })
        .await;
    let to = |got: &[Captured], who: &str| -> Vec<Captured> {
        copies(got)
            .into_iter()
            .filter(|c| c.envelope.rcpt_to == [who.to_owned()])
            .cloned()
            .collect()
    };
    // Announcements of several sizes and shapes: empty-ish, 8-bit text,
    // long lines, a body past a base64 line multiple.
    let bodies = [
        "x".to_owned(),
        "Ünïcödé — details for members.\n".repeat(3),
        format!("{}\n", "y".repeat(998)),
        "line of text for the members of the list\n".repeat(3000),
    ];
    // The fixture's usable OpenPGP members and the three S/MIME ones.
    let per = f.usable_members().count() + 3;
    for (n, body) in bodies.iter().enumerate() {
        let subject = format!("CVE-2026-{n}: smime size {}", body.len());
        let mail = f.gpg_signed(PST, &subject, &embargoed(body));
        send(daemon.addr(), PST, &mail).await.expect("accepted");
        let got = daemon
            .sink
            .wait_until(PATIENCE, |g| copies(g).len() >= (n + 1) * per)
            .await;
        for (name, email) in [("a", SMIME_A), ("b", SMIME_B)] {
            let mine = to(&got, email);
            assert_eq!(mine.len(), n + 1, "one copy per announcement to {email}");
            let c = &mine[n];
            let raw = String::from_utf8_lossy(&c.raw);
            assert!(!raw.contains(&subject), "the Subject only inside");
            let pki_ref = &pki;
            let content = tokio::task::block_in_place(|| read_everywhere(pki_ref, c, name, n));
            assert!(
                content.starts_with("Content-Type: message/rfc822; forwarded=no"),
                "{content}"
            );
            assert!(
                content.contains(&format!("Subject: {subject}")),
                "{content}"
            );
            assert!(content.contains(&format!("To: {LIST}")) || content.contains(email));
            assert!(content.contains("EMBARGOED until"), "{content}");
            assert!(
                content.contains(body.lines().next().unwrap()),
                "the announcement text"
            );
        }
        // The EC member: OpenSSL reads it.
        let ec = to(&got, SMIME_EC);
        assert_eq!(ec.len(), n + 1);
        let eml = format!("ec-{n}.eml");
        std::fs::write(pki.path(&eml), &ec[n].raw).unwrap();
        let inner = pki.openssl(&[
            "cms", "-decrypt", "-in", &eml, "-recip", "ec.pem", "-inkey", "ec.key",
        ]);
        std::fs::write(pki.path("ec-inner.eml"), &inner).unwrap();
        let content = pki.openssl(&["cms", "-verify", "-in", "ec-inner.eml", "-CAfile", "ca.pem"]);
        assert!(String::from_utf8_lossy(&content).contains(&format!("Subject: {subject}")));
        // The OpenPGP members' copies are as before: OpenPGP, opened with their keys.
        let p = StandardPolicy::new();
        let list = f.list.clone().strip_secret_key_material();
        for m in f.usable_members() {
            let mine = to(&got, &m.email);
            let c = &mine[n];
            assert!(
                find(
                    &c.raw,
                    b"multipart/encrypted; protocol=\"application/pgp-encrypted\""
                )
                .is_some()
            );
            let opened = crypto::open_copy_at(&p, &m.secret, &list, armored_payload(&c.raw), None)
                .expect("an OpenPGP copy as before");
            assert!(
                String::from_utf8_lossy(opened.plaintext.expose())
                    .contains(&format!("Subject: {subject}"))
            );
        }
    }
    // The receipt counts the S/MIME copies as sent and says they are not
    // asked to acknowledge; none is skipped.
    let got = daemon.sink.captured();
    let receipt = receipt_texts(&f, &got)
        .into_iter()
        .last()
        .expect("a receipt");
    assert!(
        receipt.contains(&format!("Copies sent:    {per} of {} members", per + 2)),
        "{receipt}"
    );
    let not_asked = receipt
        .lines()
        .find(|l| l.starts_with("Not asked to acknowledge (S/MIME members"))
        .expect(&receipt);
    for email in [SMIME_A, SMIME_B, SMIME_EC] {
        assert!(not_asked.contains(email), "{receipt}");
    }
    daemon.stop().await;
}
