//! Issue 13, point 3: Postfix in front of the list, set up with the files
//! of `deploy/postfix/` exactly as they are shipped (only the paths and the
//! pipe's user change), so the deployment guide cannot drift from what is
//! tested. A private Postfix instance under a temp dir, on 127.0.0.1 only:
//! list mail goes through the pipe transport into `submit`; the daemon's
//! smarthost is that Postfix, which relays everything else (member copies,
//! bounces) to a loopback sink.
//!
//! Postfix's master must start as root; the suite runs as root in CI.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use embargo_relay::intake::Rejection;
use embargo_relay::sink::{CaptureSink, Captured};

use crate::common::*;
use crate::readers::Readers;

const REQUEST: &str = "distributors-announce-request@lists.example.org";
/// A member in a subdomain of the list's domain (Postfix's
/// `parent_domain_matches_subdomains` pitfall).
const SUB_MEMBER: &str = "psirt@sub.lists.example.org";
const ATTACKER: &str = "attacker@evil.example";
const CANARY: &str = "CANARY-postfix-3b9d";

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shipped(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/postfix")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A private Postfix instance; stopped on drop.
struct Postfix {
    base: tempfile::TempDir,
    conf: PathBuf,
    addr: SocketAddr,
}

impl Postfix {
    /// Starts Postfix on 127.0.0.1:`port`, relaying to `sink`, its pipe
    /// running `binary submit --config config` as `user`.
    fn start(port: u16, sink: SocketAddr, binary: &Path, config: &Path, user: &str) -> Postfix {
        assert_eq!(
            id(&["-u"]),
            0,
            "the Postfix test starts a private Postfix, whose master must run as root"
        );
        let base = tempfile::Builder::new()
            .prefix("postfix")
            .tempdir_in("/tmp")
            .unwrap();
        // Postfix and the pipe's user must pass through it.
        std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o711)).unwrap();
        let conf = base.path().join("conf");
        for dir in ["conf", "queue", "data", "log"] {
            std::fs::create_dir(base.path().join(dir)).unwrap();
        }
        let data = base.path().join("data");
        std::os::unix::fs::chown(
            &data,
            Some(id(&["-u", "postfix"])),
            Some(id(&["-g", "postfix"])),
        )
        .unwrap();
        std::fs::set_permissions(&data, PermissionsExt::from_mode(0o700)).unwrap();
        let b = base.path().display();
        // This instance: its own directories, a loopback port, the sink as
        // the next hop, no DNS, fast retries. Then the shipped settings.
        let instance = format!(
            "compatibility_level = 3.6\n\
queue_directory = {b}/queue\n\
data_directory = {b}/data\n\
mail_owner = postfix\n\
setgid_group = postdrop\n\
syslog_name = postfix-embargo-test\n\
maillog_file = {b}/log/maillog\n\
maillog_file_prefixes = {b}/log\n\
inet_interfaces = 127.0.0.1\n\
inet_protocols = ipv4\n\
myhostname = mx.test.invalid\n\
mydomain = test.invalid\n\
mydestination = localhost\n\
alias_maps =\n\
alias_database =\n\
local_transport = error:5.1.1 no local delivery in this test\n\
mynetworks = 127.0.0.0/8\n\
relayhost = [127.0.0.1]:{sink_port}\n\
smtp_dns_support_level = disabled\n\
smtp_host_lookup = native\n\
smtpd_peername_lookup = no\n\
in_flow_delay = 0\n\
queue_run_delay = 1s\n\
minimal_backoff_time = 2s\n\
maximal_backoff_time = 4s\n\
service_throttle_time = 1s\n\
biff = no\n\n",
            sink_port = sink.port()
        );
        let etc = format!("{}/", conf.display());
        std::fs::write(
            conf.join("main.cf"),
            instance + &shipped("main.cf").replace("/etc/postfix/", &etc),
        )
        .unwrap();
        let services = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
pickup    unix  n - n 60 1 pickup\n\
cleanup   unix  n - n - 0 cleanup\n\
qmgr      unix  n - n 300 1 qmgr\n\
rewrite   unix  - - n - - trivial-rewrite\n\
bounce    unix  - - n - 0 bounce\n\
defer     unix  - - n - 0 bounce\n\
trace     unix  - - n - 0 bounce\n\
verify    unix  - - n - 1 verify\n\
flush     unix  n - n 1000? 0 flush\n\
proxymap  unix  - - n - - proxymap\n\
proxywrite unix - - n - 1 proxymap\n\
smtp      unix  - - n - - smtp\n\
relay     unix  - - n - - smtp\n\
showq     unix  n - n - - showq\n\
error     unix  - - n - - error\n\
retry     unix  - - n - - error\n\
discard   unix  - - n - - discard\n\
anvil     unix  - - n - 1 anvil\n\
scache    unix  - - n - 1 scache\n\
postlog   unix-dgram n - n - 1 postlogd\n"
        );
        let pipe = shipped("master.cf")
            .replace("user=embargo-relay", &format!("user={user}"))
            .replace("/usr/bin/embargo-relay", binary.to_str().unwrap())
            .replace("/etc/embargo-relay/config.toml", config.to_str().unwrap());
        std::fs::write(conf.join("master.cf"), services + &pipe).unwrap();
        for map in [
            "transport",
            "embargo-relay-recipients",
            "embargo-relay-bounces",
        ] {
            std::fs::write(conf.join(map), shipped(map)).unwrap();
        }
        let postfix = Postfix {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            base,
            conf,
        };
        postfix.run(
            "/usr/sbin/postmap",
            &["transport".as_ref(), "embargo-relay-recipients".as_ref()],
        );
        // The shipped settings pass Postfix's own check, then it starts.
        postfix.run("/usr/sbin/postfix", &["check".as_ref()]);
        postfix.run("/usr/sbin/postfix", &["start".as_ref()]);
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(postfix.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "Postfix did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        postfix
    }

    /// Runs a Postfix command on this instance (`-c conf`), in its config dir.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = Command::new(program)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .current_dir(&self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{program} must be installed (scripts/deps): {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// A main.cf setting of this instance, as Postfix reads it.
    fn postconf(&self, name: &str) -> String {
        let out = Command::new("/usr/sbin/postconf")
            .arg("-c")
            .arg(&self.conf)
            .args(["-h", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.base.path().join("log/maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
    }
}

/// A bounce's `Diagnostic-Code`, its folded lines joined.
fn diagnostic(dsn: &Captured) -> String {
    let text = String::from_utf8_lossy(&dsn.raw).replace("\r\n", "\n");
    let start = text.find("\nDiagnostic-Code: ").expect("a Diagnostic-Code") + 18;
    let mut value = String::new();
    for (i, line) in text[start..].split('\n').enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        if i > 0 {
            value.push(' ');
        }
        value.push_str(line.trim());
    }
    value
}

fn bounces_to<'a>(got: &'a [Captured], who: &str) -> Vec<&'a Captured> {
    got.iter()
        .filter(|c| c.envelope.rcpt_to == [who.to_owned()])
        .filter(|c| find(&c.raw, b"report-type=delivery-status").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_postfix_as_deployed_members_get_copies_and_refusals_bounce_one_line() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    // The daemon's smarthost is Postfix; its port is known before Postfix starts.
    let port = free_port();
    let smarthost = SocketAddr::from(([127, 0, 0, 1], port));
    let config = f.write_config(smarthost);
    let sub = embargo_relay::crypto::generate_key(
        &format!("Sub <{SUB_MEMBER}>"),
        now() - chrono::Duration::hours(1),
        None,
    )
    .unwrap();
    std::fs::write(
        f.path("keys/sub.asc"),
        embargo_relay::crypto::armored_public(&sub.clone().strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[member]]\nemail = \"{SUB_MEMBER}\"\norganization = \"Sub\"\nkey = \"keys/sub.asc\"\n"
    ));
    std::fs::write(&config, text).unwrap();

    // `submit` runs as `nobody` (Postfix refuses root); so does the daemon,
    // as both run as the service user in a deployment.
    let nobody = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
    std::fs::set_permissions(f.dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
    std::fs::create_dir(f.state_dir()).unwrap();
    std::os::unix::fs::chown(f.state_dir(), Some(nobody.0), Some(nobody.1)).unwrap();
    // A copy of the binary where `nobody` can run it, whatever the modes
    // of the build directory (a clone under /root is 0700).
    let binary = f.path("embargo-relay");
    std::fs::copy(env!("CARGO_BIN_EXE_embargo-relay"), &binary).unwrap();
    std::fs::set_permissions(&binary, PermissionsExt::from_mode(0o755)).unwrap();
    let binary = binary.as_path();
    let mut command = Command::new(binary);
    command.uid(nobody.0).gid(nobody.1);
    let daemon = Daemon::spawn(command, &config, &f.path("daemon.log"));
    let postfix = Postfix::start(port, sink.addr(), binary, &config, "nobody");
    let list = f.list.clone();

    // 0. The size limit holds the members' copies of the largest
    //    announcement: a copy is about 1.38 times its announcement.
    let default_max = embargo_relay::config::Config::parse(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/embargo-relay.example.toml"),
        )
        .unwrap()
        .replace(
            "/etc/embargo-relay/keys/list.key",
            f.path("keys/list.key").to_str().unwrap(),
        )
        .replace(
            "/etc/embargo-relay/keys/members/distro.asc",
            f.path("keys/m1.asc").to_str().unwrap(),
        ),
        &f.path("example.toml"),
    )
    .map(|c| c.smtp.max_message_size)
    .unwrap_or(10 << 20);
    let limit: usize = postfix.postconf("message_size_limit").parse().unwrap();
    assert!(
        limit as f64 >= 1.4 * default_max as f64,
        "message_size_limit {limit} cannot carry the copies of a {default_max}-octet announcement"
    );
    let pipe_size = format!("size={default_max}");
    assert!(
        shipped("master.cf").contains(&pipe_size),
        "the pipe's {pipe_size}"
    );
    // Only the list's two addresses are valid in its domain.
    let (code, text) = send_to(
        postfix.addr,
        PST,
        "nobody@lists.example.org",
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await
    .unwrap_err();
    assert!(code == 550 && text.contains("5.1.1"), "{text}");
    // A `+` address that is no bounce address of the list is refused at
    // RCPT too (no pipe run, no backscatter to a forged sender).
    let (code, text) = send_to(
        postfix.addr,
        PST,
        "distributors-announce+junk@lists.example.org",
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await
    .unwrap_err();
    assert!(code == 550 && text.contains("5.1.1"), "{text}");

    // 1. An announcement sent to Postfix reaches every member, the one in
    //    the list's subdomain included, readable by gpg, rnp and sq.
    let until = now() + chrono::Duration::days(2);
    let body = format!(
        "Embargo-Until: {}\n\nThe details: {CANARY}.\n",
        until.format("%Y-%m-%dT%H:%M:%SZ")
    );
    send_to(
        postfix.addr,
        PST,
        LIST,
        &f.gpg_signed(PST, "CVE-2026-13: via Postfix", &body),
    )
    .await
    .expect("Postfix takes the announcement");
    let mut members: Vec<(String, sequoia_openpgp::Cert)> = f
        .usable_members()
        .map(|m| (m.email.clone(), m.secret.clone()))
        .collect();
    members.push((SUB_MEMBER.to_owned(), sub.clone()));
    let got = sink
        .wait_until(PATIENCE, |g| {
            copies(g).len() >= members.len() && !receipts(g).is_empty()
        })
        .await;
    let log = || {
        format!(
            "daemon log:\n{}\nPostfix log:\n{}",
            std::fs::read_to_string(&daemon.log).unwrap_or_default(),
            postfix.log()
        )
    };
    for (email, secret) in &members {
        let copy = copies(&got)
            .into_iter()
            .find(|c| c.envelope.rcpt_to == [email.clone()])
            .unwrap_or_else(|| panic!("no copy for {email}; {}", log()));
        Readers::new(Some(secret), &list)
            .read(copy, now())
            .unwrap_or_else(|e| panic!("{email}: {e}"));
    }

    // 2. An unsigned mail and a mail signed by a key that is not the PST's
    //    bounce; each bounce's diagnostic is the one-line reason, and the
    //    body does not come back.
    let unsigned =
        format!("From: <{ATTACKER}>\r\nTo: {LIST}\r\nSubject: unsigned\r\n\r\n{CANARY}\r\n");
    send_to(postfix.addr, ATTACKER, LIST, unsigned.as_bytes())
        .await
        .expect("Postfix queues it");
    let mallory = Gpg::new();
    let mallory_fpr = mallory.generate(&format!("Not the PST <{PST}>"));
    let entity = embargo_relay::compose::text_part(Some("forged"), &format!("{CANARY}\n"));
    let signature = mallory.detach_sign(&mallory_fpr, &entity);
    let forged = embargo_relay::compose::multipart_signed(PST, LIST, "forged", &entity, &signature);
    let forger = "forger@evil.example";
    send_to(postfix.addr, forger, LIST, &forged)
        .await
        .expect("Postfix queues it");
    let got = sink
        .wait_until(PATIENCE, |g| {
            !bounces_to(g, ATTACKER).is_empty() && !bounces_to(g, forger).is_empty()
        })
        .await;
    let expectations = [
        (ATTACKER, "5.7.0", Rejection::Unsigned.to_string()),
        (forger, "5.7.0", String::new()),
    ];
    for (to, status, reason) in expectations {
        let dsn = bounces_to(&got, to);
        assert_eq!(dsn.len(), 1, "one bounce to {to}; {}", log());
        let text = String::from_utf8_lossy(&dsn[0].raw);
        assert!(text.contains(&format!("Status: {status}")), "{text}");
        let diagnostic = diagnostic(dsn[0]);
        let line = diagnostic
            .strip_prefix("x-unix; embargo-relay: ")
            .unwrap_or_else(|| panic!("{diagnostic}"));
        if reason.is_empty() {
            assert!(line.contains("signature"), "{diagnostic}");
        } else {
            assert_eq!(line, reason, "{diagnostic}");
        }
        for log_noise in ["embargo_relay", "INFO", "WARN", "ERROR", "Z "] {
            assert!(
                !line.contains(log_noise),
                "a log line in the bounce: {diagnostic}"
            );
        }
        assert!(!text.contains(CANARY), "the body came back: {text}");
        assert!(text.contains("text/rfc822-headers"), "{text}");
    }
    // The shipped pipe passes the client's address: refusals are counted
    // per host, like the daemon's own listener does.
    let by_client = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "rejected" && r.detail.contains("from peer 127.0.0.1 (submit)"))
        .count();
    assert_eq!(by_client, 2, "{:?}", f.audit());

    // 2b. One mail to both of the list's addresses is delivered to each
    //     alone (one recipient per submit run): nothing stays queued.
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(postfix.addr.port())
            .build();
    let both = lettre::address::Envelope::new(
        Some("security@seven.example".parse().unwrap()),
        vec![LIST.parse().unwrap(), REQUEST.parse().unwrap()],
    )
    .unwrap();
    let twice = format!(
        "From: <security@seven.example>\r\nTo: {LIST}, {REQUEST}\r\nSubject: both\r\n\r\nTo both.\r\n"
    );
    lettre::AsyncTransport::send_raw(&transport, &both, twice.as_bytes())
        .await
        .expect("Postfix takes it for both");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let log = postfix.log();
        let runs = log
            .lines()
            .filter(|l| {
                l.contains("postfix-embargo-test/pipe")
                    && l.contains("to=<")
                    && !l.contains("status=deferred")
            })
            .filter(|l| {
                l.contains(&format!("to=<{LIST}>")) || l.contains(&format!("to=<{REQUEST}>"))
            })
            .count();
        let deferred = log
            .lines()
            .any(|l| l.contains("relay=embargo-relay") && l.contains("status=deferred"));
        assert!(!deferred, "a pipe delivery was deferred; {}", log);
        // The announcement and the two of this mail (the refusals bounce).
        if runs >= 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", log);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // 3. A join request reaches the PST, encrypted.
    let request = format!(
        "From: <security@seven.example>\r\nTo: {REQUEST}\r\nSubject: join\r\n\r\nSeven-Corp would like to join.\r\n"
    );
    send_to(
        postfix.addr,
        "security@seven.example",
        REQUEST,
        request.as_bytes(),
    )
    .await
    .expect("Postfix takes the join request");
    let is_request = |c: &Captured| {
        c.envelope.rcpt_to == [PST.to_owned()]
            && find(&c.raw, b"Subject: [embargoed list post]").is_some()
    };
    let got = sink
        .wait_until(PATIENCE, |g| g.iter().any(is_request))
        .await;
    let forwarded = got
        .iter()
        .find(|c| is_request(c))
        .unwrap_or_else(|| panic!("{}", log()));
    assert!(find(&forwarded.raw, b"Seven-Corp").is_none(), "encrypted");
    Readers::new(Some(&f.members[0].secret), &list)
        .read(forwarded, now())
        .unwrap();

    // 4. A PST announcement refused for its embargo block: the bounce to
    //    the envelope sender names the problem and carries no text back.
    let refused = format!("Embargo-Until: 2020-01-01T00:00:00Z\n\n{CANARY} refused.\n");
    let bounces = "pst-bounces@project.example.org";
    send_to(
        postfix.addr,
        bounces,
        LIST,
        &f.gpg_signed(PST, "CVE-2026-14: refused", &refused),
    )
    .await
    .expect("Postfix queues it");
    let got = sink
        .wait_until(PATIENCE, |g| !bounces_to(g, bounces).is_empty())
        .await;
    let dsn = bounces_to(&got, bounces);
    assert_eq!(dsn.len(), 1, "{}", log());
    let text = String::from_utf8_lossy(&dsn[0].raw);
    assert!(text.contains("Status: 5.6.0"), "{text}");
    let diagnostic = diagnostic(dsn[0]);
    assert!(
        diagnostic.starts_with("x-unix; embargo-relay: invalid embargo: "),
        "{diagnostic}"
    );
    assert!(!text.contains(CANARY), "the announcement came back: {text}");

    // 5. A member's server that refuses a copy Postfix took (552 after
    //    DATA): Postfix's own bounce goes back to the copy's envelope
    //    sender, through the pipe, and marks that copy bounced; the PST
    //    gets a fresh receipt naming the member and the answer.
    sink.answer_for(GPG_MEMBER, 550, None);
    let bounced = f.gpg_signed(
        PST,
        "CVE-2026-15: bounced",
        &embargoed("for a member whose server refuses it"),
    );
    let before = sink.captured().len();
    send_to(postfix.addr, PST, LIST, &bounced)
        .await
        .expect("Postfix queues it");
    let deadline = std::time::Instant::now() + PATIENCE;
    let is_bounced = || {
        f.spool()
            .deliveries(None, Some(GPG_MEMBER))
            .unwrap()
            .iter()
            .any(|r| r.state == embargo_relay::spool::DeliveryState::Bounced)
    };
    while !is_bounced() {
        assert!(
            std::time::Instant::now() < deadline,
            "no bounce recorded; {}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let got = sink
        .wait_until(PATIENCE, |g| {
            receipt_texts(&f, &g[before..])
                .iter()
                .any(|t| t.contains("BOUNCED"))
        })
        .await;
    let receipt = receipt_texts(&f, &got[before..]).join("\n");
    assert!(
        receipt.contains(&format!("{GPG_MEMBER} (Org 1): 5.")) && receipt.contains("550"),
        "{receipt}"
    );
    assert!(
        f.audit()
            .iter()
            .any(|r| r.event == "bounced" && r.member.as_deref() == Some(GPG_MEMBER)),
        "{:?}",
        f.audit()
    );

    // Nothing went to anyone in the clear.
    for c in sink.captured() {
        if bounces_to(std::slice::from_ref(&c), &c.envelope.rcpt_to[0]).is_empty() {
            assert!(
                find(&c.raw, CANARY.as_bytes()).is_none(),
                "plaintext to {:?}",
                c.envelope
            );
        }
    }
}
