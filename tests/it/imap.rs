//! Issue 4, acceptance 1: the IMAP poller against a real Dovecot on
//! loopback. A signed announcement appended to the mailbox is relayed to
//! every member (by IDLE, long before the poll interval), the mailbox is
//! empty after, and a crash between fetch and commit, or between commit and
//! delete, loses nothing and relays nothing twice.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use embargo_relay::sink::CaptureSink;

use crate::common::*;

const USER: &str = "relay";
const PASSWORD: &str = "imap-test-password";

/// A throwaway Dovecot on 127.0.0.1, killed on drop.
pub struct Dovecot {
    child: Child,
    _dir: tempfile::TempDir,
    /// IMAP (STARTTLS offered when started with TLS).
    pub addr: SocketAddr,
    /// IMAP over TLS, and the self-signed certificate (PEM) it presents.
    pub tls: Option<(SocketAddr, PathBuf)>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn dovecot_binary() -> Option<PathBuf> {
    ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Dovecot {
    /// Starts Dovecot, or returns `None` (with a visible message) where it
    /// is not installed; in CI (`CI` set) a missing Dovecot fails the test.
    pub fn start() -> Option<Dovecot> {
        Self::start_with(false)
    }

    /// With `tls`: a self-signed certificate for 127.0.0.1 (made with the
    /// `openssl` tool Dovecot depends on), TLS required for login, and an
    /// implicit-TLS listener beside the STARTTLS one.
    pub fn start_with(tls: bool) -> Option<Dovecot> {
        let Some(binary) = dovecot_binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "Dovecot is not installed, but CI must run the IMAP tests (scripts/deps installs dovecot-imapd)"
            );
            eprintln!(
                "SKIPPED: Dovecot is not installed here; `apt-get install dovecot-imapd` (scripts/deps) to run the IMAP tests"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("dovecot")
            .tempdir_in("/tmp")
            .unwrap();
        let path = |p: &str| dir.path().join(p);
        // Dovecot's own users must traverse the directory.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        for d in ["run", "state", "mail"] {
            std::fs::create_dir(path(d)).unwrap();
        }
        std::fs::write(path("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        let root = std::fs::metadata(path("passwd")).unwrap().uid() == 0;
        // Dovecot refuses root as a mail user: as root, mail belongs to nobody.
        let (users, mail_user) = if root {
            std::os::unix::fs::chown(path("mail"), Some(65534), Some(65534)).unwrap();
            (
                "default_internal_user = dovecot\ndefault_login_user = dovenull\n".to_owned(),
                "uid=65534 gid=65534".to_owned(),
            )
        } else {
            let (user, group) = (id("-un"), id("-gn"));
            (
                format!(
                    "default_internal_user = {user}\ndefault_internal_group = {group}\ndefault_login_user = {user}\n\
first_valid_uid = 1\nservice anvil {{\n  chroot =\n}}\n"
                ),
                format!("uid={user} gid={group}"),
            )
        };
        let port = free_port();
        let d = dir.path().display();
        let (ssl, imaps_port) = if tls {
            let out = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(path("key.pem"))
                .arg("-out")
                .arg(path("cert.pem"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::set_permissions(
                path("key.pem"),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
            (
                format!("ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\n"),
                free_port(),
            )
        } else {
            ("ssl = no\n".to_owned(), 0)
        };
        let conf = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = /dev/stderr\nprotocols = imap\n\
listen = 127.0.0.1\n{ssl}disable_plaintext_auth = no\nauth_mechanisms = plain login\n{users}\
mail_location = maildir:{d}/mail/%u\n\
passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/passwd\n}}\n\
userdb {{\n  driver = static\n  args = {mail_user} home={d}/mail/%u\n}}\n\
service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}\n"
        );
        std::fs::write(path("dovecot.conf"), conf).unwrap();
        let log = std::fs::File::create(path("dovecot.log")).unwrap();
        let child = Command::new(binary)
            .args(["-F", "-c"])
            .arg(path("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let tls = tls.then(|| {
            let a: SocketAddr = format!("127.0.0.1:{imaps_port}").parse().unwrap();
            (a, path("cert.pem"))
        });
        let mut dovecot = Dovecot {
            child,
            _dir: dir,
            addr,
            tls,
        };
        dovecot.wait_ready();
        Some(dovecot)
    }

    /// Ready when a connection gets the `* OK` greeting (a bound port is not enough).
    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(s) = TcpStream::connect(self.addr) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("* OK") {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "dovecot exited with {status}:\n{}",
                    std::fs::read_to_string(self._dir.path().join("dovecot.log")).unwrap()
                );
            }
            assert!(std::time::Instant::now() < deadline, "dovecot not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A logged-in session with INBOX selected, as a mail client has.
    pub async fn client(&self) -> async_imap::Session<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap().unwrap();
        let mut session = client.login(USER, PASSWORD).await.map_err(|e| e.0).unwrap();
        session.select("INBOX").await.unwrap();
        session
    }

    /// Delivers `raw` into INBOX, as the MTA in front of the mailbox would.
    pub async fn append(&self, raw: &[u8]) {
        let mut s = self.client().await;
        s.append("INBOX", None, None, raw).await.unwrap();
        s.logout().await.unwrap();
    }

    /// The number of messages in INBOX, deleted-but-not-expunged included:
    /// the poller must expunge, not only flag.
    pub async fn count(&self) -> usize {
        let mut s = self.client().await;
        let n = s.uid_search("ALL").await.unwrap().len();
        s.logout().await.unwrap();
        n
    }

    /// Waits until INBOX is empty.
    pub async fn wait_empty(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.count().await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mailbox not emptied"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Adds an `[inbound.imap]` section to the fixture's config.
fn with_imap(config: &Path, dovecot: &Dovecot, poll: &str) {
    with_imap_at(config, dovecot.addr.port(), "none", None, poll);
}

/// `[inbound.imap]` for `port` with a TLS mode and an optional CA file;
/// replaces a section written before.
fn with_imap_at(config: &Path, port: u16, tls: &str, ca: Option<&Path>, poll: &str) {
    let dir = config.parent().unwrap();
    std::fs::write(dir.join("imap.password"), format!("{PASSWORD}\n")).unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    let text = match (text.find("[inbound.imap]"), text.find("[outbound]")) {
        (Some(a), Some(b)) => format!("{}{}", &text[..a], &text[b..]),
        _ => text,
    };
    let ca = ca.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    let text = text.replacen(
        "[outbound]",
        &format!(
            "[inbound.imap]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n{ca}user = \"{USER}\"\n\
password_file = \"imap.password\"\npoll_interval = \"{poll}\"\n\n[outbound]"
        ),
        1,
    );
    std::fs::write(config, text).unwrap();
}

/// Waits until the daemon's log shows the poller logged in.
async fn wait_poller(daemon: &Daemon) {
    wait_log(daemon, "IMAP poller connected", 1).await;
}

/// Waits until the daemon's log holds `needle` `n` times; returns the log.
async fn wait_log(daemon: &Daemon, needle: &str, n: usize) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_over_tls_and_starttls_checks_the_servers_certificate() {
    let Some(dovecot) = Dovecot::start_with(true) else {
        return;
    };
    let (tls_addr, cert) = dovecot.tls.clone().unwrap();
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let n = f.usable_members().count();

    // A certificate nobody vouched for: no login, nothing fetched.
    with_imap_at(&config, tls_addr.port(), "tls", None, "1h");
    dovecot
        .append(&f.gpg_signed(PST, "CVE-2026-53: tls", &embargoed("over TLS")))
        .await;
    let daemon = Daemon::start(&config, &f.path("untrusted.log"));
    let log = wait_log(&daemon, "IMAP session failed", 1).await;
    assert!(log.contains("TLS with 127.0.0.1"), "{log}");
    assert!(!log.contains(PASSWORD), "the password is never logged");
    assert_eq!(dovecot.count().await, 1, "nothing fetched");
    drop(daemon);

    // Implicit TLS, the server's certificate as the trust root.
    with_imap_at(&config, tls_addr.port(), "tls", Some(&cert), "1h");
    let daemon = Daemon::start(&config, &f.path("tls.log"));
    wait_copies(&sink, n).await;
    dovecot.wait_empty().await;
    // Every copy recorded before the kill (else one is rightly sent again).
    f.wait_until_no_pending().await;
    drop(daemon);

    // STARTTLS on the plain port.
    with_imap_at(&config, dovecot.addr.port(), "starttls", Some(&cert), "1h");
    let daemon = Daemon::start(&config, &f.path("starttls.log"));
    wait_poller(&daemon).await;
    dovecot
        .append(&f.gpg_signed(PST, "CVE-2026-54: starttls", &embargoed("upgraded")))
        .await;
    wait_copies(&sink, 2 * n).await;
    dovecot.wait_empty().await;
    f.wait_until_no_pending().await;
    assert_eq!(copies(&sink.captured()).len(), 2 * n);
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_poller_relays_from_a_real_dovecot_and_survives_crashes() {
    let Some(dovecot) = Dovecot::start() else {
        return;
    };
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    // A poll interval far beyond the test's patience: only IDLE can be quick.
    with_imap(&config, &dovecot, "1h");
    let n = f.usable_members().count();

    let log = f.path("daemon.log");
    let mut daemon = Daemon::start(&config, &log);
    wait_poller(&daemon).await;
    let first = f.gpg_signed(PST, "CVE-2026-50: by IMAP", &embargoed("fetched"));
    dovecot.append(&first).await;
    wait_copies(&sink, n).await;
    dovecot.wait_empty().await;
    daemon.terminate();

    // Crash after the fetch, before the commit: fetched again, relayed once.
    let second = f.gpg_signed(PST, "CVE-2026-51: crash 1", &embargoed("again"));
    dovecot.append(&second).await;
    let mut crashing = Daemon::start_with(
        &config,
        &log,
        &[("EMBARGO_RELAY_FAILPOINT", "imap-after-fetch")],
    );
    assert!(crashing.wait_exit(), "the failpoint stopped the daemon");
    assert_eq!(dovecot.count().await, 1, "the mail is still in the mailbox");

    // Crash after the commit, before the delete: removed, not relayed twice.
    // (The second one is fetched again first and crashes the same way.)
    let third = f.gpg_signed(PST, "CVE-2026-52: crash 2", &embargoed("once"));
    dovecot.append(&third).await;
    let mut crashing = Daemon::start_with(
        &config,
        &log,
        &[("EMBARGO_RELAY_FAILPOINT", "imap-before-delete")],
    );
    assert!(crashing.wait_exit(), "the failpoint stopped the daemon");
    assert_eq!(dovecot.count().await, 2, "committed, but not yet removed");
    let _restarted = Daemon::start(&config, &log);
    dovecot.wait_empty().await;
    wait_copies(&sink, 3 * n).await;
    f.wait_until_no_pending().await;
    // Each announcement relayed once: one copy per member of each. A copy
    // the fan-out sent between the commit and the crash (it starts at the
    // commit) is sent again after the restart with the same Message-ID:
    // at most one duplicate per member for the crash, never a new copy.
    let captured = sink.captured();
    let copies = copies(&captured);
    let ids: std::collections::HashSet<String> = copies
        .iter()
        .map(|c| {
            String::from_utf8_lossy(&c.raw)
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
                .expect("a Message-ID")
        })
        .collect();
    assert_eq!(ids.len(), 3 * n, "each relayed exactly once");
    assert!(copies.len() <= 4 * n, "{} copies", copies.len());
    let audit = f.audit();
    assert_eq!(
        audit.iter().filter(|r| r.event == "accepted").count(),
        3,
        "three announcements"
    );
    assert!(
        !audit.iter().any(|r| r.event == "rejected"),
        "nothing re-processed as a replay: {audit:#?}"
    );
    drop(crashing);
}

/// A PST command and a refused PST mail, each fetched again after a crash
/// between its commit and its removal from the mailbox: neither is taken
/// twice (one extension, one refusal notice) and neither raises the replay
/// alarm.
#[tokio::test(flavor = "multi_thread")]
async fn imap_refetched_command_and_refusal_are_taken_once() {
    let Some(dovecot) = Dovecot::start() else {
        return;
    };
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    with_imap(&config, &dovecot, "1h");
    let log = f.path("daemon.log");
    let daemon = Daemon::start(&config, &log);
    wait_poller(&daemon).await;
    let first = send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "CVE-2026-53: held", &embargoed("held")),
    )
    .await
    .unwrap();
    let id = first.rsplit(' ').next().unwrap().to_owned();
    drop(daemon);
    let later = (now() + chrono::Duration::days(4)).format("%Y-%m-%dT%H:%M:%SZ");
    let extend = f.gpg_signed(PST, "extend", &format!("Embargo-Extend: {id} {later}\n"));
    let refused = f.gpg_signed(
        PST,
        "refused",
        "Embargo-Until: 2020-01-01T00:00:00Z\n\nlate\n",
    );
    dovecot.append(&extend).await;
    dovecot.append(&refused).await;
    // The command is committed, then the daemon dies before removing it.
    let crash = |point: &str| {
        let mut crashing = Daemon::start_with(&config, &log, &[("EMBARGO_RELAY_FAILPOINT", point)]);
        assert!(crashing.wait_exit(), "the failpoint stopped the daemon");
    };
    crash("imap-before-delete");
    assert_eq!(dovecot.count().await, 2, "committed, but not yet removed");
    // Fetched again (and removed), then the refusal: committed, and the
    // daemon dies before removing it.
    crash("imap-before-delete@2");
    assert_eq!(dovecot.count().await, 1, "the refusal is still there");
    // Fetched again, and removed.
    let _restarted = Daemon::start(&config, &log);
    dovecot.wait_empty().await;
    f.wait_until_no_pending().await;

    let audit = f.audit();
    let extended: Vec<_> = audit.iter().filter(|r| r.event == "extended").collect();
    assert_eq!(extended.len(), 1, "extended once: {audit:#?}");
    let rejected = audit.iter().filter(|r| r.event == "rejected").count();
    assert_eq!(rejected, 1, "refused once: {audit:#?}");
    let texts = refusal_texts(&f, &sink.captured());
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("The list refused your mail"))
            .count(),
        1,
        "one refusal notice: {texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("rejected as a replay")),
        "no replay alarm: {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_mail_that_fails_the_checks_is_rejected_and_removed() {
    let Some(dovecot) = Dovecot::start() else {
        return;
    };
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    with_imap(&config, &dovecot, "1h");
    let forged = format!("From: {PST}\r\nTo: {LIST}\r\nSubject: x\r\n\r\nunsigned\r\n");
    dovecot.append(forged.as_bytes()).await;
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    dovecot.wait_empty().await;
    let audit = f.audit();
    let rejected: Vec<_> = audit.iter().filter(|r| r.event == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{audit:#?}");
    assert!(
        rejected[0].detail.contains("not PGP/MIME signed"),
        "{rejected:?}"
    );
    assert!(
        rejected[0].detail.contains("IMAP 127.0.0.1/INBOX uid"),
        "{rejected:?}"
    );
    assert!(sink.captured().is_empty());
    drop(daemon);

    // With done_folder, processed mail (here an accepted announcement and
    // a rejected forgery) is moved there instead of deleted.
    let mut s = dovecot.client().await;
    s.create("Processed").await.unwrap();
    s.logout().await.unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "poll_interval = \"1h\"\n",
        "poll_interval = \"1h\"\ndone_folder = \"Processed\"\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    dovecot
        .append(forged.replace("unsigned", "again").as_bytes())
        .await;
    dovecot
        .append(&f.gpg_signed(PST, "CVE-2026-55: kept", &embargoed("moved")))
        .await;
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    dovecot.wait_empty().await;
    wait_copies(&sink, f.usable_members().count()).await;
    let mut s = dovecot.client().await;
    let kept = s.select("Processed").await.unwrap().exists;
    s.logout().await.unwrap();
    assert_eq!(kept, 2, "both moved to the done folder");
    drop(daemon);
}

/// Issue 15: a reload that changes only the IMAP password, to one of the
/// same length, is noticed (the running poller keeps its connection
/// settings until a restart, and says so). The settings were compared by
/// their `Debug` text, which shows a password's length only.
#[test]
fn a_same_length_password_change_is_noticed_on_reload() {
    let f = Fixture::new();
    let config = f.write_config("127.0.0.1:9".parse().unwrap());
    with_imap_at(&config, 1, "none", None, "1s");
    let relay = embargo_relay::context::Relay::open(
        embargo_relay::config::Config::load(&config).unwrap(),
        std::sync::Arc::new(embargo_relay::clock::SystemClock),
    )
    .unwrap();
    let same = embargo_relay::config::Config::load(&config).unwrap();
    assert!(
        !relay.reload(same).contains(&"inbound.imap"),
        "nothing changed"
    );
    let password = config.parent().unwrap().join("imap.password");
    let old = std::fs::read_to_string(&password).unwrap();
    let new: String = old
        .trim_end()
        .chars()
        .map(|c| if c == 'x' { 'y' } else { 'x' })
        .collect();
    assert_eq!(new.len(), old.trim_end().len());
    std::fs::write(&password, format!("{new}\n")).unwrap();
    let next = embargo_relay::config::Config::load(&config).unwrap();
    assert!(
        relay.reload(next).contains(&"inbound.imap"),
        "a changed password of the same length is a change"
    );
}

/// Issue 17: a bounce that reaches the list's mailbox (an MTA that
/// delivers the bounce addresses there) is matched by the bounce address
/// its header names, and marks that copy bounced, like one by SMTP.
#[tokio::test(flavor = "multi_thread")]
async fn a_bounce_fetched_from_the_mailbox_marks_its_copy() {
    let Some(dovecot) = Dovecot::start() else {
        return;
    };
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    with_imap(&config, &dovecot, "1s");
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    wait_poller(&daemon).await;
    let mail = f.gpg_signed(PST, "CVE-2026-174: fetched bounce", &embargoed("x"));
    send(daemon.addr, PST, &mail).await.expect("accepted");
    let got = wait_copies(&sink, f.usable_members().count()).await;
    let sender = copies(&got)
        .into_iter()
        .find(|c| c.envelope.rcpt_to == [GPG_MEMBER])
        .unwrap()
        .envelope
        .mail_from
        .clone();
    let mut bounce = format!("Delivered-To: {sender}\r\n").into_bytes();
    bounce.extend(crate::bounces::dsn(&sender, GPG_MEMBER, "QUOTED"));
    dovecot.append(&bounce).await;
    dovecot.wait_empty().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f
        .audit()
        .iter()
        .any(|r| r.event == "bounced" && r.member.as_deref() == Some(GPG_MEMBER))
    {
        assert!(tokio::time::Instant::now() < deadline, "{:#?}", f.audit());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        f.spool()
            .deliveries(None, Some(GPG_MEMBER))
            .unwrap()
            .iter()
            .any(|r| r.state == embargo_relay::spool::DeliveryState::Bounced)
    );
    drop(daemon);
}
