//! Issue 13, points 1 and 2: every armored thing the relay sends — member
//! copy, receipt, reminder, lifted notice, refusal, member post, forwarded
//! join request, key notice, the public release's signature — is read by
//! the OpenPGP programs members really use, GnuPG 2.2, RNP 0.16 and
//! Sequoia's `sq`, whatever its length. A reader's verdict is its exit
//! status (gpg prints `DECRYPTION_OKAY` and still exits 2 on the armor it
//! cannot finish), plus a good signature by the list key.
//!
//! The lengths: announcements with bodies growing by 7 octets and subjects
//! by one, to four kinds of member key (GnuPG ed25519 and RSA, Sequoia
//! cv25519 twice), until the member copies have covered every residue of
//! the binary length modulo 3 and every length of the last armor line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use chrono::{DateTime, Utc};
use embargo_relay::clock::Clock;
use embargo_relay::config::Config;
use embargo_relay::sink::Captured;
use embargo_relay::{compose, crypto};
use sequoia_openpgp::Cert;

use crate::common::*;

const REQUEST: &str = "distributors-announce-request@lists.example.org";
const RSA_MEMBER: &str = "security@rsa-e.example";
const PUBLIC: &str = "oss-security@lists.example.net";

/// One recipient's three OpenPGP programs, each holding its secret key
/// (when it has one) and the list's certificate.
pub struct Readers {
    gpg: Gpg,
    rnp_home: tempfile::TempDir,
    key_file: Option<PathBuf>,
    list_file: PathBuf,
    list_fpr: String,
    /// The key ids of the list's primary key and subkeys, as RNP prints them.
    list_key_ids: Vec<String>,
}

/// gpg's verdict: its status lines on exit 0, else the status and stderr.
fn exit_status(out: std::process::Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `program` with `args` and `stdin`; Ok(stdout + stderr) on exit 0.
fn run(program: &str, args: &[&str], stdin: &[u8]) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/deps): {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{program} exited with {}: {text}", out.status))
    }
}

impl Readers {
    /// Readers for the holder of `secret` (None: verification only).
    pub fn new(secret: Option<&Cert>, list: &Cert) -> Readers {
        let list = list.clone().strip_secret_key_material();
        let gpg = Gpg::new();
        let rnp_home = tempfile::tempdir().unwrap();
        let list_file = rnp_home.path().join("list.asc");
        std::fs::write(&list_file, crypto::armored_public(&list).unwrap()).unwrap();
        gpg.import(&std::fs::read(&list_file).unwrap());
        let rnp_import = |file: &Path| {
            run(
                "rnpkeys",
                &[
                    "--homedir",
                    rnp_home.path().to_str().unwrap(),
                    "--import",
                    file.to_str().unwrap(),
                ],
                b"",
            )
            .unwrap();
        };
        rnp_import(&list_file);
        let key_file = secret.map(|secret| {
            let file = rnp_home.path().join("key.asc");
            std::fs::write(&file, crypto::armored_secret(secret).unwrap()).unwrap();
            gpg.import(&std::fs::read(&file).unwrap());
            rnp_import(&file);
            file
        });
        Readers {
            gpg,
            rnp_home,
            key_file,
            list_file,
            list_fpr: list.fingerprint().to_hex(),
            list_key_ids: list
                .keys()
                .map(|k| k.key().keyid().to_hex().to_lowercase())
                .collect(),
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.rnp_home.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// GnuPG: exit 0 and a valid signature by the list key.
    fn gpg_signed_by_list(&self, result: Result<String, String>) -> Result<(), String> {
        let status = result.map_err(|e| format!("gpg failed: {e}"))?;
        let validsig = status
            .lines()
            .find(|l| l.starts_with("[GNUPG:] VALIDSIG "))
            .ok_or_else(|| format!("gpg: no valid signature: {status}"))?;
        if !validsig.ends_with(&self.list_fpr) {
            return Err(format!("gpg: not signed by the list key: {validsig}"));
        }
        Ok(())
    }

    /// RNP: exit 0, a good signature, made by the list key, and no other kind.
    fn rnp_signed_by_list(&self, result: Result<String, String>) -> Result<(), String> {
        let out = result.map_err(|e| format!("rnp failed: {e}"))?;
        let by_list = self
            .list_key_ids
            .iter()
            .any(|id| out.contains(&format!("key {id}")));
        if !out.contains("Good signature") || !by_list || out.contains("BAD sig") {
            return Err(format!("rnp: no good signature by the list key: {out}"));
        }
        if !out.contains("Signature(s) verified successfully") {
            return Err(format!("rnp: signatures not all verified: {out}"));
        }
        Ok(())
    }

    /// Decrypts and verifies `armored` with all three; `at` is the list's
    /// clock (its signatures may be a few minutes ahead of the real one).
    pub fn decrypt(&self, armored: &[u8], at: DateTime<Utc>) -> Result<(), String> {
        let key = self
            .key_file
            .as_ref()
            .expect("a secret key")
            .to_str()
            .unwrap();
        let input = self.file("in.asc", armored);
        let gpg = self
            .gpg
            .run(&["--status-fd", "1", "--decrypt", &input], b"");
        self.gpg_signed_by_list(exit_status(gpg))?;
        let now = at.timestamp().to_string();
        let home = self.rnp_home.path().to_str().unwrap();
        let plain = self.file("out.txt", b"");
        let rnp = run(
            "rnp",
            &[
                "--homedir",
                home,
                "--current-time",
                &now,
                "--decrypt",
                &input,
                "--overwrite",
                "--output",
                &plain,
            ],
            b"",
        );
        self.rnp_signed_by_list(rnp)?;
        // `--signer-cert` makes a good signature by that certificate a
        // condition of exit 0.
        let list = self.list_file.to_str().unwrap();
        run(
            "sq",
            &[
                "--force",
                "decrypt",
                "--recipient-key",
                key,
                "--signer-cert",
                list,
                "--output",
                &plain,
                &input,
            ],
            b"",
        )
        .map_err(|e| format!("sq failed: {e}"))?;
        Ok(())
    }

    /// Verifies a detached `signature` over `data` with all three.
    pub fn verify(&self, signature: &[u8], data: &[u8], at: DateTime<Utc>) -> Result<(), String> {
        let sig = self.file("v.sig", signature);
        let dat = self.file("v.dat", data);
        let gpg = self
            .gpg
            .run(&["--status-fd", "1", "--verify", &sig, &dat], b"");
        self.gpg_signed_by_list(exit_status(gpg))?;
        let now = at.timestamp().to_string();
        let home = self.rnp_home.path().to_str().unwrap();
        let rnp = run(
            "rnp",
            &[
                "--homedir",
                home,
                "--current-time",
                &now,
                "--verify",
                &sig,
                "--source",
                &dat,
            ],
            b"",
        );
        self.rnp_signed_by_list(rnp)?;
        let list = self.list_file.to_str().unwrap();
        run(
            "sq",
            &["verify", "--detached", &sig, "--signer-cert", list, &dat],
            b"",
        )
        .map_err(|e| format!("sq failed: {e}"))?;
        Ok(())
    }

    /// Reads a captured mail as its recipient's client does: the armored
    /// message of an encrypted one (exactly the MIME part's content, which
    /// ends at the END line), or the signature of a signed one. Returns the
    /// binary length of the armored message, if it was one.
    pub fn read(&self, c: &Captured, at: DateTime<Utc>) -> Result<Option<usize>, String> {
        if find(&c.raw, b"-----BEGIN PGP MESSAGE-----").is_some() {
            let armored = armored_payload(&c.raw);
            self.decrypt(armored, at)?;
            Ok(Some(binary_len(armored)))
        } else {
            let signed = embargo_relay::intake::mime::parse_signed(&c.raw)
                .map_err(|e| format!("not multipart/signed: {e}"))?;
            self.verify(&signed.signature, signed.signed_part.expose(), at)?;
            Ok(None)
        }
    }
}

/// The base64 lines of an armored message: (octets, last line's length).
fn armor_body(armored: &[u8]) -> (Vec<u8>, usize) {
    let text = std::str::from_utf8(armored).unwrap();
    let lines: Vec<&str> = text
        .split("\r\n")
        .skip_while(|l| !l.is_empty())
        .skip(1)
        .take_while(|l| !l.starts_with('=') && !l.starts_with("-----"))
        .collect();
    let octets = base64::engine::general_purpose::STANDARD
        .decode(lines.concat())
        .unwrap();
    (octets, lines.last().map_or(0, |l| l.len()))
}

fn binary_len(armored: &[u8]) -> usize {
    armor_body(armored).0.len()
}

fn subject(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_owned()
}

/// What a captured mail is, by its outer subject and recipient.
fn kind(c: &Captured) -> &'static str {
    match subject(&c.raw).as_str() {
        "[embargoed announcement]" => "member copy",
        "[embargo-relay receipt]" => "receipt",
        "[embargo-relay reminder]" => "reminder",
        "[embargo lifted]" => "lifted notice",
        "[embargo-relay refusal]" => "refusal",
        // Member posts, and join requests forwarded to the PST: the same
        // outer form (the test counts both: 3 posts to each member, 3
        // requests to the PST).
        "[embargoed list post]" => "member post",
        "[embargo-relay notice]"
        | "Your key on the list needs attention"
        | "A message of the list was not sent to you" => "key notice",
        _ if c.envelope.rcpt_to == [PUBLIC] => "public release",
        other => panic!("an unexpected mail: {other}"),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn gpg_rnp_and_sq_read_everything_the_list_sends_at_every_length() {
    let f = Fixture::new();
    // A fifth member with an RSA key made by GnuPG: its PKESK's length varies.
    let rsa_gpg = Gpg::new();
    let rsa_uid = format!("RSA E <{RSA_MEMBER}>");
    for args in [
        vec!["--quick-gen-key", &rsa_uid, "rsa3072", "sign", "never"],
        vec!["--quick-add-key", "", "rsa3072", "encr", "never"],
    ] {
        let mut args = args;
        let fpr;
        if args[1].is_empty() {
            fpr = rsa_gpg.fingerprint(RSA_MEMBER);
            args[1] = &fpr;
        }
        let out = rsa_gpg.run(&args, b"");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rsa = rsa_gpg.export_secret(&rsa_gpg.fingerprint(RSA_MEMBER));
    std::fs::write(
        f.path("keys/rsa.asc"),
        crypto::armored_public(&rsa.clone().strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    let InProcess {
        sink,
        clock,
        running,
        config,
    } = f
        .start_in_process(&Tweaks {
            policy: vec![("reminder_before", Tweaks::text("50m"))],
            members: vec![(RSA_MEMBER.into(), "RSA E".into(), "keys/rsa.asc".into())],
            ..Tweaks::default()
        })
        .await;
    let config = Config::load(&config).unwrap();
    let t0 = clock.now();
    let addr = running.smtp_addr;

    // Each recipient's readers; the public lists only verify.
    let mut readers: BTreeMap<String, Readers> = f
        .members
        .iter()
        .map(|m| (m.email.clone(), Readers::new(Some(&m.secret), &f.list)))
        .collect();
    readers.insert(RSA_MEMBER.to_owned(), Readers::new(Some(&rsa), &f.list));
    let verifier = Readers::new(None, &f.list);
    let usable = f.usable_members().count() + 1;

    // Everything read so far, and the lengths seen per kind.
    let mut read = 0;
    let mut residues: BTreeMap<&'static str, BTreeSet<usize>> = BTreeMap::new();
    let mut last_lines = BTreeSet::new();
    let mut read_new = |at: DateTime<Utc>,
                        residues: &mut BTreeMap<&'static str, BTreeSet<usize>>,
                        last_lines: &mut BTreeSet<usize>| {
        let all = sink.captured();
        for c in &all[read..] {
            let kind = kind(c);
            let to = &c.envelope.rcpt_to[0];
            let r = readers.get(to).unwrap_or(&verifier);
            let len = r
                .read(c, at)
                .unwrap_or_else(|e| panic!("{kind} to {to}: {e}"));
            if let Some(len) = len {
                residues.entry(kind).or_default().insert(len % 3);
                if kind == "member copy" {
                    last_lines.insert(armor_body(armored_payload(&c.raw)).1);
                }
            }
        }
        read = all.len();
    };

    // Announcements, each with a held advisory, until the member copies
    // have had every residue modulo 3 and every last-line length (4 to 64
    // characters), and at least three of them.
    let until = t0 + chrono::Duration::hours(1);
    // The list's clock keeps up with the real one while mail is sent: gpg
    // signs at the real time, and the list refuses signatures more than
    // five minutes ahead of its own clock, however long the loop takes.
    let keep_up = || {
        let real = embargo_relay::clock::from_millis(now().timestamp_millis());
        clock.set(clock.now().max(real));
    };
    let mut ids = Vec::new();
    let mut i = 0;
    while i < 3 || residues["member copy"].len() < 3 || last_lines.len() < 16 {
        assert!(
            i < 48,
            "lengths not covered after {i} announcements: {last_lines:?}"
        );
        let subject = format!("CVE-2026-{i}: {}", "s".repeat(i));
        let body = format!(
            "Embargo-Until: {}\nPublic-To: {PUBLIC}\n\nDetails {}\n",
            stamp(until),
            "d".repeat(7 * i)
        );
        let entity = compose::text_with_advisory(&subject, &body, &"p".repeat(i + 1));
        keep_up();
        let reply = send(addr, PST, &f.gpg_signed_entity(PST, &subject, &entity))
            .await
            .expect("accepted");
        ids.push(reply.rsplit(' ').next().unwrap().to_owned());
        let copies_now = (i + 1) * usable;
        sink.wait_until(PATIENCE, |g| {
            copies(g).len() >= copies_now && receipts(g).len() > i
        })
        .await;
        read_new(clock.now(), &mut residues, &mut last_lines);
        i += 1;
    }

    // Refusals (a PST mail with an unknown field of growing length), member
    // posts, join requests: three of each, one octet longer each time.
    let member_gpg = Gpg::new();
    let gpg_member = f.members.iter().find(|m| m.email == GPG_MEMBER).unwrap();
    member_gpg.import(&crypto::armored_secret(&gpg_member.secret).unwrap());
    member_gpg
        .import(&crypto::armored_public(&f.list.clone().strip_secret_key_material()).unwrap());
    let member_fpr = gpg_member.secret.fingerprint().to_hex();
    for k in 0..3 {
        let body = format!(
            "Embargo-Until: {}\nX-Unknown{}: 1\n\nRefused.\n",
            stamp(until),
            "u".repeat(k)
        );
        keep_up();
        send(addr, PST, &f.gpg_signed(PST, "refused", &body))
            .await
            .unwrap_err();
        let entity = compose::text_part(
            Some("Re: CVE-2026-0"),
            &format!("Looks right{}.\n", "!".repeat(k)),
        );
        let sealed = member_gpg.sign_encrypt(&member_fpr, &f.list.fingerprint().to_hex(), &entity);
        keep_up();
        send(
            addr,
            GPG_MEMBER,
            &compose::multipart_encrypted(GPG_MEMBER, LIST, "...", &sealed),
        )
        .await
        .expect("a member post is accepted");
        let request = format!(
            "From: <security@seven.example>\r\nTo: {REQUEST}\r\nSubject: join\r\n\r\nWe would like to join{}.\r\n",
            "!".repeat(k)
        );
        send_to(addr, "security@seven.example", REQUEST, request.as_bytes())
            .await
            .expect("a join request is accepted");
    }
    // Three refusals and three join requests to the PST, three posts to
    // every usable member.
    let refusals = |g: &[Captured]| g.iter().filter(|c| kind(c) == "refusal").count();
    let posts = |g: &[Captured]| {
        g.iter()
            .filter(|c| subject(&c.raw) == "[embargoed list post]")
            .count()
    };
    sink.wait_until(PATIENCE, |g| refusals(g) >= 3 && posts(g) >= 3 * usable + 3)
        .await;

    // Reminders (fifty minutes before) and the key check (five minutes
    // after start: the PST's report and the notices to the members
    // concerned), then every embargo lifted at once: releases and lifted
    // notices.
    let t1 = clock.now().max(t0 + chrono::Duration::minutes(10));
    clock.set(t1);
    let notices = |g: &[Captured]| g.iter().filter(|c| kind(c) == "key notice").count();
    sink.wait_until(PATIENCE, |g| {
        reminders(g).len() >= ids.len() && notices(g) >= 2
    })
    .await;
    for id in &ids {
        embargo_relay::operator::embargo(
            &config,
            embargo_relay::cli::EmbargoAction::ReleaseNow { id: id.clone() },
            &clock,
            &mut Vec::new(),
        )
        .unwrap();
    }
    let public = |g: &[Captured]| g.iter().filter(|c| c.envelope.rcpt_to == [PUBLIC]).count();
    sink.wait_until(PATIENCE, |g| {
        public(g) >= ids.len() && lifted_notices(g).len() >= ids.len() * usable
    })
    .await;
    wait_settled(&running.relay, t1).await;
    f.wait_until_nothing_due(t1).await;
    read_new(t1, &mut residues, &mut last_lines);

    // Every kind was read, and the ones whose length the test varies came
    // in every residue.
    let kinds: BTreeSet<&str> = sink.captured().iter().map(kind).collect();
    for expected in [
        "member copy",
        "receipt",
        "reminder",
        "lifted notice",
        "refusal",
        "member post",
        "key notice",
        "public release",
    ] {
        assert!(
            kinds.contains(expected),
            "no {expected} was sent: {kinds:?}"
        );
    }
    for varied in ["member copy", "receipt", "lifted notice", "member post"] {
        assert_eq!(
            residues[varied].len(),
            3,
            "{varied}: lengths modulo 3 seen: {:?}",
            residues[varied]
        );
    }
    assert_eq!(last_lines.len(), 16, "{last_lines:?}");
    running.shutdown().await;
}
