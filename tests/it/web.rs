//! Issue 19 (first part): the status API and `/metrics`. A held embargo
//! with delivered and skipped copies; the API answers with ids, times,
//! addresses and states, behind the bearer token, with strict headers; a
//! canary in the announcement's Subject, text and public advisory appears
//! in no answer.

use std::net::SocketAddr;

use embargo_relay::clock::Clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef-test-token";
const CANARY: &str = "QZ7CANARY";

/// A member whose key stops receiving in 20 days (from now).
const EXPIRING_MEMBER: &str = "security@expiring-e.example";

/// The fixture's list with `[http]` on a loopback port and the token, and
/// one more member whose key expires in 20 days ([`EXPIRING_MEMBER`]).
async fn with_http(f: &Fixture) -> (InProcess, SocketAddr) {
    std::fs::write(f.path("http-token"), format!("{TOKEN}\n")).unwrap();
    let cert = embargo_relay::crypto::generate_key(
        &format!("E <{EXPIRING_MEMBER}>"),
        now() - chrono::Duration::hours(1),
        Some(std::time::Duration::from_secs(20 * 86_400)),
    )
    .unwrap();
    std::fs::write(
        f.path("keys/expiring.asc"),
        embargo_relay::crypto::armored_public(&cert).unwrap(),
    )
    .unwrap();
    let daemon = f
        .start_in_process(&Tweaks {
            extra: "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"http-token\"\n".into(),
            members: vec![(
                EXPIRING_MEMBER.to_owned(),
                "Expiring E".to_owned(),
                "keys/expiring.asc".to_owned(),
            )],
            ..Tweaks::default()
        })
        .await;
    let http = daemon.running.http_addr.expect("[http] listens");
    (daemon, http)
}

/// A GET over plain HTTP/1.1: (status, header block, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_api_and_metrics_show_states_never_content() {
    let f = Fixture::new();
    let (daemon, http) = with_http(&f).await;
    let (id, lift) = announce_texts(
        &f,
        daemon.addr(),
        PUBLIC_DEFAULT,
        &format!("CVE-2026-19: {CANARY} in the subject"),
        &format!("{CANARY} details for members."),
        &format!("{CANARY} advisory"),
    )
    .await;
    // The fixture's usable members and the one whose key expires later.
    let usable = f.usable_members().count() + 1;
    wait_copies(&daemon.sink, usable).await;
    wait_settled(&daemon.running.relay, daemon.clock.now()).await;

    // Without the token: 401, and still the strict headers.
    for path in [
        "/api/v1/lists",
        "/metrics",
        &format!("/api/v1/lists/{LIST}/embargoes/{id}"),
    ] {
        let (status, head, _) = get(http, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(head.contains("www-authenticate: Bearer"), "{head}");
        let (status, _, _) = get(http, path, Some("wrong-token-of-the-wrong-length")).await;
        assert_eq!(status, 401, "{path}");
    }

    let mut answers = Vec::new();
    let (status, head, lists) = get(http, "/api/v1/lists", Some(TOKEN)).await;
    assert_eq!(status, 200, "{lists}");
    for h in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
        "x-frame-options: DENY",
    ] {
        assert!(
            head.to_lowercase().contains(&h.to_lowercase()),
            "{h}: {head}"
        );
    }
    let v: serde_json::Value = serde_json::from_str(&lists).unwrap();
    let list = &v["lists"][0];
    assert_eq!(list["address"], LIST);
    let e = list["embargoes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.as_str())
        .expect("the embargo by its id");
    assert_eq!(e["state"], "held");
    assert!(e["seconds_to_lift"].as_i64().unwrap() > 86_400);
    assert_eq!(e["copies"]["sent"].as_u64().unwrap() as usize, usable);
    assert_eq!(e["copies"]["skipped"], 2, "the expired and the missing key");
    assert_eq!(e["releases"][0]["to"], PUBLIC_DEFAULT);
    let expiry = list["key_expiry"].as_array().unwrap();
    assert_eq!(expiry.len(), 6, "every member: {expiry:?}");
    assert!(
        expiry.iter().any(|k| k["member"] == SQ_MEMBER
            && k["days_left"].is_null()
            && k["kind"] == "openpgp")
    );
    // Soonest first: the keys that cannot receive now (0 days), then the
    // one that stops in 20 days (19 whole days from now), then the rest.
    let days: Vec<Option<i64>> = expiry.iter().map(|k| k["days_left"].as_i64()).collect();
    let expiring = expiry
        .iter()
        .position(|k| k["member"] == EXPIRING_MEMBER)
        .expect("the expiring member");
    assert_eq!(days[expiring], Some(19), "{expiry:?}");
    assert!(
        days[..expiring].iter().all(|d| d.is_some_and(|d| d <= 19)),
        "{days:?}"
    );
    assert!(days[expiring + 1..].iter().all(Option::is_none), "{days:?}");
    let keys = list["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["member"] == EXPIRED_MEMBER && k["unusable"] == true),
        "{keys:?}"
    );
    answers.push(lists);

    let (status, _, one) = get(
        http,
        &format!("/api/v1/lists/{LIST}/embargoes/{id}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    let members = v["members"].as_array().unwrap();
    let state = |who: &str| {
        members
            .iter()
            .find(|m| m["address"] == who)
            .map(|m| m["state"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(state(SQ_MEMBER), "sent");
    assert_eq!(state(EXPIRED_MEMBER), "skipped");
    assert!(members.iter().all(|m| m["acknowledged"] == false));
    assert!(members.iter().any(|m| m["organization"] == "Org 2"));
    answers.push(one);

    let (status, head, metrics) = get(http, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    for line in [
        format!(
            "embargo_relay_deliveries{{list=\"{LIST}\",kind=\"copy\",state=\"sent\"}} {usable}"
        ),
        format!("embargo_relay_embargoes{{list=\"{LIST}\",state=\"held\"}} 1"),
        format!("embargo_relay_spool_damaged{{list=\"{LIST}\"}} 0"),
    ] {
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    let next = metrics
        .lines()
        .find(|l| l.starts_with("embargo_relay_next_release_seconds{"))
        .expect(&metrics);
    assert!(
        next.rsplit(' ').next().unwrap().parse::<i64>().unwrap() > 86_400,
        "{next}"
    );
    // A key that can no longer receive counts as expiring now.
    assert!(
        metrics.contains(&format!(
            "embargo_relay_key_expiry_days_min{{list=\"{LIST}\"}} 0"
        )),
        "{metrics}"
    );
    answers.push(metrics);

    let (status, _, audit) = get(
        http,
        &format!("/api/v1/lists/{LIST}/audit?limit=5"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert!(v["audit"].as_array().unwrap().len() <= 5);
    answers.push(audit);
    let (status, _, audit) = get(http, &format!("/api/v1/lists/{LIST}/audit"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(audit.contains(&format!("\"embargo\":\"{id}\"")), "{audit}");
    answers.push(audit);
    for (path, expect) in [
        ("/api/v1/lists/nobody@lists.example.org/embargoes/x", 404),
        (
            &format!("/api/v1/lists/{LIST}/embargoes/0000000000000000") as &str,
            404,
        ),
        ("/nothing-here", 404),
    ] {
        let (status, _, body) = get(http, path, Some(TOKEN)).await;
        assert_eq!(status, expect, "{path}");
        answers.push(body);
    }
    // A refused mail and the release at the lift are counted. The refused
    // mail's own words (its From name, Subject, text) appear in no answer:
    // the audit trail as the API shows it names what was wrong, not what
    // the mail said.
    let junk = format!(
        "From: \"{CANARY} sender\" <{PST}>\r\nTo: {LIST}\r\nSubject: {CANARY} subject\r\n\r\n{CANARY} unsigned text\r\n"
    );
    assert!(send(daemon.addr(), PST, junk.as_bytes()).await.is_err());
    let (status, _, audit) = get(http, &format!("/api/v1/lists/{LIST}/audit"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        audit.contains("\"event\":\"rejected\""),
        "the refusal is in the audit: {audit}"
    );
    answers.push(audit);
    let (_, _, lists) = get(http, "/api/v1/lists", Some(TOKEN)).await;
    answers.push(lists);
    // Data sent before the 354, refused in the SMTP session: counted too.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(daemon.addr()).await.unwrap();
        let pipelined = format!(
            "EHLO t\r\nMAIL FROM:<{PST}>\r\nRCPT TO:<{LIST}>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"
        );
        s.write_all(pipelined.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("data sent before 354"), "{answer}");
    }
    daemon.clock.set(lift + chrono::Duration::seconds(2));
    daemon
        .sink
        .wait_until(PATIENCE, |g| {
            g.iter()
                .any(|c| c.envelope.rcpt_to == [PUBLIC_DEFAULT.to_owned()])
        })
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let metrics = loop {
        let (_, _, m) = get(http, "/metrics", Some(TOKEN)).await;
        if m.contains(&format!(
            "embargo_relay_release_lateness_seconds_count{{list=\"{LIST}\"}} 1"
        )) {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lateness observed: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for reason in ["unsigned", "session"] {
        assert!(
            metrics.contains(&format!(
                "embargo_relay_rejections_total{{list=\"{LIST}\",reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }
    // Two seconds late on the manual clock: in the 5 s bucket, not the 1 s one.
    assert!(
        metrics.contains(&format!(
            "embargo_relay_release_lateness_seconds_bucket{{le=\"5.0\",list=\"{LIST}\"}} 1"
        )) || metrics.contains(&format!(
            "embargo_relay_release_lateness_seconds_bucket{{list=\"{LIST}\",le=\"5.0\"}} 1"
        )),
        "{metrics}"
    );
    answers.push(metrics);
    for a in &answers {
        assert!(!a.contains(CANARY), "content in an answer: {a}");
    }
    daemon.stop().await;
}

/// Headless Chromium (Debian's, installed by scripts/deps) on the page:
/// the DOM after its scripts ran, and a screenshot kept for a person.
fn chromium(url: &str, dir: &std::path::Path) -> String {
    let profile = dir.join("chromium-profile");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=10000",
    ];
    let run = |extra: &[&str]| {
        let out = std::process::Command::new("chromium")
            .args(common)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium must be installed (scripts/deps)");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let shot = dir.join("status-page.png");
    run(&[
        "--window-size=1280,900",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "a screenshot"
    );
    String::from_utf8(run(&["--dump-dom"])).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_rows_states_and_a_countdown_in_a_real_browser() {
    let f = Fixture::new();
    let (daemon, http) = with_http(&f).await;
    // One member's server refuses for good: a failed copy; the PST's
    // answers "try later": a retrying one.
    daemon.sink.answer_for(GPG_MEMBER, 550, None);
    daemon.sink.answer_for(PST, 451, None);
    let (id, _) = announce_texts(
        &f,
        daemon.addr(),
        PUBLIC_DEFAULT,
        &format!("CVE-2026-19: {CANARY}"),
        &format!("{CANARY} details."),
        &format!("{CANARY} advisory"),
    )
    .await;
    daemon
        .sink
        .wait_until(PATIENCE, |g| {
            copies(g)
                .iter()
                .any(|c| c.envelope.rcpt_to == [SQ_MEMBER.to_owned()])
        })
        .await;
    // One member acknowledges.
    let ack = crate::acks::signed_encrypted(
        &f,
        SQ_MEMBER,
        &f.members[2].secret,
        &format!("Acknowledge: {id}\n"),
    );
    send(daemon.addr(), SQ_MEMBER, &ack)
        .await
        .expect("recorded");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while f
        .spool()
        .deliveries(Some(&id), Some(GPG_MEMBER))
        .unwrap()
        .iter()
        .all(|d| d.state.to_string() != "failed")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused copy never failed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Kept after the test for a person to look at (its path is printed).
    let dir = tempfile::Builder::new()
        .prefix("status-page")
        .disable_cleanup(true)
        .tempdir()
        .unwrap();
    let url = format!("http://{http}/#token={TOKEN}");
    let dom = tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        move || chromium(&url, &d)
    })
    .await
    .unwrap();
    // The rows and states are there after the page's scripts ran.
    assert!(dom.contains(&format!("data-list=\"{LIST}\"")), "{dom}");
    assert!(
        dom.contains(&format!("data-id=\"{id}\" data-state=\"held\"")),
        "{dom}"
    );
    for (who, state) in [
        (SQ_MEMBER, "sent"),
        (GPG_MEMBER, "failed"),
        (EXPIRED_MEMBER, "skipped"),
        (PST, "retrying"),
    ] {
        assert!(
            dom.contains(&format!("data-member=\"{who}\" data-state=\"{state}\"")),
            "{who} {state}: {dom}"
        );
    }
    let sq_row = &dom[dom
        .find(&format!("data-member=\"{SQ_MEMBER}\" data-state=\"sent\""))
        .unwrap()..];
    assert!(
        sq_row[..sq_row.find("</tr>").unwrap()].contains("<td>yes</td>"),
        "acknowledged: {sq_row}"
    );
    // The countdown ran: "1d 23:59:59"-like, not empty.
    let countdown = dom
        .split("class=\"countdown\"")
        .nth(1)
        .and_then(|s| s.split('>').nth(1))
        .and_then(|s| s.split('<').next())
        .unwrap_or("");
    assert!(
        countdown.starts_with("1d ") || countdown.starts_with("2d "),
        "countdown {countdown:?}"
    );
    // The audit trail is there, the acknowledgement in it.
    assert!(dom.contains("data-event=\"acknowledged\""), "{dom}");
    assert!(dom.contains("class=\"audit-search\""), "{dom}");
    assert!(
        dom.contains(&format!("class=\"expiry\" data-member=\"{SQ_MEMBER}\"")),
        "{dom}"
    );
    assert!(!dom.contains(CANARY), "content on the page");
    // Without the token the page asks for one and shows nothing.
    let bare = tokio::task::spawn_blocking({
        let d = tempfile::tempdir().unwrap();
        let url = format!("http://{http}/");
        move || chromium(&url, d.path())
    })
    .await
    .unwrap();
    assert!(
        bare.contains("A bearer token is needed") && !bare.contains(&id),
        "{bare}"
    );
    eprintln!(
        "the status page's screenshot: {}",
        dir.path().join("status-page.png").display()
    );
    // Copied elsewhere when asked (how docs/status-page.png is made).
    if let Ok(keep) = std::env::var("EMBARGO_RELAY_KEEP_SCREENSHOT") {
        std::fs::copy(dir.path().join("status-page.png"), keep).unwrap();
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_excess_connections_are_closed() {
    let f = Fixture::new();
    let (daemon, http) = with_http(&f).await;
    // 64 connections that never finish a request head hold every slot.
    let mut idle = Vec::new();
    for _ in 0..64 {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    // The next is closed unanswered, and the API answers again once the
    // idle ones are gone: the header timeout closed them.
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
            .await
            .is_ok()
            && buf.is_empty()
    };
    // (It asks properly: without the cap it would be answered.)
    let mut extra = tokio::net::TcpStream::connect(http).await.unwrap();
    let _ = extra
        .write_all(b"GET /api/v1/lists HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert!(
        closed(extra).await,
        "the 65th connection is closed unanswered"
    );
    for s in idle {
        assert!(
            closed(s).await,
            "an idle connection is closed by the header timeout"
        );
    }
    let (status, _, _) = get(http, "/api/v1/lists", Some(TOKEN)).await;
    assert_eq!(status, 200);
    daemon.stop().await;
}
