//! Issue 4, acceptance 2: `embargo-relay submit` as an MTA pipe, with each
//! sysexits code; what it accepts is relayed by the daemon.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use embargo_relay::sink::CaptureSink;

use crate::common::*;

/// Runs `submit` with `raw` on stdin; returns the exit code and stderr.
fn submit(config: &Path, raw: &[u8]) -> (i32, String) {
    submit_from(config, "bounces@project.example.org", raw)
}

/// The same, with `sender` as the envelope sender.
fn submit_from(config: &Path, sender: &str, raw: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .env_remove("RUST_LOG")
        .args(["submit", "--sender", sender, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A child that exits early (bad config) may close stdin first.
    let _ = child.stdin.take().unwrap().write_all(raw);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The MTA's bounce text: one line, the reason, no log lines.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("embargo-relay: "), "{stderr}");
    (out.status.code().expect("exited, not killed"), stderr)
}

/// As Postfix's pipe transport hands a message over: UNIX line ends.
fn unix_line_ends(raw: &[u8]) -> Vec<u8> {
    String::from_utf8(raw.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_answers_the_mta_with_sysexits_and_the_daemon_relays_what_it_accepted() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let canary = "CANARY-submit-7c1e";

    // 0: accepted, from a pipe with UNIX line ends.
    let good = f.gpg_signed(PST, "CVE-2026-11: pipe", &embargoed(canary));
    let (code, stderr) = submit(&config, &unix_line_ends(&good));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("announcement accepted as"), "{stderr}");

    // 0: the same submission again (the MTA lost our answer): accepted once.
    let (code, stderr) = submit(&config, &good);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("already accepted as"), "{stderr}");

    // 77: authorization: the same signature from another sender is a replay.
    let (code, stderr) = submit_from(&config, "someone@elsewhere.example", &good);
    assert_eq!(code, 77, "{stderr}");
    assert!(stderr.contains("replayed announcement"), "{stderr}");

    // 77: unsigned.
    let unsigned = format!("From: {PST}\r\nTo: {LIST}\r\nSubject: x\r\n\r\n{canary}\r\n");
    let (code, stderr) = submit(&config, unsigned.as_bytes());
    assert_eq!(code, 77, "{stderr}");
    assert!(stderr.contains("not PGP/MIME signed"), "{stderr}");
    assert!(!stderr.contains(canary), "no content in the reason");

    // 65: malformed: two From headers.
    let two_from = format!("From: {PST}\r\nFrom: {GPG_MEMBER}\r\n\r\n{canary}\r\n");
    let (code, stderr) = submit(&config, two_from.as_bytes());
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("exactly one From"), "{stderr}");

    // 65: a bare CR, which SMTP refuses in DATA, is refused from a pipe too.
    let bare_cr = String::from_utf8(f.gpg_signed(PST, "CVE-2026-13: cr", &embargoed("x")))
        .unwrap()
        .replacen("\r\n\r\n", "\r\n\r\r\n", 1);
    let (code, stderr) = submit(&config, bare_cr.as_bytes());
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("bare CR"), "{stderr}");

    // 65: larger than max_message_size (1 MiB in the fixture).
    let (code, stderr) = submit(&config, &vec![b'x'; 1024 * 1024 + 10]);
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("larger than the limit"), "{stderr}");

    // 75: the spool cannot be opened (its directory is a file): the MTA retries.
    let broken = f.path("broken.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("state_dir = \"state\"", "state_dir = \"not-a-dir\"");
    std::fs::write(f.path("not-a-dir"), b"a file").unwrap();
    std::fs::write(&broken, text).unwrap();
    let other = f.gpg_signed(PST, "CVE-2026-12: later", &embargoed("later"));
    let (code, stderr) = submit(&broken, &other);
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("cannot open the spool"), "{stderr}");

    // 75, never clap's 2: arguments it cannot parse (an envelope sender
    // starting with '-' passed without '=').
    let out = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["submit", "--sender", "-oops", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line for the bounce: {stderr}"
    );

    // 75: a configuration that does not load.
    let (code, stderr) = submit(&f.path("missing.toml"), &other);
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("cannot load the configuration"), "{stderr}");

    let rejected = f
        .audit()
        .iter()
        .filter(|r| r.event == "rejected" && r.detail.contains("stdin (submit)"))
        .count();
    assert_eq!(rejected, 5, "one audit record per rejection");

    // The daemon, started afterwards, relays what submit committed.
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    let got = wait_copies(&sink, f.usable_members().count()).await;
    assert_eq!(copies(&got).len(), f.usable_members().count());
    for c in copies(&got) {
        assert!(find(&c.raw, canary.as_bytes()).is_none(), "sent encrypted");
    }
    f.wait_until_no_pending().await;
    drop(daemon);
}

/// Issue 16: with several lists in the file, `submit` takes the list from
/// `--recipient` (a list or its request address); without one it cannot
/// choose, and the MTA keeps the mail (75); a recipient that is no list
/// here is 67; a mail for B goes into B's spool alone.
#[tokio::test(flavor = "multi_thread")]
async fn submit_routes_by_recipient_among_several_lists() {
    use crate::lists::{LIST_B, two_lists};
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = two_lists(&f, sink.addr(), &[1]);
    let until = (now() + chrono::Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ");
    let mail = f.gpg_signed(
        PST,
        "CVE-2026-164: via submit",
        &format!("Embargo-Until: {until}\nList: {LIST_B}\n\nFor B.\n"),
    );
    let run = |recipient: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_embargo-relay"));
        command
            .env_remove("RUST_LOG")
            .args(["submit", "--sender", PST, "--config"])
            .arg(&config);
        if let Some(r) = recipient {
            command.arg(format!("--recipient={r}"));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(&mail);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(None);
    assert!(
        code == 75 && stderr.contains("--recipient"),
        "{code} {stderr}"
    );
    let (code, stderr) = run(Some("nobody@lists.example.org"));
    assert!(code == 67 && stderr.contains(LIST_B), "{code} {stderr}");
    // Sent to A, it names B: refused (77), and nothing is kept for A.
    let (code, stderr) = run(Some(LIST));
    assert!(
        code == 77 && stderr.contains("does not name this list"),
        "{code} {stderr}"
    );
    let (code, stderr) = run(Some(&LIST_B.to_uppercase()));
    assert_eq!(code, 0, "{stderr}");
    let spool = f.spool();
    assert!(spool.embargoes().unwrap().is_empty(), "nothing on A");
    assert_eq!(spool.for_list(LIST_B).embargoes().unwrap().len(), 1);
}
