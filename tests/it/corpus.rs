//! Issue 6: the hostile-input corpus. Every file under `tests/corpus/mail`
//! and `tests/corpus/smtp` is one attack, fed through the real SMTP
//! listener of a running list. Its first lines (`#! key: value`, stripped
//! before sending) say what must happen; see `tests/corpus/README.md`.
//!
//! For each refused case: the reply has the expected code and names the
//! problem, carries no plaintext, an audit record says why, nothing was
//! accepted, and the very next good announcement is accepted. At the end,
//! every member copy is one of an accepted mail, none holds unsigned text,
//! and nothing went to a public list before its time.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use embargo_relay::clock::{Clock, ManualClock};
use embargo_relay::sink::{CaptureSink, Captured};
use embargo_relay::spool::Spool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::{Gpg, PATIENCE, armored_payload, find, run_in_process, send};
pub use crate::common::{LIST, PST};
use crate::corpus_make::{addr_of, load};

/// The corpus's fixed clock: signatures in it were made an hour before.
pub const CORPUS_NOW: &str = "2026-11-20T12:00:00Z";
pub const KEYS_BORN: &str = "2026-11-01T00:00:00Z";
pub const EMBARGO_UNTIL: &str = "2026-11-23T12:00:00Z";
pub const MEMBER: &str = "security@distro-a.example";
const PUBLIC: &str = "security-announce@project.example.org";

/// Text that must never appear where a reason, a log or a clear mail is
/// read (`QZ7CANARY`: what a refusal could quote).
const PLAINTEXT: &[&str] = &["EMBARGOED-PLAINTEXT", "UNSIGNED-INJECTED", "QZ7CANARY"];

/// The roster: the PST, one distributor, and the PST keys no policy accepts.
const ROSTER: &[&str] = &[
    "pst",
    "member",
    "pst-expired",
    "pst-revoked-hard",
    "pst-revoked-soft",
    "pst-not-yet-valid",
    "pst-no-sign-flag",
    "pst-rsa1024",
    "pst-dsa",
    "pst-smime-expired",
];

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().into()
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

pub fn key_path(stem: &str) -> PathBuf {
    corpus_dir().join("keys").join(format!("{stem}.key"))
}

/// One corpus file: its directives and the bytes that are sent.
pub struct Case {
    pub name: String,
    directives: Vec<(String, String)>,
    pub bytes: Vec<u8>,
}

impl Case {
    pub fn read(path: &Path) -> Case {
        let raw = std::fs::read(path).unwrap();
        let mut directives = Vec::new();
        let mut rest = &raw[..];
        while rest.starts_with(b"#! ") {
            let end = rest.iter().position(|b| *b == b'\n').unwrap();
            let line = String::from_utf8_lossy(&rest[3..end]).into_owned();
            let (k, v) = line.split_once(':').expect("`#! key: value`");
            directives.push((k.trim().to_owned(), v.trim().to_owned()));
            rest = &rest[end + 1..];
        }
        Case {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            directives,
            bytes: rest.to_vec(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `expect: CODE rest`: the code, and the text the reply must contain.
    fn expect(&self) -> (u16, String) {
        let e = self
            .get("expect")
            .unwrap_or_else(|| panic!("{}: no `expect`", self.name));
        let (code, rest) = e.split_once(' ').unwrap_or((e, ""));
        (code.parse().unwrap(), rest.to_owned())
    }
}

pub fn cases(dir: &str) -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| Case::read(p)).collect()
}

/// A list on a manual clock at `CORPUS_NOW`, its roster from the corpus keys.
pub struct CorpusList {
    _dir: tempfile::TempDir,
    pub sink: CaptureSink,
    pub clock: ManualClock,
    pub running: embargo_relay::daemon::Running,
    state: PathBuf,
    good: usize,
}

impl CorpusList {
    pub async fn start(state: Option<&Path>) -> CorpusList {
        let dir = tempfile::tempdir().unwrap();
        let sink = CaptureSink::start().await.unwrap();
        let state = state
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("state"));
        let path = Self::write_config(dir.path(), &state, sink.addr());
        let clock = ManualClock::new(t(CORPUS_NOW));
        let running = run_in_process(&path, &clock).await;
        CorpusList {
            _dir: dir,
            sink,
            clock,
            running,
            state,
            good: 0,
        }
    }

    /// The list's config in `dir`, its roster the corpus keys; returns its path.
    pub fn write_config(dir: &Path, state: &Path, sink: SocketAddr) -> PathBuf {
        let mut text = format!(
            "[list]\naddress = \"{LIST}\"\nsecret_key = \"{}\"\nstate_dir = \"{}\"\n\n\
[inbound.smtp]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"1MiB\"\nmax_sessions = 8\n\
command_timeout = \"2s\"\ndata_timeout = \"2s\"\nsession_timeout = \"60s\"\n\n\
[outbound]\nsmarthost = \"smtp://{}\"\nretry_initial = \"1s\"\nretry_max = \"2s\"\n\n\
[public]\nrecipients = [\"{PUBLIC}\"]\n",
            key_path("list").display(),
            state.display(),
            sink
        );
        for stem in ROSTER {
            let public = dir.join(format!("{stem}.asc"));
            let cert = load(stem).strip_secret_key_material();
            std::fs::write(
                &public,
                embargo_relay::crypto::armored_public(&cert).unwrap(),
            )
            .unwrap();
            // PST members with a pinned S/MIME certificate (issue 18).
            let smime = match *stem {
                "pst" => Some("smime-pst"),
                "pst-smime-expired" => Some("smime-expired"),
                _ => None,
            }
            .map(|c| {
                format!(
                    "smime_cert = \"{}\"\n",
                    key_path(c).with_extension("pem").display()
                )
            })
            .unwrap_or_default();
            text.push_str(&format!(
                "\n[[member]]\nemail = \"{}\"\norganization = \"Org {stem}\"\nkey = \"{}\"\npst = {}\n{smime}",
                addr_of(stem),
                public.display(),
                *stem != "member"
            ));
        }
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.smtp_addr
    }

    pub fn spool(&self) -> Spool {
        Spool::open(&self.state, LIST).unwrap()
    }

    pub fn audit(&self) -> Vec<embargo_relay::spool::AuditRecord> {
        self.spool().audit_records().unwrap()
    }

    pub fn accepted(&self) -> usize {
        self.audit()
            .iter()
            .filter(|r| r.event == "accepted")
            .count()
    }

    /// A fresh, genuine announcement, signed now by the PST's key.
    pub fn good_mail(&mut self) -> Vec<u8> {
        self.good += 1;
        let p = crate::common::now(); // only to make the text unique per run
        let part = embargo_relay::compose::text_part(
            Some(&format!("CVE-2026-1{:03}: good", self.good)),
            &format!(
                "Embargo-Until: {EMBARGO_UNTIL}\n\nGOOD-MESSAGE {} {}\n",
                self.good,
                p.timestamp_nanos_opt().unwrap_or_default()
            ),
        );
        let policy = embargo_relay::crypto::policy();
        let sig = embargo_relay::crypto::sign_detached(
            &policy,
            &load("pst"),
            self.clock.now() - chrono::Duration::minutes(1),
            &part,
        )
        .unwrap();
        embargo_relay::compose::multipart_signed(PST, LIST, "good", &part, &sig)
    }

    /// The daemon still serves: a good announcement is accepted.
    pub async fn still_serving(&mut self, after: &str) {
        let good = self.good_mail();
        send(self.addr(), PST, &good)
            .await
            .unwrap_or_else(|e| panic!("after {after}: a good announcement was refused: {e:?}"));
    }

    pub async fn wait_until_nothing_due(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.spool().due(self.clock.now(), 1).unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries still due"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn to(c: &Captured, who: &str) -> bool {
    c.envelope.rcpt_to.iter().any(|r| r == who)
}

/// The header field names of a mail, lowercased.
fn header_names(raw: &[u8]) -> BTreeSet<String> {
    let end = find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end])
        .split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .collect()
}

fn header_block(raw: &[u8]) -> String {
    let end = find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn assert_no_plaintext(what: &str, text: &str) {
    for p in PLAINTEXT {
        assert!(!text.contains(p), "{what} carries plaintext: {text}");
    }
}

/// A new audit record names the problem.
/// (Refusals in the SMTP session are written off the session's task, so
/// the record may land a moment after the reply.)
async fn assert_audited(list: &CorpusList, before: usize, case: &str, reason: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut audit = list.audit();
    while !audit[before..].iter().any(|r| r.detail.contains(reason))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        audit = list.audit();
    }
    let new = &audit[before..];
    assert!(
        new.iter().any(|r| r.detail.contains(reason)),
        "{case}: no audit record saying {reason:?}; new records: {:?}",
        new.iter()
            .map(|r| format!("{} {}", r.event, r.detail))
            .collect::<Vec<_>>()
    );
    for r in new {
        assert_no_plaintext(&format!("{case}: audit record"), &r.detail);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_mail_in_the_corpus_is_refused_and_the_daemon_keeps_serving() {
    let mut list = CorpusList::start(None).await;
    // The header fields the relay itself writes, from a good announcement.
    list.still_serving("start").await;
    list.sink
        .wait_until(PATIENCE, |g| g.iter().any(|c| to(c, MEMBER)))
        .await;
    list.wait_until_nothing_due().await;
    let generated: BTreeSet<String> = list
        .sink
        .captured()
        .iter()
        .flat_map(|c| header_names(&c.raw))
        .collect();

    let all = cases("mail");
    assert!(all.len() >= 50, "the corpus is there: {} cases", all.len());
    let (release, others): (Vec<&Case>, Vec<&Case>) =
        all.iter().partition(|c| c.get("check") == Some("release"));
    let mut counted = false;
    for case in others.iter().chain(release.iter()) {
        if !counted && case.get("check") == Some("release") {
            // Before any embargo lifts (and notices follow): exactly one
            // member copy per accepted mail.
            counted = true;
            list.wait_until_nothing_due().await;
            let copies = list
                .sink
                .captured()
                .iter()
                .filter(|c| to(c, MEMBER))
                .count();
            assert_eq!(copies, list.accepted(), "one member copy per accepted mail");
        }
        let name = &case.name;
        let (code, reason) = case.expect();
        let accepted_before = list.accepted();
        let audit_before = list.audit().len();
        let captured_before = list.sink.captured().len();
        if let Some(primer) = case.get("prime") {
            let primer = Case::read(&corpus_dir().join("primers").join(primer));
            send(list.addr(), PST, &primer.bytes)
                .await
                .unwrap_or_else(|e| panic!("{name}: primer refused: {e:?}"));
        }
        if case.get("send") == Some("twice") {
            send(list.addr(), PST, &case.bytes)
                .await
                .unwrap_or_else(|e| panic!("{name}: first send refused: {e:?}"));
        }
        let primed = list.accepted() - accepted_before;
        // A replay comes from someone else's envelope: the same submission
        // again under the same envelope is answered as accepted
        // (tests/it/resubmit.rs).
        let sender = if case.get("send") == Some("twice") {
            "replayer@attacker.example"
        } else {
            PST
        };
        let reply = send(list.addr(), sender, &case.bytes).await;
        // CORPUS_SHOW=1 prints every reply and checks only the code: for
        // writing the `expect` line of a new case.
        let show = std::env::var_os("CORPUS_SHOW").is_some() && std::env::var_os("CI").is_none();
        if show {
            eprintln!("{name}: {reply:?}");
        }
        if code == 250 {
            reply.unwrap_or_else(|e| panic!("{name}: refused: {e:?}"));
            list.sink
                .wait_until(PATIENCE, |g| {
                    g[captured_before..].iter().any(|c| to(c, MEMBER))
                })
                .await;
            list.wait_until_nothing_due().await;
            let got = list.sink.captured();
            for c in &got[captured_before..] {
                let headers = header_block(&c.raw);
                let names = header_names(&c.raw);
                assert!(
                    names.is_subset(&generated),
                    "{name}: a header field the relay did not write: {:?}",
                    names.difference(&generated).collect::<Vec<_>>()
                );
                assert!(
                    !headers.contains("attacker.example") && !headers.contains('\0'),
                    "{name}: injected into the headers: {headers}"
                );
                let from = headers
                    .split("\r\n")
                    .find(|l| l.starts_with("From: "))
                    .unwrap();
                assert!(
                    from.contains(LIST),
                    "{name}: outbound From is the list: {from}"
                );
                if !to(c, PUBLIC) {
                    // Whatever goes to a member or the PST is encrypted.
                    assert_no_plaintext(name, &String::from_utf8_lossy(&c.raw));
                }
            }
            if case.get("check") == Some("outbound-headers") {
                check_protected_headers(&got[captured_before..], name, list.clock.now());
            }
            drop(got);
            if case.get("check") == Some("release") {
                check_release(&mut list, name).await;
            }
            continue;
        }
        let (got_code, text) = reply.err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(got_code, code, "{name}: {text}");
        assert!(
            show || text.contains(&reason),
            "{name}: the reply {text:?} should say {reason:?}"
        );
        assert_no_plaintext(&format!("{name}: reply"), &text);
        assert_eq!(
            list.accepted() - accepted_before,
            primed,
            "{name}: accepted"
        );
        if !show {
            assert_audited(&list, audit_before, name, &reason).await;
        }
        list.still_serving(name).await;
    }

    // No member copy (or later notice) holds unsigned text.
    assert!(counted, "the release case ran");
    list.wait_until_nothing_due().await;
    let got = list.sink.captured();
    let member_copies: Vec<&Captured> = got.iter().filter(|c| to(c, MEMBER)).collect();
    let p = embargo_relay::crypto::policy();
    let list_cert = load("list").strip_secret_key_material();
    let member = load("member");
    for c in member_copies {
        let opened = embargo_relay::crypto::open_copy_at(
            &p,
            &member,
            &list_cert,
            armored_payload(&c.raw),
            Some(list.clock.now()),
        )
        .expect("a member copy opens");
        let text = String::from_utf8_lossy(opened.plaintext.expose()).into_owned();
        assert!(
            !text.contains("UNSIGNED-INJECTED"),
            "unsigned text relayed: {text}"
        );
    }
    list.running.shutdown().await;
}

/// Inside each member copy, the header block the relay wrote (the protected
/// headers before the signed entity) holds no NUL and no line of a header
/// field the relay does not write: a Subject carrying CR/LF/NUL injected
/// nothing.
fn check_protected_headers(got: &[Captured], name: &str, now: DateTime<Utc>) {
    let p = embargo_relay::crypto::policy();
    let list_cert = load("list").strip_secret_key_material();
    let member = load("member");
    let copies: Vec<&Captured> = got.iter().filter(|c| to(c, MEMBER)).collect();
    assert!(!copies.is_empty(), "{name}: no member copy");
    for c in copies {
        let opened = embargo_relay::crypto::open_copy_at(
            &p,
            &member,
            &list_cert,
            armored_payload(&c.raw),
            Some(now),
        )
        .expect("the member copy opens");
        let text = opened.plaintext.expose();
        let block = header_block(text);
        assert!(
            !block.contains('\0'),
            "{name}: NUL in the protected headers: {block:?}"
        );
        for line in String::from_utf8_lossy(text).split("\r\n") {
            assert!(
                !line.to_ascii_lowercase().starts_with("bcc:"),
                "{name}: an injected header line in the copy: {line:?}"
            );
        }
    }
}

/// At the embargo time, the held advisory goes to the public list and
/// verifies, byte for byte, against the list key in GnuPG: dot-stuffing and
/// line ends survived the trip.
async fn check_release(list: &mut CorpusList, name: &str) {
    let before = list
        .sink
        .captured()
        .iter()
        .filter(|c| to(c, PUBLIC))
        .count();
    assert_eq!(before, 0, "{name}: nothing public before the time");
    list.clock
        .set(t(EMBARGO_UNTIL) + chrono::Duration::seconds(1));
    let got = list
        .sink
        .wait_until(PATIENCE, |g| g.iter().any(|c| to(c, PUBLIC)))
        .await;
    let release = got.iter().find(|c| to(c, PUBLIC)).unwrap_or_else(|| {
        let trail: Vec<String> = list
            .audit()
            .iter()
            .filter(|r| !r.event.starts_with("lifted") && r.event != "skipped" && r.event != "sent")
            .map(|r| format!("{} {}", r.event, r.detail))
            .collect();
        panic!("{name}: no release at the embargo time; last audit records: {trail:#?}")
    });
    let signed = embargo_relay::intake::mime::parse_signed(&release.raw).unwrap();
    let gpg = Gpg::new();
    let list_cert = load("list").strip_secret_key_material();
    gpg.import(&embargo_relay::crypto::armored_public(&list_cert).unwrap());
    gpg.verify(&signed.signature, signed.signed_part.expose())
        .unwrap_or_else(|e| panic!("{name}: the release does not verify in GnuPG: {e}"));
    let part = signed.signed_part.expose();
    for line in [
        &b"\r\n.\r\n"[..],
        b"\r\n..two dots\r\n",
        b"\r\n.leading dot\r\n",
    ] {
        assert!(
            find(part, line).is_some(),
            "{name}: {:?} lost on the way out:\n{}",
            String::from_utf8_lossy(line),
            String::from_utf8_lossy(part)
        );
    }
    for (i, b) in release.raw.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(release.raw.get(i + 1), Some(&b'\n'), "{name}: bare CR sent"),
            b'\n' => assert_eq!(release.raw[i - 1], b'\r', "{name}: bare LF sent"),
            _ => {}
        }
    }
}

/// Speaks a `.smtp` case: command by command until 354, then the rest at
/// once (or, with `pipelined`, everything at once); returns every line the
/// server sent and whether it closed the connection.
async fn speak(addr: SocketAddr, case: &Case) -> (Vec<String>, bool) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut lines = Vec::new();
    async fn reply(
        r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
        lines: &mut Vec<String>,
    ) -> Option<String> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(PATIENCE, r.read_line(&mut line))
                .await
                .expect("the server answers")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            lines.push(line.clone());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(line);
            }
        }
    }
    let greeting = reply(&mut r, &mut lines).await;
    let mut rest = &case.bytes[..];
    if greeting.as_deref().is_some_and(|g| g.starts_with("220")) {
        if case.get("pipelined") == Some("yes") {
            w.write_all(rest).await.unwrap();
            rest = &[];
        }
        while !rest.is_empty() {
            let end = find(rest, b"\r\n").map(|i| i + 2).unwrap_or(rest.len());
            let _ = w.write_all(&rest[..end]).await;
            rest = &rest[end..];
            match reply(&mut r, &mut lines).await {
                Some(l) if l.starts_with("354") => {
                    let _ = w.write_all(rest).await;
                    rest = &[];
                }
                Some(l) if l.starts_with("421") => break,
                Some(_) => {}
                None => break,
            }
        }
    }
    // Held open, the end of the stream can only be the server hanging up.
    if case.get("hold") != Some("open") && case.get("closed") != Some("yes") {
        let _ = w.shutdown().await;
    }
    // Read to the end: the server closes (QUIT, an error, or a timeout).
    let closed = loop {
        match reply(&mut r, &mut lines).await {
            Some(_) => continue,
            None => break true,
        }
    };
    drop(w);
    (lines, closed)
}

fn assert_said(case: &Case, lines: &[String]) {
    let (code, rest) = case.expect();
    let code = code.to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&code) && l.contains(&rest)),
        "{}: no `{code} {rest}` in {lines:?}",
        case.name
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_smtp_session_in_the_corpus_yields_no_message() {
    let mut list = CorpusList::start(None).await;
    let all = cases("smtp");
    assert!(all.len() >= 12, "the corpus is there: {} cases", all.len());
    for case in all.iter().filter(|c| c.get("disk").is_none()) {
        let name = &case.name;
        let accepted_before = list.accepted();
        let audit_before = list.audit().len();
        let mut idle = Vec::new();
        if let Some(n) = case.get("idle-connections") {
            for _ in 0..n.parse::<usize>().unwrap() {
                // Each is taken (greeted) or turned away before the next.
                let mut c = BufReader::new(TcpStream::connect(list.addr()).await.unwrap());
                let mut first = String::new();
                tokio::time::timeout(PATIENCE, c.read_line(&mut first))
                    .await
                    .expect("the listener answers")
                    .unwrap();
                assert!(
                    first.starts_with("220") || first.starts_with("421"),
                    "{first}"
                );
                idle.push(c);
            }
        }
        let (lines, closed) = speak(list.addr(), case).await;
        assert_said(case, &lines);
        if case.get("closed") == Some("yes") {
            assert!(closed, "{name}: the session must be closed: {lines:?}");
            let last = lines.last().unwrap();
            assert!(
                last.starts_with("554"),
                "{name}: nothing read after the refusal: {lines:?}"
            );
        }
        for l in &lines {
            assert_no_plaintext(name, l);
        }
        assert_eq!(
            list.accepted(),
            accepted_before,
            "{name}: a message was accepted"
        );
        let (_, reason) = case.expect();
        assert_audited(&list, audit_before, name, &reason).await;
        drop(idle);
        // The idle sessions end at the command timeout; then the list serves.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let good = list.good_mail();
            match send(list.addr(), PST, &good).await {
                Ok(_) => break,
                Err((421, _)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("after {name}: a good announcement was refused: {e:?}"),
            }
        }
    }
    list.wait_until_nothing_due().await;
    let got = list.sink.captured();
    assert_eq!(
        got.iter().filter(|c| to(c, MEMBER)).count(),
        list.accepted(),
        "only the good announcements reached the member"
    );
    list.running.shutdown().await;
}

/// A full disk while spooling: `451`, never `250`, and nothing is lost once
/// there is room again. The spool lives on a small tmpfs, filled to the brim.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_while_spooling_answers_4xx_never_250() {
    let case = cases("smtp")
        .into_iter()
        .find(|c| c.get("disk") == Some("full"))
        .expect("the disk-full case");
    let mount = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "corpus-spool"])
        .arg(mount.path())
        .status()
        .expect("mount runs");
    assert!(
        status.success(),
        "this test needs root to mount a small tmpfs (the CI machine runs as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let state = mount.path().join("state");
    let mut list = CorpusList::start(Some(&state)).await;
    list.still_serving("start").await;
    list.wait_until_nothing_due().await;
    let accepted_before = list.accepted();

    // Fill what is left of the file system.
    let filler_path = mount.path().join("filler");
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(&filler_path).unwrap();
        let block = vec![0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.sync_all();
    }
    let (lines, _) = speak(list.addr(), &case).await;
    assert_said(&case, &lines);
    assert!(
        !lines.iter().any(|l| l.contains("announcement accepted")),
        "never 250 on a full disk: {lines:?}"
    );

    // Room again: the same session goes through.
    std::fs::remove_file(&filler_path).unwrap();
    let (lines, _) = speak(list.addr(), &case).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("250 2.0.0 announcement accepted")),
        "accepted once there is room: {lines:?}"
    );
    assert_eq!(list.accepted(), accepted_before + 1);
    list.running.shutdown().await;
}

/// `check` names every roster key that no announcement can come from, and
/// says why, so the operator hears of it before the PST's next mail fails.
#[test]
fn check_names_every_corpus_key_the_policy_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = CorpusList::write_config(
        dir.path(),
        &dir.path().join("state"),
        "127.0.0.1:25".parse().unwrap(),
    );
    let findings = embargo_relay::check::findings(&path, t(CORPUS_NOW));
    let about = |stem: &str| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.field.contains(&addr_of(stem)))
            .map(|f| f.problem.clone())
            .collect()
    };
    for (stem, says) in [
        ("pst-expired", "expired"),
        ("pst-revoked-hard", "revoked"),
        ("pst-revoked-soft", "revoked"),
        ("pst-no-sign-flag", "no usable signing key"),
        ("pst-rsa1024", "RSA under 2048 bits"),
        ("pst-dsa", "DSA, ElGamal"),
    ] {
        let problems = about(stem);
        assert!(
            problems.iter().any(|p| p.contains(says)),
            "{stem}: check should say {says:?}: {problems:?}"
        );
    }
    assert!(about("pst").is_empty(), "{:?}", about("pst"));
    assert!(about("member").is_empty(), "{:?}", about("member"));
}
