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
use embargo_relay::clock::Clock;
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
            // gpgsm's PKCS #12 with the empty passphrase now and then does
            // not decrypt (in OpenSSL or NSS; seen here, about one export in
            // fifteen): exported again until OpenSSL reads it, with its
            // legacy provider (RC2 for the certificate).
            let key = (0..5)
                .find_map(|_| {
                    let p12 = pki.gpgsm(&["--export-secret-key-p12", email]);
                    assert!(
                        p12.status.success(),
                        "{}",
                        String::from_utf8_lossy(&p12.stderr)
                    );
                    std::fs::write(pki.path(&format!("{name}-gpgsm.p12")), &p12.stdout).unwrap();
                    let out = run(
                        pki.dir.path(),
                        "openssl",
                        &[
                            "pkcs12",
                            "-legacy",
                            "-in",
                            &format!("{name}-gpgsm.p12"),
                            "-nodes",
                            "-nocerts",
                            "-passin",
                            "pass:",
                        ],
                        &[],
                    );
                    out.status.success().then_some(out.stdout)
                })
                .expect("gpgsm exports a PKCS #12 that OpenSSL reads");
            std::fs::write(pki.path(&format!("{name}.key")), key).unwrap();
            // NSS gets the key in a PKCS #12 of OpenSSL's, with a passphrase.
            pki.openssl(&[
                "pkcs12",
                "-export",
                "-in",
                &format!("{name}.pem"),
                "-inkey",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.p12"),
                "-passout",
                "pass:p12-pass",
            ]);
            ok(
                pki.dir.path(),
                "pk12util",
                &["-i", &format!("{name}.p12"), "-d", "nss", "-W", "p12-pass"],
                &[],
            );
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

    /// The list with its S/MIME certificate and the S/MIME members.
    fn list_tweaks(&self) -> Tweaks {
        Tweaks {
            list: self.list_identity(),
            extra: self.members_toml(),
            ..Tweaks::default()
        }
    }

    /// `list.smime_cert` and `list.smime_key`.
    fn list_identity(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "smime_cert",
                Tweaks::text(&self.path("list.pem").display().to_string()),
            ),
            (
                "smime_key",
                Tweaks::text(&self.path("list.key").display().to_string()),
            ),
        ]
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
    let daemon = f.start_in_process(&pki.list_tweaks()).await;
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
    // The receipt counts the S/MIME copies as sent; S/MIME members are
    // asked to acknowledge like the others.
    let got = daemon.sink.captured();
    let receipt = receipt_texts(&f, &got)
        .into_iter()
        .last()
        .expect("a receipt");
    assert!(
        receipt.contains(&format!("Copies sent:    {per} of {} members", per + 2)),
        "{receipt}"
    );
    for email in [SMIME_A, SMIME_B, SMIME_EC] {
        let line = receipt.lines().find(|l| l.contains(email)).expect(&receipt);
        assert!(line.ends_with("not yet"), "{receipt}");
    }
    daemon.stop().await;
}

const PST2: &str = "psirt@project.example.org";
const PST_OLD: &str = "old-psirt@project.example.org";

/// A mail with `headers` around an S/MIME `multipart/signed` body as
/// `openssl cms -sign -crlfeol` writes it (its MIME-Version and
/// Content-Type first).
fn with_headers(from: &str, subject: &str, smime: &[u8]) -> Vec<u8> {
    let mut mail = format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{}@project.example.org>\r\n",
        now().to_rfc2822(),
        crypto::random_hex(8)
    )
    .into_bytes();
    mail.extend_from_slice(smime);
    mail
}

/// `entity` as `multipart/signed` around a detached DER signature, as a
/// mail client (KMail with gpgsm) assembles it.
fn multipart_signed(entity: &[u8], signature: &[u8]) -> Vec<u8> {
    let b = format!("sig-{}", crypto::random_hex(6));
    let mut out = format!(
        "MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{b}\"\r\n\r\n--{b}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(entity);
    out.extend_from_slice(
        format!("\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").as_bytes(),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(signature);
    for line in b64.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    out
}

/// A certificate for `email` from the test CA, valid from `from` to `to`
/// days from now (OpenSSL's CLI cannot backdate one).
fn dated_cert(pki: &Pki, name: &str, email: &str, from: i64, to: i64) {
    let ca = openssl::x509::X509::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
    let ca_key =
        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(pki.path("ca.key")).unwrap())
            .unwrap();
    let days = |d: i64| now() + chrono::Duration::days(d);
    let (cert, key) = crate::common::ca_issued(
        &ca,
        &ca_key,
        (name, email, rand_serial()),
        (days(from), days(to)),
    );
    std::fs::write(pki.path(&format!("{name}.pem")), cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        pki.path(&format!("{name}.key")),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
}

fn rand_serial() -> u32 {
    u32::from_str_radix(&crypto::random_hex(4), 16).unwrap() >> 1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pst_may_sign_with_s_mime_against_its_pinned_certificate_and_nothing_else() {
    let pki = tokio::task::spawn_blocking(|| {
        let pki = Pki::new();
        // The PST's own S/MIME certificate (OpenSSL's key), one by the
        // same CA with the PST's address that is not pinned, and an expired one.
        dated_cert(&pki, "pst", PST, -1, 30);
        dated_cert(&pki, "intruder", PST, -1, 30);
        dated_cert(&pki, "old", PST_OLD, -60, -1);
        // A second PST member signs with gpgsm (its key made by gpgsm).
        std::fs::write(
            pki.path("pst2.params"),
            format!("Key-Type: RSA\nKey-Length: 2048\nKey-Usage: sign, encrypt\nName-DN: CN=pst2\nName-Email: {PST2}\n"),
        )
        .unwrap();
        let out = pki.gpgsm(&["--gen-key", "--armor", "pst2.params"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(pki.path("pst2.csr"), &out.stdout).unwrap();
        pki.issue("pst2", PST2, "digitalSignature,keyEncipherment");
        assert!(pki.gpgsm(&["--import", "pst2.pem"]).status.success());
        pki
    })
    .await
    .unwrap();
    let f = Fixture::new();
    // The other PST members' OpenPGP keys (receipts to them are OpenPGP).
    let born = now() - chrono::Duration::hours(1);
    let pst2_pgp = crypto::generate_key(&format!("PST2 <{PST2}>"), born, None).unwrap();
    let old_pgp = crypto::generate_key(&format!("Old <{PST_OLD}>"), born, None).unwrap();
    for (file, key) in [("pst2.asc", &pst2_pgp), ("old.asc", &old_pgp)] {
        std::fs::write(
            f.path(&format!("keys/{file}")),
            crypto::armored_public(&key.clone().strip_secret_key_material()).unwrap(),
        )
        .unwrap();
    }
    let pinned = |name: &str| pki.path(&format!("{name}.pem")).display().to_string();
    let daemon = f
        .start_in_process(&Tweaks {
            pst_lines: format!("smime_cert = \"{}\"\n", pinned("pst")),
            // The list's S/MIME certificate: the PST may also encrypt to it.
            list: pki.list_identity(),
            extra: format!(
                "[[member]]\nemail = \"{PST2}\"\norganization = \"PST\"\nkey = \"keys/pst2.asc\"\nsmime_cert = \"{}\"\npst = true\n\n\
[[member]]\nemail = \"{PST_OLD}\"\norganization = \"PST\"\nkey = \"keys/old.asc\"\nsmime_cert = \"{}\"\npst = true\n",
                pinned("pst2"),
                pinned("old")
            ),
            ..Tweaks::default()
        })
        .await;
    // `check` names the expired pinned certificate as an error (its S/MIME
    // mail would be refused); the others, valid a month, as warnings at most.
    let findings = embargo_relay::check::findings(&daemon.config, now());
    let pinned_findings: Vec<_> = findings
        .iter()
        .filter(|f| f.field.contains(".smime_cert ("))
        .collect();
    assert!(
        pinned_findings
            .iter()
            .any(|f| f.field.contains(PST_OLD) && !f.warning),
        "{findings:?}"
    );
    assert!(
        pinned_findings
            .iter()
            .all(|f| f.field.contains(PST_OLD) || f.warning),
        "{findings:?}"
    );
    let entity = |text: &str| -> Vec<u8> {
        let mut e = b"Content-Type: text/plain; charset=\"utf-8\"\r\n\r\n".to_vec();
        e.extend_from_slice(embargoed(text).replace('\n', "\r\n").as_bytes());
        e
    };
    let openssl_signed = |signer: &str, md: &str, text: &str| -> Vec<u8> {
        let name = format!("e-{}.txt", crypto::random_hex(4));
        // OpenSSL signs the canonical (CRLF) form of a LF text, and writes
        // CRLF with -crlfeol except in the base64 lines: made CRLF here,
        // as a mail client sends it.
        std::fs::write(
            pki.path(&name),
            String::from_utf8(entity(text))
                .unwrap()
                .replace("\r\n", "\n"),
        )
        .unwrap();
        let out = pki.openssl(&[
            "cms",
            "-sign",
            "-in",
            &name,
            "-signer",
            &format!("{signer}.pem"),
            "-inkey",
            &format!("{signer}.key"),
            "-md",
            md,
            "-crlfeol",
        ]);
        embargo_relay::intake::mime::to_crlf(&out)
    };

    // Signed by `openssl cms -sign` with the pinned certificate: accepted.
    let copies_before = copies(&daemon.sink.captured()).len();
    let good = with_headers(
        PST,
        "CVE-2026-100: openssl",
        &openssl_signed("pst", "sha256", "EMBARGOED-PLAINTEXT one"),
    );
    let reply = send(daemon.addr(), PST, &good).await.expect("accepted");
    assert!(
        reply.starts_with("2.0.0") || reply.contains("accepted"),
        "{reply}"
    );
    // Signed by `gpgsm --detach-sign` (KMail's way), assembled as multipart/signed: accepted.
    // One entity for the signature and the mail (its embargo time is now's).
    let e2 = entity("EMBARGOED-PLAINTEXT two");
    std::fs::write(pki.path("e2.txt"), &e2).unwrap();
    let sig = pki.gpgsm(&["--detach-sign", "--local-user", PST2, "e2.txt"]);
    assert!(
        sig.status.success(),
        "{}",
        String::from_utf8_lossy(&sig.stderr)
    );
    let gpgsm_mail = with_headers(
        PST2,
        "CVE-2026-101: gpgsm",
        &multipart_signed(&e2, &sig.stdout),
    );
    send(daemon.addr(), PST2, &gpgsm_mail)
        .await
        .expect("accepted");
    // Signed, then encrypted to the list's S/MIME certificate: accepted.
    std::fs::write(
        pki.path("signed3.eml"),
        openssl_signed("pst", "sha256", "EMBARGOED-PLAINTEXT three"),
    )
    .unwrap();
    let enveloped = embargo_relay::intake::mime::to_crlf(&pki.openssl(&[
        "cms",
        "-encrypt",
        "-in",
        "signed3.eml",
        "-aes256",
        "-binary",
        "-crlfeol",
        "list.pem",
    ]));
    send(
        daemon.addr(),
        PST,
        &with_headers(PST, "CVE-2026-102: encrypted", &enveloped),
    )
    .await
    .expect("accepted");
    let per = f.usable_members().count() + 2; // the fixture's and the two PST members with keys
    let got = daemon
        .sink
        .wait_until(PATIENCE, |g| copies(g).len() >= copies_before + 3 * per)
        .await;
    // Members get the signed text, byte for byte, encrypted.
    let p = StandardPolicy::new();
    let list = f.list.clone().strip_secret_key_material();
    let texts: Vec<String> = copies(&got)
        .iter()
        .filter(|c| c.envelope.rcpt_to == [SQ_MEMBER.to_owned()])
        .map(|c| {
            let o = crypto::open_copy_at(
                &p,
                &f.members[2].secret,
                &list,
                armored_payload(&c.raw),
                None,
            )
            .unwrap();
            String::from_utf8_lossy(o.plaintext.expose()).into_owned()
        })
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("EMBARGOED-PLAINTEXT one") && t.contains("CVE-2026-100: openssl")),
        "{texts:#?}"
    );
    assert!(texts.iter().any(|t| t.contains("EMBARGOED-PLAINTEXT two")));
    assert!(
        texts
            .iter()
            .any(|t| t.contains("EMBARGOED-PLAINTEXT three"))
    );
    // Each signer's receipt, encrypted to its OpenPGP key.
    let got = daemon
        .sink
        .wait_until(PATIENCE, |g| receipts(g).len() >= 3)
        .await;
    assert!(
        receipt_texts(&f, &got)
            .iter()
            .any(|r| r.contains("CVE-2026-100"))
    );
    let to_pst2 = receipts(&got)
        .into_iter()
        .filter(|c| c.envelope.rcpt_to == [PST2.to_owned()])
        .filter_map(|c| {
            crypto::open_copy_at(&p, &pst2_pgp, &list, armored_payload(&c.raw), None).ok()
        })
        .count();
    assert_eq!(to_pst2, 1, "the gpgsm signer's receipt");

    // Refused, each with its reason, nothing relayed, audited.
    let copies_now = copies(&got).len();
    let tampered = {
        let s = String::from_utf8_lossy(&openssl_signed(
            "pst",
            "sha256",
            "EMBARGOED-PLAINTEXT tampered",
        ))
        .into_owned();
        with_headers(
            PST,
            "t",
            s.replacen(
                "EMBARGOED-PLAINTEXT tampered",
                "EMBARGOED-PLAINTEXT TAMPERED",
                1,
            )
            .as_bytes(),
        )
    };
    let wrapped = {
        let inner = openssl_signed("pst", "sha256", "EMBARGOED-PLAINTEXT wrapped");
        let mut body = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"w\"\r\n\r\n--w\r\nContent-Type: text/plain\r\n\r\nUNSIGNED-INJECTED\r\n--w\r\n".to_vec();
        body.extend_from_slice(
            &inner[inner
                .windows(13)
                .position(|w| w == b"Content-Type:")
                .unwrap()..],
        );
        body.extend_from_slice(b"\r\n--w--\r\n");
        with_headers(PST, "w", &body)
    };
    let beside = {
        let s = String::from_utf8_lossy(&openssl_signed(
            "pst",
            "sha256",
            "EMBARGOED-PLAINTEXT beside",
        ))
        .into_owned();
        let b = s
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let extra =
            format!("--{b}\r\nContent-Type: text/plain\r\n\r\nUNSIGNED-INJECTED\r\n--{b}--");
        with_headers(
            PST,
            "b",
            s.replacen(&format!("--{b}--"), &extra, 1).as_bytes(),
        )
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unpinned",
            with_headers(
                PST,
                "u",
                &openssl_signed("intruder", "sha256", "EMBARGOED-PLAINTEXT u"),
            ),
            "not by a PST certificate",
        ),
        (
            "sha1",
            with_headers(
                PST,
                "s",
                &openssl_signed("pst", "sha1", "EMBARGOED-PLAINTEXT s"),
            ),
            "uses SHA-1",
        ),
        (
            "expired",
            with_headers(
                PST_OLD,
                "e",
                &openssl_signed("old", "sha256", "EMBARGOED-PLAINTEXT e"),
            ),
            "expired",
        ),
        ("tampered", tampered, "does not verify"),
        ("wrapped", wrapped, "not PGP/MIME signed or S/MIME signed"),
        ("beside", beside, "exactly two parts"),
        (
            "unsigned",
            with_headers(
                PST,
                "n",
                &[
                    b"MIME-Version: 1.0\r\n".as_slice(),
                    &entity("EMBARGOED-PLAINTEXT n"),
                ]
                .concat(),
            ),
            "S/MIME signed",
        ),
        (
            "from-other",
            with_headers(
                PST2,
                "o",
                &openssl_signed("pst", "sha256", "EMBARGOED-PLAINTEXT o"),
            ),
            "From",
        ),
        (
            "replay",
            {
                let mut m = good.clone();
                m.splice(0..0, b"X-Resent: 1\r\n".iter().copied());
                m
            },
            "replay",
        ),
    ];
    for (name, mail, reason) in &cases {
        let (code, text) = send(daemon.addr(), PST, mail).await.unwrap_err();
        assert!((500..600).contains(&code), "{name}: {code} {text}");
        assert!(
            text.to_lowercase().contains(&reason.to_lowercase()),
            "{name}: {text}"
        );
        for canary in ["EMBARGOED-PLAINTEXT", "UNSIGNED-INJECTED"] {
            assert!(!text.contains(canary), "{name}: {text}");
        }
    }
    let audit = f.audit();
    let rejected = audit
        .iter()
        .filter(|r| r.event == "rejected" || r.event == "replay")
        .count();
    assert!(rejected >= cases.len() - 1, "{audit:#?}");
    wait_settled(&daemon.running.relay, daemon.clock.now()).await;
    assert_eq!(
        copies(&daemon.sink.captured()).len(),
        copies_now,
        "nothing relayed"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s_mime_members_acknowledge_and_post_signed_and_encrypted_to_the_lists_certificate() {
    let pki = tokio::task::spawn_blocking(Pki::new).await.unwrap();
    let f = Fixture::new();
    let daemon = f.start_in_process(&pki.list_tweaks()).await;
    let id = announce_with_advisory(&f, daemon.addr(), PUBLIC_DEFAULT).await;
    let per = f.usable_members().count() + 3;
    daemon
        .sink
        .wait_until(PATIENCE, |g| copies(g).len() >= per)
        .await;
    // What an S/MIME client sends: `text` signed by `signer`, then
    // enveloped to `to` (the list's certificate), under `from`.
    let reply_with = |signer: &str,
                      to: &str,
                      from: &str,
                      text: &str,
                      encrypt: bool,
                      opaque: bool,
                      cipher: &str|
     -> Vec<u8> {
        let n = crypto::random_hex(4);
        std::fs::write(
            pki.path(&format!("r-{n}.txt")),
            format!("Content-Type: text/plain; charset=\"utf-8\"\n\n{text}\n"),
        )
        .unwrap();
        let (input, signer_pem, signer_key) = (
            format!("r-{n}.txt"),
            format!("{signer}.pem"),
            format!("{signer}.key"),
        );
        let mut args = vec![
            "cms",
            "-sign",
            "-in",
            &input,
            "-signer",
            &signer_pem,
            "-inkey",
            &signer_key,
            "-md",
            "sha256",
            "-crlfeol",
        ];
        if opaque {
            // Outlook's form inside its encryption: the content in the CMS.
            args.push("-nodetach");
        }
        let signed = embargo_relay::intake::mime::to_crlf(&pki.openssl(&args));
        let body = if encrypt {
            std::fs::write(pki.path(&format!("s-{n}.eml")), &signed).unwrap();
            embargo_relay::intake::mime::to_crlf(&pki.openssl(&[
                "cms",
                "-encrypt",
                "-in",
                &format!("s-{n}.eml"),
                cipher,
                "-binary",
                "-crlfeol",
                &format!("{to}.pem"),
            ]))
        } else {
            signed
        };
        with_headers(from, &format!("Re: [embargoed announcement] {n}"), &body)
    };
    let reply = |signer: &str, to: &str, from: &str, text: &str, encrypt: bool| {
        reply_with(signer, to, from, text, encrypt, false, "-aes256")
    };
    // A acknowledges: recorded, not relayed.
    let ack = reply(
        "a",
        "list",
        SMIME_A,
        &format!("Acknowledge: {id}\nThanks."),
        true,
    );
    let answer = send(daemon.addr(), SMIME_A, &ack).await.expect("taken");
    assert!(answer.contains("acknowledg"), "{answer}");
    assert!(
        f.spool()
            .acks(&id)
            .unwrap()
            .iter()
            .any(|(m, _)| m == SMIME_A),
        "A's acknowledgement recorded"
    );
    // B posts: relayed to every member, each in its own kind.
    let before = daemon.sink.captured().len();
    let post = reply(
        "b",
        "list",
        SMIME_B,
        "EMBARGOED-PLAINTEXT B's question about the fix",
        true,
    );
    send(daemon.addr(), SMIME_B, &post).await.expect("relayed");
    let is_post = |c: &Captured| find(&c.raw, b"Subject: [embargoed list post]").is_some();
    let got = daemon
        .sink
        .wait_until(PATIENCE, |g| {
            g[before..].iter().filter(|c| is_post(c)).count() >= per
        })
        .await;
    let posts: Vec<&Captured> = got[before..].iter().filter(|c| is_post(c)).collect();
    let to_sq = posts
        .iter()
        .find(|c| c.envelope.rcpt_to == [SQ_MEMBER.to_owned()])
        .expect("to an OpenPGP member");
    let list = f.list.clone().strip_secret_key_material();
    // What the OpenPGP member (sq's keys) reads of a post to it.
    let read_by_sq = |c: &Captured| -> String {
        let opened = crypto::open_copy_at(
            &StandardPolicy::new(),
            &f.members[2].secret,
            &list,
            armored_payload(&c.raw),
            None,
        )
        .unwrap();
        String::from_utf8_lossy(opened.plaintext.expose()).into_owned()
    };
    assert!(read_by_sq(to_sq).contains("B's question about the fix"));
    let to_a = posts
        .iter()
        .find(|c| c.envelope.rcpt_to == [SMIME_A.to_owned()])
        .expect("to an S/MIME member");
    let content = tokio::task::block_in_place(|| read_everywhere(&pki, to_a, "a", 99));
    assert!(content.contains("B's question about the fix"), "{content}");
    assert!(
        posts
            .iter()
            .all(|c| find(&c.raw, b"EMBARGOED-PLAINTEXT").is_none()),
        "never in the clear"
    );
    // Outlook's form (opaque signed-data inside) and AES-GCM
    // (authEnveloped-data) are taken too.
    for (opaque, cipher, text) in [
        (true, "-aes256", "EMBARGOED-PLAINTEXT opaque inside"),
        (false, "-aes-256-gcm", "EMBARGOED-PLAINTEXT in GCM"),
    ] {
        let before = daemon.sink.captured().len();
        let mail = reply_with("b", "list", SMIME_B, text, true, opaque, cipher);
        send(daemon.addr(), SMIME_B, &mail).await.expect("relayed");
        let got = daemon
            .sink
            .wait_until(PATIENCE, |g| {
                g[before..]
                    .iter()
                    .any(|c| is_post(c) && c.envelope.rcpt_to == [SQ_MEMBER.to_owned()])
            })
            .await;
        let to_sq = got[before..]
            .iter()
            .find(|c| is_post(c) && c.envelope.rcpt_to == [SQ_MEMBER.to_owned()])
            .unwrap();
        assert!(read_by_sq(to_sq).contains(text), "{text}");
    }
    // Refused: B's signature under A's From; signed only; encrypted to A, not the list.
    for (name, mail, reason) in [
        (
            "forged",
            reply("b", "list", SMIME_A, &format!("Acknowledge: {id}"), true),
            "From",
        ),
        (
            "clear",
            reply(
                "b",
                "list",
                SMIME_B,
                "EMBARGOED-PLAINTEXT in the clear",
                false,
            ),
            "encrypted",
        ),
        (
            "elsewhere",
            reply("b", "a", SMIME_B, "EMBARGOED-PLAINTEXT elsewhere", true),
            "not encrypted to the list's certificate",
        ),
    ] {
        let (code, text) = send(daemon.addr(), SMIME_B, &mail).await.unwrap_err();
        assert!(
            (500..600).contains(&code) && text.contains(reason),
            "{name}: {code} {text}"
        );
        assert!(!text.contains("EMBARGOED-PLAINTEXT"), "{name}: {text}");
    }
    assert_eq!(
        f.spool().acks(&id).unwrap().len(),
        1,
        "the forged acknowledgement is not recorded"
    );
    daemon.stop().await;
}
