//! The fan-out benchmark (issue 7): the whole path in one process tree,
//! beside a `gpg` loop doing the same cryptographic work.
//!
//! ```text
//! cargo bench --bench fanout                      # 30/300/3000 × 10 KB/1 MB
//! cargo bench --bench fanout -- --members 300 --sizes 10k --no-gpg
//! ```
//!
//! Each case runs in a fresh child process (so its peak RSS is its own): a
//! list with N members on loopback, a lettre SMTP client sends one signed
//! announcement to the daemon's listener, and a loopback sink counts the
//! copies. Printed: time from the client's first byte to the last copy at
//! the sink, copies/s, the child's peak RSS, the list's own crypto alone
//! (one sealed copy per member, in process), and a `gpg --sign --encrypt`
//! loop over the same members and body (GnuPG from Debian, keys in a
//! GNUPGHOME under `target/`), as ratios. A last case measures how late the
//! public release goes out while a 3,000-member fan-out is running.
//!
//! `--smime-half` makes every second member an S/MIME member (issue 18):
//! its copy signed by the list's S/MIME certificate and enveloped to its
//! X.509 certificate (RSA 2048, self-signed, made once).
//!
//! `--intake 30,300` instead measures the intake alone (issue 20): how many
//! PST-signed announcements a second are verified and committed, and how
//! many junk mails a second of three kinds are refused.
//!
//! `--lists 10 --members 300` instead runs ten lists of 300 members in one
//! daemon (issue 16): the memory they hold, one announcement's latency on
//! one list while the others idle, and one announcement to every list at
//! once.
//!
//! Member keys are generated once and kept under `target/bench-keys`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use embargo_relay::clock::{Clock, SystemClock};
use embargo_relay::config::Config;
use embargo_relay::crypto::{self, ListKey};
use embargo_relay::sink::CaptureSink;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::StandardPolicy;

const LIST: &str = "list@bench.example";
const PST: &str = "pst@bench.example";
const PUBLIC: &str = "public@bench.example";

fn now() -> chrono::DateTime<Utc> {
    SystemClock.now()
}

fn member(i: usize) -> String {
    format!("m{i}@bench.example")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn keys_dir() -> PathBuf {
    target_dir().join("bench-keys")
}

/// The list key, the PST key and `n` member keys, made once and kept.
fn ensure_keys(n: usize) {
    let dir = keys_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let born = now() - chrono::Duration::days(1);
    let make = |path: PathBuf, uid: &str, secret: bool| {
        if !path.exists() {
            let cert = crypto::generate_key(uid, born, None).unwrap();
            let bytes = if secret {
                crypto::armored_secret(&cert)
            } else {
                crypto::armored_public(&cert)
            };
            std::fs::write(path, bytes.unwrap()).unwrap();
        }
    };
    make(dir.join("list.key"), &format!("List <{LIST}>"), true);
    make(dir.join("pst.key"), &format!("PST <{PST}>"), true);
    for i in 0..n {
        make(
            dir.join(format!("m{i}.asc")),
            &format!("M{i} <{}>", member(i)),
            false,
        );
    }
}

fn parse_size(s: &str) -> usize {
    let s = s.to_ascii_lowercase();
    match s.strip_suffix('k') {
        Some(k) => k.parse::<usize>().unwrap() * 1024,
        None => match s.strip_suffix('m') {
            Some(m) => m.parse::<usize>().unwrap() << 20,
            None => s.parse().unwrap(),
        },
    }
}

fn size_name(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MB", size >> 20)
    } else {
        format!("{} KB", size >> 10)
    }
}

/// An announcement body of about `size` octets of text.
fn body(size: usize, until: chrono::DateTime<Utc>) -> String {
    let mut text = format!("Embargo-Until: {}\n\n", until.format("%Y-%m-%dT%H:%M:%SZ"));
    let line = "The quick brown fox jumps over the lazy dog; CVE-2026-0000 details.\n";
    while text.len() < size {
        text.push_str(line);
    }
    text
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn current_rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// The CPU time this process has used, user and system, in seconds
/// (`/proc/self/stat`, in Linux's fixed 100 ticks a second).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name's closing parenthesis; utime and
    // stime are the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The list's S/MIME certificate and key and `n` member certificates
/// (RSA 2048, self-signed), made once and kept.
fn ensure_smime(n: usize) {
    use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
    let dir = keys_dir().join("smime");
    std::fs::create_dir_all(&dir).unwrap();
    let make = |name: &str, email: &str| {
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        if cert_path.exists() {
            return;
        }
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut subject = openssl::x509::X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", name).unwrap();
        let subject = subject.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&subject).unwrap();
        b.set_issuer_name(&subject).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(3650).unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .email(email)
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(&cert_path, b.build().to_pem().unwrap()).unwrap();
    };
    make("list", LIST);
    for i in (1..n).step_by(2) {
        make(&format!("m{i}"), &member(i));
    }
}

/// Whether this case makes every second member an S/MIME member.
fn smime_half() -> bool {
    std::env::args().any(|a| a == "--smime-half")
}

fn write_config(dir: &Path, sink: std::net::SocketAddr, n: usize) -> PathBuf {
    let keys = keys_dir();
    let smime = keys.join("smime");
    let list_smime = if smime_half() {
        format!(
            "smime_cert = \"{}\"\nsmime_key = \"{}\"\n",
            smime.join("list.pem").display(),
            smime.join("list.key").display()
        )
    } else {
        String::new()
    };
    let mut text = format!(
        "[list]\naddress = \"{LIST}\"\nsecret_key = \"{}\"\nstate_dir = \"{}\"\n{list_smime}\n\
[inbound.smtp]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"8MiB\"\n\n\
[outbound]\nsmarthost = \"smtp://{sink}\"\n\n[public]\nrecipients = [\"{PUBLIC}\"]\n\n\
[[member]]\nemail = \"{PST}\"\norganization = \"PST\"\nkey = \"{}\"\npst = true\n",
        keys.join("list.key").display(),
        dir.join("state").display(),
        dir.join("pst.asc").display(),
    );
    let pst = Cert::from_file(keys.join("pst.key")).unwrap();
    std::fs::write(
        dir.join("pst.asc"),
        crypto::armored_public(&pst.strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    for i in 0..n {
        let key = if smime_half() && i % 2 == 1 {
            format!(
                "smime_cert = \"{}\"",
                smime.join(format!("m{i}.pem")).display()
            )
        } else {
            format!("key = \"{}\"", keys.join(format!("m{i}.asc")).display())
        };
        text.push_str(&format!(
            "\n[[member]]\nemail = \"{}\"\norganization = \"Org {i}\"\n{key}\n",
            member(i),
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn smtp_send(port: u16, raw: &[u8]) {
    smtp_send_to(port, LIST, raw).await
}

async fn smtp_send_to(port: u16, rcpt: &str, raw: &[u8]) {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(120)))
        .build();
    let envelope =
        lettre::address::Envelope::new(Some(PST.parse().unwrap()), vec![rcpt.parse().unwrap()])
            .unwrap();
    transport
        .send_raw(&envelope, raw)
        .await
        .expect("the list accepts the announcement");
}

/// The runtime, the policy and the PST key a case needs.
fn setup(n: usize) -> (tokio::runtime::Runtime, StandardPolicy<'static>, Cert) {
    ensure_keys(n);
    if smime_half() {
        ensure_smime(n);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pst = Cert::from_file(keys_dir().join("pst.key")).unwrap();
    (rt, crypto::policy(), pst)
}

/// A running list of `n` members (and the PST) in front of a counting sink.
async fn start_list(
    n: usize,
) -> (
    tempfile::TempDir,
    CaptureSink,
    embargo_relay::daemon::Running,
) {
    let dir = tempfile::tempdir().unwrap();
    let sink = CaptureSink::start().await.unwrap();
    sink.discard_bodies();
    let config = Config::load(&write_config(dir.path(), sink.addr(), n)).unwrap();
    let running = embargo_relay::daemon::start(config, Arc::new(SystemClock))
        .await
        .unwrap();
    (dir, sink, running)
}

/// The intake alone (issue 20), in this (child) process, no fan-out
/// running: `mails` distinct PST-signed announcements of 10 KB to a list
/// of `n` members, each verified and committed (its `n` + 1 deliveries
/// queued); then as many mails of three kinds of junk, each refused:
/// unsigned, signed by a key the list does not know, and PST-signed but
/// altered after signing (a full signature check that fails). Prints
/// `RESULT accepted/s unsigned/s stranger/s altered/s`. The mails are made
/// before the clock starts.
fn run_intake(n: usize, mails: usize) {
    use embargo_relay::context::Relay;
    use embargo_relay::inbound::smtp::Envelope;
    use embargo_relay::intake::Intake;
    let (rt, p, pst) = setup(n);
    let dir = tempfile::tempdir().unwrap();
    let sink = rt.block_on(CaptureSink::start()).unwrap();
    let config = Config::load(&write_config(dir.path(), sink.addr(), n)).unwrap();
    let intake = Intake::new(Arc::new(
        Relay::open(config, Arc::new(SystemClock)).unwrap(),
    ));
    let stranger = crypto::generate_key(
        "Stranger <pst@bench.example>",
        now() - chrono::Duration::days(1),
        None,
    )
    .unwrap();
    let until = now() + chrono::Duration::days(2);
    let signed = |key: &Cert, i: usize| {
        embargo_relay::compose::signed_announcement(
            &p,
            key,
            now() - chrono::Duration::seconds(5),
            PST,
            LIST,
            &format!("CVE-2026-{i:04}: intake"),
            &body(10 << 10, until),
        )
        .unwrap()
    };
    let envelope = Envelope {
        helo: "bench".to_owned(),
        mail_from: PST.to_owned(),
        rcpt_to: vec![LIST.to_owned()],
        peer: "127.0.0.1:1".to_owned(),
    };
    let rate = |raws: &[Vec<u8>], code: u16| {
        let t0 = Instant::now();
        for raw in raws {
            let reply = intake.process(&envelope, raw);
            assert_eq!(reply.code, code, "{}", reply.text);
        }
        raws.len() as f64 / t0.elapsed().as_secs_f64()
    };
    let good: Vec<Vec<u8>> = (0..mails).map(|i| signed(&pst, i)).collect();
    let unsigned: Vec<Vec<u8>> = (0..mails)
        .map(|i| {
            format!(
                "From: <{PST}>\r\nTo: <{LIST}>\r\nSubject: junk {i}\r\n\r\n{}",
                body(10 << 10, until)
            )
            .into_bytes()
        })
        .collect();
    let strangers: Vec<Vec<u8>> = (0..mails).map(|i| signed(&stranger, i)).collect();
    let altered: Vec<Vec<u8>> = (0..mails)
        .map(|i| {
            let raw = signed(&pst, mails + i);
            let text = String::from_utf8(raw).unwrap();
            text.replacen("The quick brown fox", "The quick brown cat", 1)
                .into_bytes()
        })
        .collect();
    let accepted = rate(&good, 250);
    let unsigned = rate(&unsigned, 550);
    let strangers = rate(&strangers, 550);
    let altered = rate(&altered, 550);
    drop(sink);
    println!("RESULT {accepted:.1} {unsigned:.1} {strangers:.1} {altered:.1}");
}

/// One case, in this (child) process: prints `RESULT secs rss_mb
/// crypto_secs idle_rss_mb cpu_secs` (the CPU the fan-out used, on all cores).
fn run_case(n: usize, size: usize) {
    let (rt, p, pst) = setup(n);
    let until = now() + chrono::Duration::days(2);
    let text = body(size, until);
    let (secs, rss, crypto_secs, idle, cpu) = rt.block_on(async {
        let (_dir, sink, running) = start_list(n).await;
        // What the list holds before any mail: the roster's keys, mostly.
        let idle = current_rss_mb();
        let raw = embargo_relay::compose::signed_announcement(
            &p,
            &pst,
            now() - chrono::Duration::seconds(5),
            PST,
            LIST,
            "CVE-2026-0000: benchmark",
            &text,
        )
        .unwrap();
        let (t0, cpu0) = (Instant::now(), cpu_secs());
        smtp_send(running.smtp_addr.port(), &raw).await;
        // Every member and the PST get a copy.
        let got = sink.wait_count(n + 1, Duration::from_secs(1800)).await;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu0;
        // The peak of the list (and the sink, in this process) at work,
        // before the crypto-only pass below loads the keys again.
        let rss = peak_rss_mb();
        assert!(got > n, "only {got} of {} copies arrived", n + 1);
        running.shutdown().await;
        // The list's crypto alone: one sealed copy per member.
        let list = ListKey::load(&keys_dir().join("list.key")).unwrap();
        // Each member's encryption keys, as the roster keeps them derived.
        let certs: Vec<crypto::EncryptionKeys> = (0..n)
            .map(|i| {
                let cert = Cert::from_file(keys_dir().join(format!("m{i}.asc"))).unwrap();
                crypto::EncryptionKeys::of(&cert, &p, now()).unwrap()
            })
            .collect();
        // As the fan-out does it: sealed once, then a PKESK per member.
        let t1 = Instant::now();
        let shared = list.seal_shared(&p, now(), text.as_bytes()).unwrap();
        let smime = keys_dir().join("smime");
        let identity = smime_half().then(|| {
            crypto::smime::SmimeIdentity::load(&smime.join("list.pem"), &smime.join("list.key"))
                .unwrap()
        });
        let smime_certs: Vec<Option<crypto::smime::SmimeCert>> = (0..n)
            .map(|i| {
                (smime_half() && i % 2 == 1).then(|| {
                    crypto::smime::SmimeCert::load_for(&smime.join(format!("m{i}.pem")), &member(i))
                        .unwrap()
                })
            })
            .collect();
        for (cert, smime_cert) in certs.iter().zip(&smime_certs) {
            match (smime_cert, &identity) {
                (Some(to), Some(id)) => {
                    crypto::smime::seal_copy(id, to, text.as_bytes()).unwrap();
                }
                _ => {
                    list.seal_to_member(cert, &shared).unwrap();
                }
            }
        }
        (secs, rss, t1.elapsed().as_secs_f64(), idle, cpu)
    });
    println!("RESULT {secs:.3} {rss:.1} {crypto_secs:.3} {idle:.1} {cpu:.2}");
}

fn list_address(j: usize) -> String {
    format!("list{j}@bench.example")
}

/// `lists` lists of the same `n` members (and the PST, whose key serves
/// them all), each with its own list key, in one file.
fn write_lists_config(dir: &Path, sink: std::net::SocketAddr, lists: usize, n: usize) -> PathBuf {
    let keys = keys_dir();
    let pst = Cert::from_file(keys.join("pst.key")).unwrap();
    std::fs::write(
        dir.join("pst.asc"),
        crypto::armored_public(&pst.strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    let mut text = format!(
        "[defaults]\nstate_dir = \"{}\"\n\n\
[inbound.smtp]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"8MiB\"\n\n\
[outbound]\nsmarthost = \"smtp://{sink}\"\n\n[public]\nrecipients = [\"{PUBLIC}\"]\n\n\
[[member]]\nemail = \"{PST}\"\norganization = \"PST\"\nkey = \"{}\"\npst = true\n",
        dir.join("state").display(),
        dir.join("pst.asc").display(),
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[member]]\nemail = \"{}\"\norganization = \"Org {i}\"\nkey = \"{}\"\n",
            member(i),
            keys.join(format!("m{i}.asc")).display()
        ));
    }
    for j in 0..lists {
        let key = keys.join(format!("list{j}.key"));
        if !key.exists() {
            let cert = crypto::generate_key(
                &format!("List {j} <{}>", list_address(j)),
                now() - chrono::Duration::days(1),
                None,
            )
            .unwrap();
            std::fs::write(&key, crypto::armored_secret(&cert).unwrap()).unwrap();
        }
        text.push_str(&format!(
            "\n[[list]]\naddress = \"{}\"\nsecret_key = \"{}\"\n",
            list_address(j),
            key.display()
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `lists` lists of `n` members in one daemon, in this (child) process:
/// prints `RESULT one_secs all_secs peak_rss_mb idle_rss_mb`.
fn run_lists_case(lists: usize, n: usize, size: usize) {
    let (rt, p, pst) = setup(n);
    let until = now() + chrono::Duration::days(2);
    let (one, all, rss, idle) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sink = CaptureSink::start().await.unwrap();
        sink.discard_bodies();
        let configs =
            Config::load_all(&write_lists_config(dir.path(), sink.addr(), lists, n)).unwrap();
        let running = embargo_relay::daemon::start_lists(configs, Arc::new(SystemClock))
            .await
            .unwrap();
        let idle = current_rss_mb();
        let port = running.smtp_addr.port();
        let mail = |j: usize, subject: &str| {
            // The PST key serves every list: each mail names its own.
            let filler = body(size, until);
            let text = filler.replacen("\n\n", &format!("\nList: {}\n\n", list_address(j)), 1);
            embargo_relay::compose::signed_announcement(
                &p,
                &pst,
                now() - chrono::Duration::seconds(5),
                PST,
                &list_address(j),
                subject,
                &text,
            )
            .unwrap()
        };
        // Member copies (not the PST's copies and receipts), counted.
        let copies = |want: usize| {
            sink.wait_until(Duration::from_secs(1800), move |got| {
                got.iter()
                    .filter(|c| c.envelope.rcpt_to.iter().any(|r| r.starts_with('m')))
                    .count()
                    >= want
            })
        };
        // One list's announcement while the others idle.
        let t0 = Instant::now();
        smtp_send_to(port, &list_address(0), &mail(0, "CVE-2026-0002: one list")).await;
        copies(n).await;
        let one = t0.elapsed().as_secs_f64();
        // Then one to every list at once.
        let raws: Vec<Vec<u8>> = (0..lists)
            .map(|j| mail(j, "CVE-2026-0003: every list"))
            .collect();
        let addresses: Vec<String> = (0..lists).map(list_address).collect();
        let t1 = Instant::now();
        let sends = raws
            .iter()
            .zip(&addresses)
            .map(|(raw, to)| smtp_send_to(port, to, raw));
        futures_util::future::join_all(sends).await;
        copies((lists + 1) * n).await;
        let all = t1.elapsed().as_secs_f64();
        let rss = peak_rss_mb();
        running.shutdown().await;
        (one, all, rss, idle)
    });
    println!("RESULT {one:.3} {all:.3} {rss:.1} {idle:.1}");
}

/// How late the public release goes out while `n` copies are in flight.
fn run_release(n: usize) {
    let (rt, p, pst) = setup(n);
    let lateness = rt.block_on(async {
        let (_dir, sink, running) = start_list(n).await;
        // One member's server takes the message and never answers.
        sink.hold_for(&member(0));
        // The embargo lifts 4 s after sending, well inside the fan-out of a
        // 1 MB announcement.
        let now = now();
        let until = chrono::DateTime::<Utc>::from_timestamp(now.timestamp() + 4, 0).unwrap();
        let entity = embargo_relay::compose::text_with_advisory(
            "CVE-2026-0001: release timing",
            &body(1 << 20, until),
            "The public advisory.\n",
        );
        let sig =
            crypto::sign_detached(&p, &pst, now - chrono::Duration::seconds(5), &entity).unwrap();
        let raw = embargo_relay::compose::multipart_signed(PST, LIST, "timing", &entity, &sig);
        smtp_send(running.smtp_addr.port(), &raw).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        let released = loop {
            let got = sink.captured();
            if let Some(c) = got
                .iter()
                .find(|c| c.envelope.rcpt_to.iter().any(|r| r == PUBLIC))
            {
                break c.at;
            }
            assert!(Instant::now() < deadline, "no release");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let in_flight = sink.count();
        sink.release();
        running.shutdown().await;
        (
            (released - until).num_milliseconds() as f64 / 1000.0,
            in_flight,
        )
    });
    println!("RESULT {:.3} {}", lateness.0, lateness.1);
}

/// `gpg --sign --encrypt` of `body` to each of `n` members, one process each.
fn gpg_loop(n: usize, size: usize) -> f64 {
    // A keyring of exactly these members (a bigger one slows gpg down).
    let home = target_dir().join(format!("bench-gnupg-{n}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--yes", "--quiet", "--trust-model", "always"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("gpg is installed")
    };
    let imported = home.join("imported");
    if !imported.exists() {
        let mut all = std::fs::read(keys_dir().join("list.key")).unwrap();
        for i in 0..n {
            all.extend(std::fs::read(keys_dir().join(format!("m{i}.asc"))).unwrap());
        }
        let file = home.join("import.asc");
        std::fs::write(&file, all).unwrap();
        assert!(gpg(&["--import", file.to_str().unwrap()]).success());
        std::fs::write(&imported, b"").unwrap();
    }
    let input = home.join("body.txt");
    std::fs::write(&input, body(size, now())).unwrap();
    let t0 = Instant::now();
    for i in 0..n {
        let status = gpg(&[
            "--armor",
            // The list does not compress either (and the body repeats).
            "--compress-algo",
            "none",
            "--sign",
            "--encrypt",
            "--local-user",
            LIST,
            "--recipient",
            &member(i),
            "--output",
            "/dev/null",
            input.to_str().unwrap(),
        ]);
        assert!(status.success(), "gpg failed for member {i}");
    }
    t0.elapsed().as_secs_f64()
}

fn child(args: &[&str]) -> Vec<String> {
    // As the systemd unit runs the daemon (deploy/embargo-relay.service).
    let out = Command::new(std::env::current_exe().unwrap())
        .env("MALLOC_ARENA_MAX", "2")
        // Nor does it capture backtraces (the errors a refusal makes).
        .env_remove("RUST_BACKTRACE")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "case {args:?} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result from {args:?}: {text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    // BENCH_LOG=debug shows the daemon's log (with timestamps) on stderr.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(n) = arg("--case") {
        return run_case(n.parse().unwrap(), parse_size(&arg("--size").unwrap()));
    }
    if let Some(n) = arg("--intake-case") {
        let mails = arg("--mails").map_or(200, |m| m.parse().unwrap());
        return run_intake(n.parse().unwrap(), mails);
    }
    if let Some(list) = arg("--intake") {
        let mails = arg("--mails").unwrap_or_else(|| "200".into());
        println!(
            "| members | accepted announcements | unsigned junk | signed by a stranger | PST-signed, altered |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: |");
        for n in list.split(',') {
            let r = child(&["--intake-case", n, "--mails", &mails]);
            println!(
                "| {n} | {}/s | {}/s | {}/s | {}/s |",
                r[0], r[1], r[2], r[3]
            );
        }
        return;
    }
    if let Some(n) = arg("--release-case") {
        return run_release(n.parse().unwrap());
    }
    if let Some(l) = arg("--lists-case") {
        return run_lists_case(
            l.parse().unwrap(),
            arg("--members").unwrap().parse().unwrap(),
            parse_size(&arg("--size").unwrap()),
        );
    }
    if let Some(lists) = arg("--lists") {
        let n = arg("--members").unwrap_or_else(|| "300".into());
        let size = parse_size(&arg("--sizes").unwrap_or_else(|| "10k".into()));
        ensure_keys(n.parse().unwrap());
        let r = child(&[
            "--lists-case",
            &lists,
            "--members",
            &n,
            "--size",
            &size.to_string(),
        ]);
        println!(
            "| lists × members | body | one list's announcement, all delivered | one to every list at once, all delivered | peak RSS | RSS before sending |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        println!(
            "| {lists} × {n} | {} | {} s | {} s | {:.0} MB | {:.0} MB |",
            size_name(size),
            r[0],
            r[1],
            r[2].parse::<f64>().unwrap(),
            r[3].parse::<f64>().unwrap()
        );
        return;
    }
    let members: Vec<usize> = arg("--members")
        .unwrap_or_else(|| "30,300,3000".into())
        .split(',')
        .map(|m| m.parse().unwrap())
        .collect();
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "10k,1m".into())
        .split(',')
        .map(parse_size)
        .collect();
    let with_gpg = !args.iter().any(|a| a == "--no-gpg");
    ensure_keys(members.iter().copied().max().unwrap_or(0));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("embargo-relay fan-out benchmark ({cpus} CPUs)\n");
    println!(
        "| members | body | all delivered | copies/s | CPU used | peak RSS | RSS before sending | crypto only | gpg loop | vs gpg (end to end) | vs gpg (crypto) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &size in &sizes {
        for &n in &members {
            let mut case = vec![
                "--case".to_owned(),
                n.to_string(),
                "--size".to_owned(),
                size.to_string(),
            ];
            if smime_half() {
                case.push("--smime-half".to_owned());
            }
            let case: Vec<&str> = case.iter().map(String::as_str).collect();
            let r = child(&case);
            let (secs, rss, crypto_secs, idle, cpu): (f64, f64, f64, f64, f64) = (
                r[0].parse().unwrap(),
                r[1].parse().unwrap(),
                r[2].parse().unwrap(),
                r[3].parse().unwrap(),
                r[4].parse().unwrap(),
            );
            let (gpg, vs, vs_crypto) = if with_gpg {
                let g = gpg_loop(n, size);
                (
                    format!("{g:.2} s"),
                    format!("{:.1}×", g / secs),
                    format!("{:.1}×", g / crypto_secs),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            let label = if smime_half() {
                format!("{n} (half S/MIME)")
            } else {
                n.to_string()
            };
            println!(
                "| {label} | {} | {secs:.2} s | {:.0} | {cpu:.2} s | {rss:.0} MB | {idle:.0} MB | {crypto_secs:.2} s | {gpg} | {vs} | {vs_crypto} |",
                size_name(size),
                (n + 1) as f64 / secs,
            );
            std::io::stdout().flush().unwrap();
        }
    }
    if !args.iter().any(|a| a == "--no-release") {
        let n = members.iter().copied().max().unwrap_or(3000);
        let r = child(&["--release-case", &n.to_string()]);
        println!(
            "\npublic release during a {n}-member fan-out of 1 MB, one member server hung: {} s after its time ({} of {} copies delivered by then)",
            r[0],
            r[1],
            n + 1
        );
    }
}
