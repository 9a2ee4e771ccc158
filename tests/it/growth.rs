//! Issue 14, point 5: growth is bounded. Junk mail from one peer adds an
//! audit record for each of the first eight of a reason and one count for
//! the rest of the minute, written at the latest when the daemon stops; join requests
//! are rate-limited per sender and host.

use embargo_relay::sink::CaptureSink;

use crate::common::*;

const REQUEST: &str = "distributors-announce-request@lists.example.org";

#[tokio::test(flavor = "multi_thread")]
async fn junk_is_counted_not_recorded_one_by_one_and_join_requests_are_limited() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let mut daemon = Daemon::start(&config, &f.path("daemon.log"));
    let before = f.audit().len();
    for i in 0..200 {
        let junk =
            format!("From: <x{i}@junk.example>\r\nTo: {LIST}\r\nSubject: junk\r\n\r\njunk {i}\r\n");
        let (code, _) = send(daemon.addr, "junk@junk.example", junk.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(code, 550);
    }
    let during = f.audit();
    let rejected: Vec<_> = during[before..]
        .iter()
        .filter(|r| r.event == "rejected")
        .collect();
    assert_eq!(
        rejected.len(),
        8,
        "the first eight are recorded at once: {rejected:?}"
    );

    // Join requests: three an hour from one sender, then 450.
    for i in 0..4 {
        let request = format!(
            "From: <a@seven.example>\r\nTo: {REQUEST}\r\nSubject: join {i}\r\n\r\nPlease, {i}.\r\n"
        );
        let answer = send_to(daemon.addr, "a@seven.example", REQUEST, request.as_bytes()).await;
        if i < 3 {
            answer.expect("within the limit");
        } else {
            let (code, text) = answer.unwrap_err();
            assert!(
                code == 450 && text.contains("too many join requests"),
                "{text}"
            );
        }
    }

    // Stopping writes the count: nothing counted is lost.
    assert!(daemon.terminate());
    let after = f.audit();
    let counted: Vec<_> = after[before..]
        .iter()
        .filter(|r| {
            r.event == "rejected" && r.detail.contains("192 more rejections from peer 127.0.0.1")
        })
        .collect();
    assert_eq!(counted.len(), 1, "{:?}", &after[before..]);
    let all_rejected = after[before..]
        .iter()
        .filter(|r| r.event == "rejected")
        .count();
    assert!(
        all_rejected <= 10,
        "200 junk mails and a limited join: {all_rejected} records"
    );
}

/// Connections refused for capacity are counted, and the count reaches the
/// audit trail when the daemon stops, not only at a later refusal.
#[tokio::test(flavor = "multi_thread")]
async fn capacity_refusals_are_counted_and_written_at_shutdown() {
    use tokio::io::AsyncReadExt;
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config_with(
        sink.addr(),
        &Tweaks {
            smtp: vec![
                ("max_sessions", "2".into()),
                ("reserved_sessions", "0".into()),
            ],
            ..Tweaks::default()
        },
    );
    let mut daemon = Daemon::start(&config, &f.path("daemon.log"));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..7 {
        let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
        let mut greeting = [0u8; 128];
        let n = stream.read(&mut greeting).await.unwrap_or(0);
        if greeting[..n].starts_with(b"421") {
            refused += 1;
        }
        held.push(stream);
    }
    assert_eq!(refused, 5);
    assert!(daemon.terminate());
    let records: Vec<String> = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "rejected" && r.detail.contains("too many connections"))
        .map(|r| r.detail)
        .collect();
    let total: u64 = records
        .iter()
        .filter_map(|d| d.split("too many connections: ").nth(1))
        .filter_map(|d| d.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 5, "every refusal counted: {records:?}");
    drop(held);
}

/// Runs `submit` as Postfix's pipe does, with `client` as
/// `${client_address}`; returns the exit code.
fn submit_from_client(config: &std::path::Path, client: &str, raw: &[u8]) -> i32 {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .env_remove("RUST_LOG")
        .args(["submit", "--sender=pst@project.example.org"])
        .arg(format!("--client={client}"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(raw);
    child.wait().unwrap().code().expect("exited, not killed")
}

/// Through `submit` (a process per mail, behind Postfix) junk is counted
/// too, in the spool, per client (an IPv6 client by its /64), and so are
/// the same PST mail sent again and again; the counts are written when
/// the minute has passed or the daemon stops.
#[tokio::test(flavor = "multi_thread")]
async fn junk_and_duplicates_through_submit_are_counted_per_client() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let junk = |i: usize| {
        format!("From: <x{i}@junk.example>\r\nTo: {LIST}\r\nSubject: junk\r\n\r\njunk {i}\r\n")
            .into_bytes()
    };
    for i in 0..20 {
        assert_eq!(submit_from_client(&config, "192.0.2.7", &junk(i)), 77);
    }
    for i in 0..6 {
        // One host's /64, six addresses.
        let client = format!("2001:db8:1:2::{}", i + 1);
        assert_eq!(submit_from_client(&config, &client, &junk(i)), 77);
    }
    let good = f.gpg_signed(PST, "CVE-2026-31: again", &embargoed("again"));
    for _ in 0..12 {
        assert_eq!(submit_from_client(&config, "127.0.0.1", &good), 0);
    }
    let during = f.audit();
    let count = |rows: &[embargo_relay::spool::AuditRecord], event: &str, peer: &str| {
        rows.iter()
            .filter(|r| r.event == event && r.detail.contains(peer))
            .count()
    };
    assert_eq!(
        count(&during, "rejected", "from peer 192.0.2.7 (submit)"),
        8
    );
    assert_eq!(count(&during, "rejected", "from peer 2001:db8:1:2::"), 6);
    assert_eq!(count(&during, "duplicate", "127.0.0.1 (submit)"), 8);

    // The daemon writes the counts when it stops.
    let mut daemon = Daemon::start(&config, &f.path("daemon.log"));
    assert!(daemon.terminate());
    let after = f.audit();
    let counted = |what: &str| after.iter().filter(|r| r.detail.contains(what)).count();
    assert_eq!(
        counted("12 more rejections from peer 192.0.2.7 since"),
        1,
        "{after:?}"
    );
    assert_eq!(
        counted("3 more duplicate submissions from peer 127.0.0.1"),
        1
    );
    assert_eq!(
        counted("more rejections from peer 2001:db8:1:2::/64"),
        0,
        "six in one /64 are within the eight"
    );
}

/// Join requests are limited per host too: ten an hour from one address,
/// whatever the senders, then 450.
#[tokio::test(flavor = "multi_thread")]
async fn join_requests_are_limited_per_host() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    for i in 0..11 {
        let sender = format!("s{i}@many.example");
        let request =
            format!("From: <{sender}>\r\nTo: {REQUEST}\r\nSubject: join {i}\r\n\r\nPlease.\r\n");
        let answer = send_to(daemon.addr, &sender, REQUEST, request.as_bytes()).await;
        if i < 10 {
            answer.expect("within the host's limit");
        } else {
            let (code, text) = answer.unwrap_err();
            assert!(
                code == 450 && text.contains("too many join requests"),
                "{text}"
            );
        }
    }
}
