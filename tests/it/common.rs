//! Test harness: keys (some made by GnuPG), a config in a temp dir, the real
//! daemon binary as a child process, and a loopback capture sink.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use chrono::Utc;
use embargo_relay::clock::ManualClock;
use embargo_relay::crypto;
use embargo_relay::sink::CaptureSink;
use embargo_relay::spool::{AuditRecord, Spool};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;

pub const LIST: &str = "distributors-announce@lists.example.org";
pub const PST: &str = "security@project.example.org";
pub const GPG_MEMBER: &str = "secalert@distro-a.example";
pub const SQ_MEMBER: &str = "security@distro-b.example";
pub const EXPIRED_MEMBER: &str = "psirt@expired-c.example";
/// The configured default public list.
pub const PUBLIC_DEFAULT: &str = "security-announce@project.example.org";

/// On the roster, but its certificate file does not exist.
pub const MISSING_MEMBER: &str = "security@missing-d.example";

/// `text` behind a valid embargo block (two days ahead), as an announcement body.
pub fn embargoed(text: &str) -> String {
    let until = now() + chrono::Duration::days(2);
    format!(
        "Embargo-Until: {}\n\n{text}",
        until.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// How long a test waits for something that should happen within a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

#[allow(clippy::disallowed_methods)]
pub fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

/// A throwaway GnuPG home, as a member's or the PST's mail client has.
pub struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    pub fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(
            home.path().join("gpg-agent.conf"),
            "allow-loopback-pinentry\n",
        )
        .unwrap();
        Gpg { home }
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg must be installed (apt-get install gnupg)");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Generates a key the way a user does (`--quick-gen-key`), returns its fingerprint.
    pub fn generate(&self, uid: &str) -> String {
        self.ok(
            &["--quick-gen-key", uid, "future-default", "default", "never"],
            b"",
        );
        self.fingerprint(uid)
    }

    /// The fingerprint of the (first) key with `uid`.
    pub fn fingerprint(&self, uid: &str) -> String {
        let listing =
            String::from_utf8(self.ok(&["--with-colons", "--list-keys", uid], b"")).unwrap();
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned()
    }

    /// The GnuPG home (its `openpgp-revocs.d` holds each key's revocation).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The armored public certificate, as `gpg --export` gives it.
    pub fn export(&self, fpr: &str) -> Vec<u8> {
        self.ok(&["--armor", "--export", fpr], b"")
    }

    /// Runs gpg; panics with its stderr if it fails.
    pub fn must(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        self.ok(args, stdin)
    }

    pub fn export_secret(&self, fpr: &str) -> Cert {
        Cert::from_bytes(&self.ok(&["--armor", "--export-secret-keys", fpr], b"")).unwrap()
    }

    pub fn import(&self, key: &[u8]) {
        self.ok(&["--import"], key);
    }

    /// `data` signed by `signer` and encrypted to `recipient` (fingerprints),
    /// armored, as `gpg --sign --encrypt` and the mail clients on it make it.
    pub fn sign_encrypt(&self, signer: &str, recipient: &str, data: &[u8]) -> Vec<u8> {
        self.ok(
            &[
                "--armor",
                "--trust-model",
                "always",
                "--sign",
                "--encrypt",
                "--local-user",
                signer,
                "--recipient",
                recipient,
            ],
            data,
        )
    }

    /// A detached armored signature, as mutt or Thunderbird make over a MIME part.
    pub fn detach_sign(&self, fpr: &str, data: &[u8]) -> Vec<u8> {
        self.ok(&["--armor", "--detach-sign", "--local-user", fpr], data)
    }

    /// Verifies a detached signature over `data`; returns gpg's status lines.
    pub fn verify(&self, signature: &[u8], data: &[u8]) -> Result<String, String> {
        let sig_file = self.home.path().join("v.sig");
        let data_file = self.home.path().join("v.dat");
        std::fs::write(&sig_file, signature).unwrap();
        std::fs::write(&data_file, data).unwrap();
        let args = [
            "--status-fd",
            "2",
            "--verify",
            sig_file.to_str().unwrap(),
            data_file.to_str().unwrap(),
        ];
        let out = self.run(&args, b"");
        let status = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(status)
        } else {
            Err(status)
        }
    }

    /// Decrypts; returns the plaintext and gpg's machine-readable status lines.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<(Vec<u8>, String), String> {
        let out = self.run(&["--status-fd", "2", "--decrypt"], ciphertext);
        let status = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok((out.stdout, status))
        } else {
            Err(status)
        }
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// A member as the tests know it: address and secret key to read copies with.
pub struct TestMember {
    pub email: String,
    pub secret: Cert,
    /// Whether the member's key can receive (the expired one cannot).
    pub usable: bool,
}

/// A list in a temp dir: list key (Sequoia), PST key and one member key made
/// by GnuPG, one member key made by Sequoia, one member whose key has expired.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub list: Cert,
    pub pst_gpg: Gpg,
    pub pst_fpr: String,
    pub members: Vec<TestMember>,
}

/// A test's own settings for the fixture's configuration, by section:
/// `(key, TOML value)`, replacing the fixture's value of that key or added;
/// and members added as `(email, organization, key file)`.
#[derive(Debug, Default, Clone)]
pub struct Tweaks {
    pub list: Vec<(&'static str, String)>,
    pub smtp: Vec<(&'static str, String)>,
    pub outbound: Vec<(&'static str, String)>,
    pub policy: Vec<(&'static str, String)>,
    pub members: Vec<(String, String, String)>,
    /// Where the manual clock starts (default: now).
    pub clock_at: Option<chrono::DateTime<Utc>>,
    /// TOML appended to the file as it is (a whole section, e.g. `[discovery]`).
    pub extra: String,
    /// Lines added to the PST member's table (e.g. its `smime_cert`).
    pub pst_lines: String,
}

impl Tweaks {
    /// A TOML string value.
    pub fn text(value: &str) -> String {
        format!("\"{value}\"")
    }
}

/// The one in-process starter: the daemon's own `start` on a config file
/// and a manual clock. [`Fixture::start_in_process`] writes the config from
/// typed [`Tweaks`]; the corpus list writes its own (fixed keys).
pub async fn run_in_process(config: &Path, clock: &ManualClock) -> embargo_relay::daemon::Running {
    embargo_relay::daemon::start(
        embargo_relay::config::Config::load(config).unwrap(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap()
}

/// Waits until the fan-out has done everything there is to do at the
/// clock time `at` (it sleeps past `at`, nothing in flight): the event to
/// wait for before checking that nothing was sent.
pub async fn wait_settled(relay: &embargo_relay::context::Relay, at: chrono::DateTime<Utc>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !relay.health.settled_past(at) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fan-out never settled at {at}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An in-process list started by [`Fixture::start_in_process`].
pub struct InProcess {
    pub sink: CaptureSink,
    pub clock: ManualClock,
    pub running: embargo_relay::daemon::Running,
    pub config: PathBuf,
}

impl InProcess {
    /// Where its SMTP listener is.
    pub fn addr(&self) -> SocketAddr {
        self.running.smtp_addr
    }

    /// Stops it as a SIGTERM would, every task finished.
    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let born = now() - chrono::Duration::hours(1);
        let list = crypto::generate_key(&format!("List <{LIST}>"), born, None).unwrap();
        let pst_gpg = Gpg::new();
        let pst_fpr = pst_gpg.generate(&format!("Project PST <{PST}>"));
        let member_gpg = Gpg::new();
        let member_fpr = member_gpg.generate(&format!("Distro A <{GPG_MEMBER}>"));
        let expired = crypto::generate_key(
            &format!("Expired C <{EXPIRED_MEMBER}>"),
            now() - chrono::Duration::days(10),
            Some(Duration::from_secs(86400)),
        )
        .unwrap();
        let members = vec![
            TestMember {
                email: PST.into(),
                secret: pst_gpg.export_secret(&pst_fpr),
                usable: true,
            },
            TestMember {
                email: GPG_MEMBER.into(),
                secret: member_gpg.export_secret(&member_fpr),
                usable: true,
            },
            TestMember {
                email: SQ_MEMBER.into(),
                secret: crypto::generate_key(&format!("Distro B <{SQ_MEMBER}>"), born, None)
                    .unwrap(),
                usable: true,
            },
            TestMember {
                email: EXPIRED_MEMBER.into(),
                secret: expired,
                usable: false,
            },
        ];
        let f = Fixture {
            dir,
            list,
            pst_gpg,
            pst_fpr,
            members,
        };
        std::fs::create_dir_all(f.path("keys")).unwrap();
        std::fs::write(
            f.path("keys/list.key"),
            crypto::armored_secret(&f.list).unwrap(),
        )
        .unwrap();
        for (i, m) in f.members.iter().enumerate() {
            let public = m.secret.clone().strip_secret_key_material();
            std::fs::write(
                f.path(&format!("keys/m{i}.asc")),
                crypto::armored_public(&public).unwrap(),
            )
            .unwrap();
        }
        f
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn usable_members(&self) -> impl Iterator<Item = &TestMember> {
        self.members.iter().filter(|m| m.usable)
    }

    /// Writes `config.toml` pointing at `smarthost`; returns its path.
    pub fn write_config(&self, smarthost: SocketAddr) -> PathBuf {
        self.write_config_with(smarthost, &Tweaks::default())
    }

    /// [`Fixture::write_config`] with a test's own settings: each replaces
    /// the fixture's value of that key in its section, or is added.
    pub fn write_config_with(&self, smarthost: SocketAddr, tweaks: &Tweaks) -> PathBuf {
        let section = |name: &str, defaults: &[(&str, String)], mine: &[(&'static str, String)]| {
            let mut text = format!("[{name}]\n");
            for (key, value) in defaults {
                if !mine.iter().any(|(k, _)| k == key) {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
            for (key, value) in mine {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text + "\n"
        };
        let q = |s: &str| format!("\"{s}\"");
        let mut text = section(
            "list",
            &[
                ("address", q(LIST)),
                ("secret_key", q("keys/list.key")),
                ("state_dir", q("state")),
            ],
            &tweaks.list,
        );
        text += &section(
            "inbound.smtp",
            &[
                ("listen", q("127.0.0.1:0")),
                ("max_message_size", q("1MiB")),
            ],
            &tweaks.smtp,
        );
        text += &section(
            "outbound",
            &[
                ("smarthost", q(&format!("smtp://{smarthost}"))),
                ("timeout", q("30s")),
                ("retry_initial", q("1s")),
                ("retry_max", q("2s")),
            ],
            &tweaks.outbound,
        );
        text += &section(
            "public",
            &[("recipients", format!("[{}]", q(PUBLIC_DEFAULT)))],
            &[],
        );
        text += &section("policy", &[("late_after", q("1s"))], &tweaks.policy);
        for (i, m) in self.members.iter().enumerate() {
            text.push_str(&format!(
                "[[member]]\nemail = \"{}\"\norganization = \"Org {i}\"\nkey = \"keys/m{i}.asc\"\npst = {}\n{}\n",
                m.email,
                m.email == PST,
                if m.email == PST { tweaks.pst_lines.as_str() } else { "" },
            ));
        }
        text.push_str(&format!(
            "[[member]]\nemail = \"{MISSING_MEMBER}\"\norganization = \"Missing D\"\nkey = \"keys/not-there.asc\"\n"
        ));
        for (email, organization, key) in &tweaks.members {
            text.push_str(&format!(
                "\n[[member]]\nemail = \"{email}\"\norganization = \"{organization}\"\nkey = \"{key}\"\n"
            ));
        }
        text.push('\n');
        text.push_str(&tweaks.extra);
        let path = self.path("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The one in-process start: the fixture's list with `tweaks`, its
    /// daemon in this process on a manual clock at now (whole milliseconds,
    /// as the spool stores times), in front of a fresh capture sink.
    pub async fn start_in_process(&self, tweaks: &Tweaks) -> InProcess {
        let sink = CaptureSink::start().await.unwrap();
        let config = self.write_config_with(sink.addr(), tweaks);
        let at = tweaks
            .clock_at
            .unwrap_or_else(|| embargo_relay::clock::from_millis(now().timestamp_millis()));
        let clock = ManualClock::new(at);
        let running = run_in_process(&config, &clock).await;
        InProcess {
            sink,
            clock,
            running,
            config,
        }
    }

    /// An announcement signed by `gpg` (the PST's real key) as a mail client makes it.
    pub fn gpg_signed(&self, from: &str, subject: &str, body: &str) -> Vec<u8> {
        self.gpg_signed_with_part(from, subject, body).0
    }

    /// The same, and the signed MIME part on its own.
    pub fn gpg_signed_with_part(
        &self,
        from: &str,
        subject: &str,
        body: &str,
    ) -> (Vec<u8>, Vec<u8>) {
        let part = embargo_relay::compose::text_part(Some(subject), body);
        (self.gpg_signed_entity(from, subject, &part), part)
    }

    /// Any MIME entity, signed by the PST with `gpg` and sent as multipart/signed.
    pub fn gpg_signed_entity(&self, from: &str, subject: &str, entity: &[u8]) -> Vec<u8> {
        let sig = self.pst_gpg.detach_sign(&self.pst_fpr, entity);
        embargo_relay::compose::multipart_signed(from, LIST, subject, entity, &sig)
    }

    pub fn spool(&self) -> Spool {
        Spool::open(&self.state_dir(), LIST).unwrap()
    }

    pub fn audit(&self) -> Vec<AuditRecord> {
        self.spool().audit_records().unwrap()
    }

    /// Polls the spool until no delivery is pending now (by the real clock).
    pub async fn wait_until_no_pending(&self) {
        self.wait_until_nothing_due(now()).await
    }

    /// Polls the spool until no pending delivery is due at `at`.
    pub async fn wait_until_nothing_due(&self, at: chrono::DateTime<Utc>) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.spool().due(at, 1).unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries still due"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A stand-in for systemd's notification socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    pub fn bind(f: &Fixture) -> NotifySocket {
        let path = f.path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket { socket, path }
    }

    pub fn env(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Every notification that arrives within `window`, with its arrival time.
    pub fn collect(&self, window: Duration) -> Vec<(std::time::Instant, String)> {
        let end = std::time::Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push((
                    std::time::Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    }

    /// Waits for a notification containing `what`; returns everything up to it.
    pub fn wait_for(&self, what: &str) -> Vec<String> {
        let end = std::time::Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == what);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {what} notification; got {seen:?}");
    }
}

/// The daemon binary running as a child process, its log teed to a file.
/// It is told its port: the listening socket is bound here and passed as
/// a service manager passes it (systemd's `LISTEN_FDS`, at the descriptor
/// listenfd's `LISTEN_FDS_FIRST_FD` names: its standard input), and it is
/// ready when it says `READY=1` on a notification socket, as systemd
/// hears it.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// Tells the thread that drains the notification socket to stop.
    done: Arc<AtomicBool>,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Daemon {
        Self::start_with(config, log, &[])
    }

    /// Starts it with extra environment variables (e.g. a failpoint).
    pub fn start_with(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_embargo-relay"));
        command.envs(env.iter().copied());
        Self::spawn(command, config, log)
    }

    /// Runs `embargo-relay run --config config` from `command` (which may
    /// set the user or the environment), its stderr teed to `log`.
    pub fn spawn(command: Command, config: &Path, log: &Path) -> Daemon {
        Self::spawn_with(command, config, log, &[])
    }

    /// [`Daemon::spawn`] with more arguments to `run` (`--new-spool`).
    /// Returns once the daemon said READY, unless `command` names its own
    /// `NOTIFY_SOCKET` (the caller then waits for it).
    pub fn spawn_with(mut command: Command, config: &Path, log: &Path, args: &[&str]) -> Daemon {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let own_notify = !command.get_envs().any(|(k, _)| k == "NOTIFY_SOCKET");
        let done = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        if own_notify {
            let run = RUNS.fetch_add(1, Ordering::SeqCst);
            let path = log.with_extension(format!("{run}.notify"));
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            // The daemon may run as another user (`nobody`).
            std::fs::set_permissions(&path, PermissionsExt::from_mode(0o666)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            command.env("NOTIFY_SOCKET", &path);
            let done = done.clone();
            // Drained as long as the daemon runs, so that its notifications
            // never block on a full queue.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !done.load(Ordering::SeqCst) {
                    if let Ok(n) = socket.recv(&mut buf)
                        && String::from_utf8_lossy(&buf[..n])
                            .lines()
                            .any(|l| l == "READY=1")
                    {
                        let _ = ready_tx.send(());
                    }
                }
            });
        }
        let mut child = command
            .env_remove("JOURNAL_STREAM")
            .env_remove("LISTEN_PID")
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDS_FIRST_FD", "0")
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "embargo_relay=trace,info")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
            }
        });
        let deadline = std::time::Instant::now() + PATIENCE;
        if own_notify {
            loop {
                match ready_rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) => break,
                    Err(_) if child.try_wait().unwrap().is_none() => assert!(
                        std::time::Instant::now() < deadline,
                        "daemon never said READY; log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    ),
                    Err(_) => {
                        // Give the log thread a moment to write the last lines.
                        std::thread::sleep(Duration::from_millis(200));
                        panic!(
                            "daemon did not start; log:\n{}",
                            std::fs::read_to_string(log).unwrap_or_default()
                        )
                    }
                }
            }
        }
        Daemon {
            child,
            addr,
            log: log.to_owned(),
            done,
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits until the daemon's log contains `text`; panics after [`PATIENCE`].
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(text) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the log never said `{text}`:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; returns whether the daemon then exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon to exit on its own (a failpoint); true if it did.
    pub fn wait_exit(&mut self) -> bool {
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Sends `raw` to the daemon with lettre; returns the reply code and text.
pub async fn send(addr: SocketAddr, from: &str, raw: &[u8]) -> Result<String, (u16, String)> {
    send_to(addr, from, LIST, raw).await
}

/// Sends `raw` to `to` (the list or its request address).
pub async fn send_to(
    addr: SocketAddr,
    from: &str,
    to: &str,
    raw: &[u8],
) -> Result<String, (u16, String)> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .build();
    let envelope =
        lettre::address::Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()])
            .unwrap();
    match transport.send_raw(&envelope, raw).await {
        Ok(r) => Ok(r.message().collect::<Vec<_>>().join(" ")),
        Err(e) => {
            let code = e
                .status()
                .map(|c| c.to_string().parse().unwrap_or(0))
                .unwrap_or(0);
            Err((code, e.to_string()))
        }
    }
}

/// Whether `c` was sent by `list`: its envelope sender is one of the
/// list's bounce addresses (`<local>+bounce-<copy id>@<domain>`).
pub fn from_list(c: &embargo_relay::sink::Captured, list: &str) -> bool {
    let (local, domain) = list.split_once('@').unwrap();
    let sender = c.envelope.mail_from.to_ascii_lowercase();
    sender.starts_with(&format!("{local}+bounce-")) && sender.ends_with(&format!("@{domain}"))
}

/// The member copies among what a sink captured (not receipts or releases).
pub fn copies(got: &[embargo_relay::sink::Captured]) -> Vec<&embargo_relay::sink::Captured> {
    with_subject(got, "[embargoed announcement]")
}

/// Announces, signed by the PST with gpg, with an advisory for `public`, two
/// days ahead; returns the embargo id from the reply.
pub async fn announce_with_advisory(f: &Fixture, addr: SocketAddr, public: &str) -> String {
    announce_texts(
        f,
        addr,
        public,
        "CVE-2026-7: x",
        "Details for members.",
        "Public text.",
    )
    .await
    .0
}

/// [`announce_with_advisory`] with its Subject, members' text and public
/// advisory given (e.g. a canary in each), embargoed two days: its id and
/// its lift time.
pub async fn announce_texts(
    f: &Fixture,
    addr: SocketAddr,
    public: &str,
    subject: &str,
    text: &str,
    advisory: &str,
) -> (String, chrono::DateTime<chrono::Utc>) {
    let until =
        chrono::DateTime::from_timestamp((now() + chrono::Duration::days(2)).timestamp(), 0)
            .unwrap();
    let stamp = until.format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!("Embargo-Until: {stamp}\nPublic-To: {public}\n\n{text}\n");
    let entity = embargo_relay::compose::text_with_advisory(subject, &body, advisory);
    let reply = send(addr, PST, &f.gpg_signed_entity(PST, subject, &entity))
        .await
        .expect("accepted");
    (reply.rsplit(' ').next().unwrap().to_owned(), until)
}

/// A command's standard output and error, one after the other (for
/// assertion messages).
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until `n` member copies arrived at `sink`; returns all it captured.
pub async fn wait_copies(
    sink: &embargo_relay::sink::CaptureSink,
    n: usize,
) -> Vec<embargo_relay::sink::Captured> {
    sink.wait_until(PATIENCE, |got| copies(got).len() >= n)
        .await
}

/// Members' notices that an embargo lifted.
pub fn lifted_notices(
    got: &[embargo_relay::sink::Captured],
) -> Vec<&embargo_relay::sink::Captured> {
    with_subject(got, "[embargo lifted]")
}

/// Reminders to the PST.
pub fn reminders(got: &[embargo_relay::sink::Captured]) -> Vec<&embargo_relay::sink::Captured> {
    with_subject(got, "[embargo-relay reminder]")
}

/// The plaintext of every receipt to the PST, decrypted with the PST's key.
pub fn receipt_texts(f: &Fixture, got: &[embargo_relay::sink::Captured]) -> Vec<String> {
    decrypted_for_pst(f, receipts(got), None)
}

/// The same, read at `at` (a manual clock's time, so later signatures verify).
pub fn receipt_texts_at(
    f: &Fixture,
    got: &[embargo_relay::sink::Captured],
    at: chrono::DateTime<Utc>,
) -> Vec<String> {
    decrypted_for_pst(f, receipts(got), Some(at))
}

/// The plaintext of every reminder to the PST, read at `at`.
pub fn reminder_texts_at(
    f: &Fixture,
    got: &[embargo_relay::sink::Captured],
    at: chrono::DateTime<Utc>,
) -> Vec<String> {
    decrypted_for_pst(f, reminders(got), Some(at))
}

/// The plaintext of every refusal notice to the PST.
pub fn refusal_texts(f: &Fixture, got: &[embargo_relay::sink::Captured]) -> Vec<String> {
    decrypted_for_pst(f, with_subject(got, "[embargo-relay refusal]"), None)
}

/// The same, read at `at` (a manual clock's time).
pub fn refusal_texts_at(
    f: &Fixture,
    got: &[embargo_relay::sink::Captured],
    at: chrono::DateTime<Utc>,
) -> Vec<String> {
    decrypted_for_pst(f, with_subject(got, "[embargo-relay refusal]"), Some(at))
}

fn decrypted_for_pst(
    f: &Fixture,
    mails: Vec<&embargo_relay::sink::Captured>,
    at: Option<chrono::DateTime<Utc>>,
) -> Vec<String> {
    let list = f.list.clone().strip_secret_key_material();
    let p = sequoia_openpgp::policy::StandardPolicy::new();
    mails
        .iter()
        .filter_map(|c| {
            embargo_relay::crypto::open_copy_at(
                &p,
                &f.members[0].secret,
                &list,
                armored_payload(&c.raw),
                at,
            )
            .ok()
        })
        .map(|o| String::from_utf8_lossy(o.plaintext.expose()).into_owned())
        .collect()
}

/// The receipts to the PST among what a sink captured.
pub fn receipts(got: &[embargo_relay::sink::Captured]) -> Vec<&embargo_relay::sink::Captured> {
    with_subject(got, "[embargo-relay receipt]")
}

fn with_subject<'a>(
    got: &'a [embargo_relay::sink::Captured],
    subject: &str,
) -> Vec<&'a embargo_relay::sink::Captured> {
    let header = format!("Subject: {subject}\r\n");
    got.iter()
        .filter(|c| find(&c.raw, header.as_bytes()).is_some())
        .collect()
}

/// The armored PGP message inside a captured RFC 3156 copy.
pub fn armored_payload(raw: &[u8]) -> &[u8] {
    let start = find(raw, b"-----BEGIN PGP MESSAGE-----").expect("copy holds a PGP message");
    let end = find(raw, b"-----END PGP MESSAGE-----").expect("armor ends") + 25;
    &raw[start..end]
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Every file below `dir`, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// An S/MIME certificate for `email` (CN `cn`, a fresh RSA 2048 key),
/// issued by the test CA `ca` with `ca_key`: digitalSignature and
/// keyEncipherment, emailProtection, the address in subjectAltName, valid
/// from `from` to `to`. The corpus and the S/MIME tests both make theirs so.
pub fn ca_issued(
    ca: &openssl::x509::X509,
    ca_key: &openssl::pkey::PKey<openssl::pkey::Private>,
    (cn, email, serial): (&str, &str, u32),
    (from, to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
) -> (
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
) {
    use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut subject = openssl::x509::X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", cn).unwrap();
    let subject = subject.build();
    let at = |t: chrono::DateTime<chrono::Utc>| {
        openssl::asn1::Asn1Time::from_unix(t.timestamp()).unwrap()
    };
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(serial).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&at(from)).unwrap();
    b.set_not_after(&at(to)).unwrap();
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
        .build(&b.x509v3_context(Some(ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(ca_key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    (b.build(), key)
}
