//! `embargo-relay demo`: a whole list on loopback with generated keys, no
//! outside service. Shows what each member receives and checks every copy.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::StandardPolicy;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::sink::{CaptureSink, Captured};
use crate::{compose, crypto, daemon, outbound};

const LIST: &str = "distributors-announce@lists.example.org";
const PST: (&str, &str) = ("security@project.example.org", "Project PST");
const MEMBERS: [(&str, &str); 3] = [
    ("secalert@distro-a.example", "Distro A"),
    ("security@distro-b.example", "Distro B"),
    ("psirt@cloud-c.example", "Cloud C"),
];
const PUBLIC_LIST: &str = "oss-security@lists.example.org";
const ADVISORY: &str = "CVE-2026-0001: path traversal in the example daemon\n\nVersions before 2.4.1 let a remote user read any file. Upgrade to 2.4.1.\n";
/// How far ahead the demo's embargo lifts.
const EMBARGO_SECONDS: i64 = 5;
const SUBJECT: &str = "[EMBARGOED] CVE-2026-0001: path traversal in the example daemon";
const BODY: &str = "Embargo-Until: {until}\n\nA path traversal in the example daemon lets a remote user read any file.\nPatches are attached to the tracking issue; please test them.\n\n-- the Product Security Team\n";

/// The configuration the demo runs with (paths relative to its directory).
const CONFIG: &str = r#"# embargo-relay demo configuration (written by `embargo-relay demo`)
[list]
address = "{list}"
secret_key = "keys/list.key"
state_dir = "state"

[inbound.smtp]
listen = "127.0.0.1:0"

[outbound]
smarthost = "smtp://{sink}"
retry_initial = "1s"

[public]
recipients = ["{public}"]
{members}"#;

pub async fn run(keep: Option<&Path>) -> anyhow::Result<()> {
    let temp;
    let dir = match keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.to_owned()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    let clock = SystemClock;
    let p = crate::crypto::policy();
    let born = clock.now() - chrono::Duration::minutes(5);
    println!("== embargo-relay demo in {}", dir.display());

    // A kept list is used again: the same keys, roster and spool.
    let reuse = keep.is_some() && dir.join("config.toml").exists();
    let key = |rel: &str, uid: String| -> anyhow::Result<Cert> {
        let path = dir.join(rel);
        if reuse {
            Cert::from_file(&path).with_context(|| format!("cannot read {}", path.display()))
        } else {
            let cert = crypto::generate_key(&uid, born, None)?;
            write_secret(&path, &crypto::armored_secret(&cert)?)?;
            Ok(cert)
        }
    };
    std::fs::create_dir_all(dir.join("keys/members"))?;
    std::fs::create_dir_all(dir.join("keys/secret"))?;
    let secret = |email: &str| format!("keys/secret/{email}.key");
    let list = key("keys/list.key", format!("Distributors list <{LIST}>"))?;
    let pst = key(&secret(PST.0), format!("{} <{}>", PST.1, PST.0))?;
    let mut recipients: Vec<(String, Cert)> = vec![(PST.0.to_owned(), pst.clone())];
    for (email, org) in MEMBERS {
        recipients.push((
            email.to_owned(),
            key(&secret(email), format!("{org} <{email}>"))?,
        ));
    }
    std::fs::write(
        dir.join("keys/list.asc"),
        crypto::armored_public(&list.clone().strip_secret_key_material())?,
    )?;
    let mut members = String::new();
    for (i, (email, cert)) in recipients.iter().enumerate() {
        let file = format!("keys/members/{i}.asc");
        std::fs::write(
            dir.join(&file),
            crypto::armored_public(&cert.clone().strip_secret_key_material())?,
        )?;
        let (org, is_pst) = if i == 0 {
            (PST.1, true)
        } else {
            (MEMBERS[i - 1].1, false)
        };
        write!(
            members,
            "\n[[member]]\nemail = \"{email}\"\norganization = \"{org}\"\nkey = \"{file}\"\npst = {is_pst}\n"
        )?;
    }
    println!(
        "{} the list key {}, a PST key and {} member keys",
        if reuse { "reusing" } else { "generated" },
        list.fingerprint(),
        MEMBERS.len()
    );

    let sink = CaptureSink::start().await?;
    let config_text = CONFIG
        .replace("{list}", LIST)
        .replace("{sink}", &sink.addr().to_string())
        .replace("{public}", PUBLIC_LIST)
        .replace("{members}", &members);
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config_text)?;
    let running = daemon::start(Config::load(&config_path)?, Arc::new(clock)).await?;
    println!(
        "daemon listening on {}, smarthost = capture sink on {}",
        running.smtp_addr,
        sink.addr()
    );

    let until = (clock.now() + chrono::Duration::seconds(EMBARGO_SECONDS + 1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let body = BODY.replace("{until}", &until);
    let entity = compose::text_with_advisory(SUBJECT, &body, ADVISORY);
    let signature = crypto::sign_detached(&p, &pst, clock.now(), &entity)?;
    let mail = compose::multipart_signed(PST.0, LIST, SUBJECT, &entity, &signature);
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(running.smtp_addr.port())
        .build();
    let envelope = lettre::address::Envelope::new(Some(PST.0.parse()?), vec![LIST.parse()?])?;
    let answer = transport
        .send_raw(&envelope, &mail)
        .await
        .context("the daemon refused the announcement")?;
    println!(
        "PST sent a signed announcement; daemon answered: {} {}",
        answer.code(),
        answer.message().collect::<Vec<_>>().join(" ")
    );

    let is_copy = |c: &Captured| has_subject(c, outbound::PLACEHOLDER_SUBJECT);
    let captured = sink
        .wait_until(Duration::from_secs(60), |g| {
            g.iter().filter(|c| is_copy(c)).count() >= recipients.len()
        })
        .await;
    let list_cert = list.strip_secret_key_material();
    if keep.is_some() {
        keep_copies(&dir, &recipients, &captured)?;
    }
    let result = check_copies(&p, &recipients, &list_cert, &captured)
        .and(receipt_story(&p, &sink, &pst, &list_cert).await)
        .and(release_story(&p, &sink, &list_cert, &until).await);
    // The members' lifted notices follow the release: let them go out, so
    // a kept spool holds nothing due for a smarthost that is gone.
    for _ in 0..100 {
        if running.relay.spool.due(SystemClock.now(), 1)?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("\n== audit trail");
    for r in running.relay.spool.audit_records()? {
        println!(
            "{}  {:<9} {:<24} {}",
            r.at.format("%H:%M:%S"),
            r.event,
            r.member.unwrap_or_default(),
            r.detail
        );
    }
    running.shutdown().await;
    if keep.is_some() && result.is_ok() {
        print_kept(&dir, &recipients);
    }
    result
}

/// Writes a secret key readable by its owner alone (0600), also when the
/// file already exists with a wider mode.
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    Ok(())
}

/// Keeps each member's copy, as the armored message its client reads, in
/// `mail/<address>.asc`.
fn keep_copies(
    dir: &Path,
    recipients: &[(String, Cert)],
    captured: &[Captured],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("mail"))?;
    for (email, _) in recipients {
        let copy = captured.iter().rev().find(|c| {
            c.envelope.rcpt_to == [email.clone()] && has_subject(c, outbound::PLACEHOLDER_SUBJECT)
        });
        if let Some(armored) = copy.and_then(|c| armored(&c.raw)) {
            std::fs::write(dir.join("mail").join(format!("{email}.asc")), armored)?;
        }
    }
    Ok(())
}

/// The commands to use the kept list again and to read a copy with GnuPG.
fn print_kept(dir: &Path, recipients: &[(String, Cert)]) {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let d = dir.display();
    let member = &recipients[1].0;
    // The program as it was started, which need not be on PATH.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "embargo-relay".to_owned());
    println!("\n== the list is kept in {d}");
    println!("secret keys (mode 0600) are in {d}/keys/secret, the members' copies in {d}/mail");
    println!("send another announcement to this list (same keys, roster and spool):");
    println!("   {exe} demo --keep {d}");
    println!("read {member}'s copy with GnuPG:");
    println!("   export GNUPGHOME=$(mktemp -d)");
    println!("   gpg --import {d}/keys/secret/{member}.key {d}/keys/list.asc");
    println!("   gpg --decrypt {d}/mail/{member}.asc");
    println!("look at the spool: {exe} status --config {d}/config.toml");
}

/// The armored PGP message in a captured copy.
fn armored(raw: &[u8]) -> Option<&[u8]> {
    let find = |needle: &[u8]| raw.windows(needle.len()).position(|w| w == needle);
    let start = find(b"-----BEGIN PGP MESSAGE-----")?;
    let end = find(b"-----END PGP MESSAGE-----")? + 25;
    Some(&raw[start..end])
}

fn has_subject(c: &Captured, subject: &str) -> bool {
    let header = format!("Subject: {subject}\r\n");
    c.raw.windows(header.len()).any(|w| w == header.as_bytes())
}

/// Waits for the PST's receipt and shows it, decrypted with the PST's key.
async fn receipt_story(
    p: &StandardPolicy<'_>,
    sink: &CaptureSink,
    pst: &Cert,
    list: &Cert,
) -> anyhow::Result<()> {
    let got = sink
        .wait_until(Duration::from_secs(60), |g| {
            g.iter().any(|c| has_subject(c, outbound::RECEIPT_SUBJECT))
        })
        .await;
    let Some(receipt) = got
        .iter()
        .find(|c| has_subject(c, outbound::RECEIPT_SUBJECT))
    else {
        bail!("the PST got no receipt");
    };
    let text = String::from_utf8_lossy(&receipt.raw);
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap_or(0);
    let opened = crypto::open_copy(p, pst, list, text[start..].as_bytes())?;
    let plain = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
    let body = plain.split("Your announcement").nth(1).unwrap_or_default();
    println!(
        "\n== receipt to the PST ({}), decrypted with the PST's key",
        receipt.envelope.rcpt_to.join(", ")
    );
    for line in format!("Your announcement{body}")
        .lines()
        .take_while(|l| !l.starts_with("--er-"))
    {
        println!("   {line}");
    }
    Ok(())
}

/// Waits for the public advisory, shows it, and checks it came at or after
/// its time, signed by the list key.
async fn release_story(
    p: &StandardPolicy<'_>,
    sink: &CaptureSink,
    list: &Cert,
    until: &str,
) -> anyhow::Result<()> {
    println!("\n== the public advisory is held until {until}; waiting for it");
    let is_release = |c: &Captured| c.envelope.rcpt_to == [PUBLIC_LIST.to_owned()];
    let got = sink
        .wait_until(Duration::from_secs(60), |g| g.iter().any(is_release))
        .await;
    let arrived = SystemClock.now();
    let Some(release) = got.iter().find(|c| is_release(c)) else {
        bail!("the public advisory did not go out");
    };
    let text = String::from_utf8_lossy(&release.raw);
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if ["From:", "To:", "Subject:", "Content-Type:"]
            .iter()
            .any(|h| line.starts_with(h))
        {
            println!("   {line}");
        }
    }
    let signed = crate::intake::mime::parse_signed(&release.raw)
        .map_err(|e| anyhow::anyhow!("release is not PGP/MIME signed: {e}"))?;
    crypto::verify_detached(
        p,
        arrived,
        &crypto::Keyring::new(vec![std::sync::Arc::new(list.clone())]),
        signed.signed_part.expose(),
        &signed.signature,
    )
    .map_err(|e| anyhow::anyhow!("release signature: {e}"))?;
    let until: chrono::DateTime<chrono::Utc> = chrono::DateTime::parse_from_rfc3339(until)?.into();
    if arrived < until {
        bail!("the public advisory went out early");
    }
    println!(
        "   released at {} (embargo until {until}), signed by the list key: good",
        arrived.format("%H:%M:%S")
    );
    println!("   {}", ADVISORY.lines().next().unwrap_or_default());
    Ok(())
}

/// Prints each member's copy and checks it decrypts with that member's key
/// alone, carries the list's signature and the announcement's text.
fn check_copies(
    p: &StandardPolicy,
    recipients: &[(String, Cert)],
    list: &Cert,
    captured: &[Captured],
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (i, (email, key)) in recipients.iter().enumerate() {
        let copies: Vec<_> = captured
            .iter()
            .filter(|c| {
                c.envelope.rcpt_to == [email.clone()]
                    && has_subject(c, outbound::PLACEHOLDER_SUBJECT)
            })
            .collect();
        let [copy] = copies[..] else {
            failures.push(format!(
                "{email}: expected exactly one copy, got {}",
                copies.len()
            ));
            continue;
        };
        let text = String::from_utf8_lossy(&copy.raw);
        println!("\n== copy for {email} ({} bytes)", copy.raw.len());
        for line in text.lines().take_while(|l| !l.is_empty()) {
            if ["From:", "To:", "Subject:", "Content-Type:", "Message-ID:"]
                .iter()
                .any(|h| line.starts_with(h))
            {
                println!("   {line}");
            }
        }
        let armor_start = text.find("-----BEGIN PGP MESSAGE-----");
        let armored = armor_start.and_then(|s| {
            text[s..]
                .find("-----END PGP MESSAGE-----")
                .map(|e| &text[s..s + e + 25])
        });
        let Some(armored) = armored else {
            failures.push(format!("{email}: no PGP message in the copy"));
            continue;
        };
        println!(
            "   body: {} ({} lines of ciphertext)",
            armored.lines().next().unwrap_or(""),
            armored.lines().count()
        );
        match crypto::open_copy(p, key, list, armored.as_bytes()) {
            Ok(opened) => {
                let plain = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
                let ok = opened.recipients.len() == 1
                    && plain.contains("path traversal in the example daemon")
                    && plain.contains(SUBJECT);
                println!(
                    "   decrypts with {email}'s key alone: {}; list signature: good",
                    if ok { "yes" } else { "NO" }
                );
                if !ok {
                    failures.push(format!("{email}: copy content or recipients wrong"));
                }
                if i == 1 {
                    println!("\n== decrypted copy of {email}\n{}", plain.trim_end());
                }
            }
            Err(e) => failures.push(format!("{email}: {e:#}")),
        }
    }
    if failures.is_empty() {
        println!(
            "\nall {} member copies decrypt with their member's key and carry a good list signature",
            recipients.len()
        );
        Ok(())
    } else {
        bail!("demo failed:\n  {}", failures.join("\n  "))
    }
}
