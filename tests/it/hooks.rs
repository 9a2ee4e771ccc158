//! Issue 21: release hooks. Against a loopback HTTPS server with a test CA
//! (`discovery::KeyHost`, trusted through each hook's `extra_ca`): a
//! webhook and GitHub's publish call are made exactly once at the lift and
//! never before, with the HMAC (checked with the `openssl` CLI) and the
//! GitHub API's path and headers; nothing embargoed reaches a hook before
//! the lift (canaries); a failing hook is retried and reported while the
//! mail releases stay on time, hung hooks never delaying them; a cancel
//! calls the cancel hook; a kill -9 during a call or after its answer
//! calls it again with the same delivery id, recorded once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use embargo_relay::clock::Clock;
use embargo_relay::sink::Captured;

use crate::common::*;
use crate::discovery::KeyHost;

const KEY: &str = "hook-key-0123456789abcdef-0123456789";
const TOKEN: &str = "github_pat_11TESTTOKEN0123456789";
const GHSA_PATH: &str = "/repos/acme/widget/security-advisories/GHSA-2345-6789-cfgh";
/// A second advisory, published already: GitHub refuses the call (422)
/// and shows it published.
const GHSA_DONE: &str = "/repos/acme/other.rs/security-advisories/GHSA-jmpq-rvwx-2345";
const PUBLIC: &str = "oss@lists.example.net";
const SUBJECT: &str = "CVE-2026-4242: SUBJECT-CANARY in the parser";
const PRIVATE: &str = "PRIVATE-CANARY: members only";
const ADVISORY: &str = "ADVISORY-CANARY: fixed in 2.0.";

/// A `[[release_hook]]` table for `host`, with `lines` of its own.
fn hook(host: &KeyHost, name: &str, lines: &str) -> String {
    format!(
        "[[release_hook]]\nname = \"{name}\"\nextra_ca = \"{}\"\n{}\n",
        host.ca().display(),
        lines.replace("PORT", &host.port().to_string())
    )
}

fn webhook(host: &KeyHost, name: &str, path: &str, more: &str) -> String {
    hook(
        host,
        name,
        &format!("url = \"https://localhost:PORT{path}\"\nsecret_file = \"hook.key\"\n{more}"),
    )
}

fn github(host: &KeyHost) -> String {
    hook(
        host,
        "gh",
        "kind = \"github\"\nurl = \"https://localhost:PORT\"\nsecret_file = \"gh.token\"\n",
    )
}

/// A list's fixture with the hooks' secrets in files, and the loopback
/// HTTPS server the hooks call.
async fn fixture() -> (Fixture, KeyHost) {
    let f = Fixture::new();
    std::fs::write(f.path("hook.key"), format!("{KEY}\n")).unwrap();
    std::fs::write(f.path("gh.token"), format!("{TOKEN}\n")).unwrap();
    (f, KeyHost::start(&["localhost"]).await)
}

/// An announcement signed by the PST, held until `until`, its advisory
/// for [`PUBLIC`], with `fields` in its block; canaries in its Subject,
/// text and advisory.
fn announcement(f: &Fixture, until: DateTime<Utc>, fields: &str) -> Vec<u8> {
    let stamp = until.format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!("Embargo-Until: {stamp}\nPublic-To: {PUBLIC}\n{fields}\n{PRIVATE}\n");
    let entity = embargo_relay::compose::text_with_advisory(SUBJECT, &body, ADVISORY);
    f.gpg_signed_entity(PST, SUBJECT, &entity)
}

async fn announce(
    f: &Fixture,
    addr: std::net::SocketAddr,
    until: DateTime<Utc>,
    fields: &str,
) -> String {
    let reply = send(addr, PST, &announcement(f, until, fields))
        .await
        .expect("accepted");
    reply.rsplit(' ').next().unwrap().to_owned()
}

/// A whole second, `days` ahead of `clock` (the field's precision).
fn ahead(at: DateTime<Utc>, d: chrono::Duration) -> DateTime<Utc> {
    DateTime::from_timestamp((at + d).timestamp(), 0).unwrap()
}

/// A list with one webhook (`site`, answering 204 at `/lift`) and an
/// announcement held `ahead` of its clock, its copies out: the fixture,
/// the server, the list, the lift time and the embargo id.
async fn one_hook_announced(
    ahead_by: chrono::Duration,
) -> (Fixture, KeyHost, InProcess, DateTime<Utc>, String) {
    let (f, host) = fixture().await;
    host.serve("localhost", "/lift", 204, b"");
    let list = f
        .start_in_process(&Tweaks {
            extra: webhook(&host, "site", "/lift", ""),
            ..Tweaks::default()
        })
        .await;
    let until = ahead(list.clock.now(), ahead_by);
    let id = announce(&f, list.addr(), until, "").await;
    wait_copies(&list.sink, f.usable_members().count()).await;
    (f, host, list, until, id)
}

/// Requests to `path`, whole (head and body).
fn calls(host: &KeyHost, path: &str) -> Vec<(String, Vec<u8>)> {
    host.whole_requests()
        .into_iter()
        .filter(|(head, _)| head.split(' ').nth(1) == Some(path))
        .collect()
}

async fn wait_calls(host: &KeyHost, path: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = calls(host, path);
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: {} calls of {n}; all: {:?}",
            got.len(),
            host.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A header's value (names in any case).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// HMAC-SHA256 of `body` under `key`, by the openssl CLI.
fn openssl_hmac(key: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl must be installed (scripts/deps)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned()
}

/// A webhook call's body, its signature checked.
fn signed_json(head: &str, body: &[u8]) -> serde_json::Value {
    let signature = header(head, "x-embargo-relay-signature").expect("signed");
    assert_eq!(
        signature,
        format!("sha256={}", openssl_hmac(KEY, body)),
        "HMAC of the body"
    );
    assert_eq!(header(head, "content-type"), Some("application/json"));
    serde_json::from_slice(body).expect("a JSON body")
}

fn audited(f: &Fixture, event: &str) -> Vec<embargo_relay::spool::AuditRecord> {
    f.audit().into_iter().filter(|r| r.event == event).collect()
}

async fn wait_audited(f: &Fixture, event: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while audited(f, event).len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{event}: not {n} times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn released_to(got: &[Captured], list: &str) -> usize {
    got.iter()
        .filter(|c| c.envelope.rcpt_to == vec![list.to_owned()])
        .count()
}

fn no_canary(what: &str, bytes: &[u8]) {
    for canary in ["SUBJECT-CANARY", "PRIVATE-CANARY", "ADVISORY-CANARY"] {
        assert!(
            find(bytes, canary.as_bytes()).is_none(),
            "{canary} in {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_are_called_once_at_the_lift_and_never_before() {
    let (f, host) = fixture().await;
    host.serve("localhost", "/lift", 204, b"");
    // GitHub answers with the whole advisory, which may be long: the
    // status is what counts.
    let long = format!(
        "{{\"state\":\"published\",\"description\":\"{}\"}}",
        "x".repeat(200_000)
    );
    host.serve("localhost", GHSA_PATH, 200, long.as_bytes());
    host.serve("localhost", &format!("PATCH {GHSA_DONE}"), 422, b"{}");
    host.serve("localhost", GHSA_DONE, 200, b"{\"state\":\"published\"}");
    let list = f
        .start_in_process(&Tweaks {
            extra: webhook(&host, "site", "/lift", "on = [\"lift\", \"cancel\"]") + &github(&host),
            ..Tweaks::default()
        })
        .await;
    let (clock, relay) = (&list.clock, &list.running.relay);
    let until = ahead(clock.now(), chrono::Duration::days(2));
    let id = announce(
        &f,
        list.addr(),
        until,
        "GitHub-Advisory: acme/widget GHSA-2345-6789-CFGH, acme/other.rs GHSA-jmpq-rvwx-2345\n",
    )
    .await;
    wait_copies(&list.sink, f.usable_members().count()).await;
    // Up to a second before the lift, by the clock: not a call.
    for before in [
        clock.now(),
        until - chrono::Duration::hours(1),
        until - chrono::Duration::seconds(1),
    ] {
        clock.set(before);
        wait_settled(relay, before).await;
        assert!(host.whole_requests().is_empty(), "called before the lift");
    }
    // The advisory's repository and id are embargoed too: only in the
    // sealed record, never in the spool's clear rows.
    for (path, bytes) in all_files(&f.state_dir()) {
        for secret in [
            &b"acme/widget"[..],
            b"acme/other",
            b"GHSA-",
            b"2345-6789-cfgh",
        ] {
            assert!(
                find(&bytes, secret).is_none(),
                "{} in {}",
                String::from_utf8_lossy(secret),
                path.display()
            );
        }
    }
    // The receipt (encrypted to the PST) says what will be called.
    let got = list
        .sink
        .wait_until(PATIENCE, |g| !receipts(g).is_empty())
        .await;
    let receipt = receipt_texts_at(&f, &got, clock.now()).join("\n");
    assert!(
        receipt.contains("site: called at the lift: waiting"),
        "{receipt}"
    );
    assert!(
        receipt
            .contains("gh: publishes GitHub advisories GHSA-2345-6789-cfgh in acme/widget, GHSA-jmpq-rvwx-2345 in acme/other.rs: waiting"),
        "{receipt}"
    );

    clock.set(until);
    let lift = wait_calls(&host, "/lift", 1).await;
    let gh = wait_calls(&host, GHSA_PATH, 1).await;
    let done = wait_calls(&host, GHSA_DONE, 2).await;
    list.sink
        .wait_until(PATIENCE, |g| released_to(g, PUBLIC) >= 1)
        .await;
    f.wait_until_nothing_due(until).await;

    // The webhook: a signed JSON POST with what is public now.
    let (head, body) = &lift[0];
    assert!(head.starts_with("POST /lift HTTP/1.1\r\n"), "{head}");
    let json = signed_json(head, body);
    assert_eq!(json["event"], "lift");
    assert_eq!(json["embargo"], id.as_str());
    assert_eq!(json["list"], LIST);
    assert_eq!(json["lift_time"], until.to_rfc3339());
    assert_eq!(json["public_lists"], serde_json::json!([PUBLIC]));
    assert_eq!(json["subject"], SUBJECT);
    assert!(
        json["advisory"].as_str().unwrap().contains(ADVISORY),
        "{json}"
    );
    assert!(
        find(body, b"PRIVATE-CANARY").is_none(),
        "the members' text is never sent"
    );
    assert_eq!(header(head, "x-embargo-relay-event"), Some("lift"));
    let delivery = header(head, "x-embargo-relay-delivery").unwrap();
    assert_eq!(json["delivery"], delivery);

    // GitHub: the REST API's publish call for the advisory named.
    let (head, body) = &gh[0];
    assert!(
        head.starts_with(&format!("PATCH {GHSA_PATH} HTTP/1.1\r\n")),
        "{head}"
    );
    assert_eq!(header(head, "accept"), Some("application/vnd.github+json"));
    assert_eq!(header(head, "x-github-api-version"), Some("2022-11-28"));
    assert_eq!(
        header(head, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(body).unwrap(),
        serde_json::json!({"state": "published"})
    );
    no_canary("the GitHub call", body);
    // The advisory GitHub refused to publish again is looked at, and seen
    // published: done.
    assert!(
        done[0].0.starts_with(&format!("PATCH {GHSA_DONE} ")),
        "{}",
        done[0].0
    );
    assert!(
        done[1].0.starts_with(&format!("GET {GHSA_DONE} ")),
        "{}",
        done[1].0
    );
    assert_eq!(
        header(&done[1].0, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Later passes call nothing again.
    let later = until + chrono::Duration::hours(1);
    clock.set(later);
    wait_settled(relay, later).await;
    assert_eq!(host.whole_requests().len(), 4, "{:?}", host.requests());
    let called = audited(&f, "hook-called");
    assert_eq!(called.len(), 2, "{called:?}");
    assert!(called.iter().all(|r| r.at >= until), "never early");
    let info = f.spool().embargo(&id).unwrap();
    let state = |s: &str| s.to_owned();
    assert_eq!(
        info.hooks,
        [(state("gh"), state("sent")), (state("site"), state("sent"))]
    );
    // The operator's view names the calls.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["embargo", "--config"])
        .arg(&list.config)
        .args(["show", &id])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        shown.contains("hooks        gh (sent), site (sent)"),
        "{shown}"
    );
    list.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_hook_is_retried_and_reported_and_hung_hooks_never_delay_releases() {
    let (f, host) = fixture().await;
    host.serve("localhost", "/flaky", 503, b"SERVER-BODY-CANARY");
    host.serve("localhost", "/stuck", 0, b"");
    // A hook that never answers, where one call may run at once in each
    // lane: its lane is full for as long as it hangs.
    let hooks = webhook(&host, "flaky", "/flaky", "")
        + &webhook(&host, "stuck", "/stuck", "timeout = \"300s\"");
    let list = f
        .start_in_process(&Tweaks {
            extra: hooks,
            outbound: vec![("concurrency", "1".into())],
            ..Tweaks::default()
        })
        .await;
    let clock = &list.clock;
    let until = ahead(clock.now(), chrono::Duration::days(2));
    let second = until + chrono::Duration::minutes(1);
    // It names a GitHub advisory, but the list has no github hook.
    let a = announce(
        &f,
        list.addr(),
        until,
        "GitHub-Advisory: acme/widget GHSA-2345-6789-cfgh\n",
    )
    .await;
    let b = announce(&f, list.addr(), second, "").await;
    wait_copies(&list.sink, 2 * f.usable_members().count()).await;

    clock.set(until);
    list.sink
        .wait_until(PATIENCE, |g| released_to(g, PUBLIC) >= 1)
        .await;
    wait_calls(&host, "/flaky", 1).await;
    wait_calls(&host, "/stuck", 1).await;
    // The failure is told at once, in a fresh receipt (the status, never
    // the endpoint's body), while the hook is retried.
    let retrying = "flaky: called at the lift: retrying (the endpoint answered HTTP 503)";
    let got = list
        .sink
        .wait_until(PATIENCE, |g| {
            receipt_texts_at(&f, g, until)
                .iter()
                .any(|t| t.contains(retrying))
        })
        .await;
    let texts = receipt_texts_at(&f, &got, until);
    assert!(texts.iter().any(|t| t.contains(retrying)), "{texts:#?}");
    assert!(
        texts.iter().any(|t| t.contains(
            "GitHub-Advisory names 1 advisory(ies), but this list has no github release hook: publish them yourself at the lift."
        )),
        "{texts:#?}"
    );
    assert!(texts.iter().all(|t| !t.contains("SERVER-BODY-CANARY")));
    wait_audited(&f, "deferred", 1).await;

    // The second embargo lifts while the first's call hangs: its release
    // goes out (its own call of the hung hook waits in that hook's lane).
    clock.set(second);
    list.sink
        .wait_until(PATIENCE, |g| released_to(g, PUBLIC) >= 2)
        .await;
    assert_eq!(released_to(&list.sink.captured(), PUBLIC), 2);
    // (Recorded just after the smarthost took it.)
    wait_audited(&f, "released", 2).await;
    let released = audited(&f, "released");
    assert_eq!(released.len(), 2);
    assert!(
        released.iter().all(|r| r.detail.contains("on time")),
        "{released:?}"
    );
    assert!(audited(&f, "hook-called").is_empty());

    // The endpoint recovers: the next attempt is a success, once each,
    // while the other hook still hangs.
    host.serve("localhost", "/flaky", 200, b"ok");
    let after = second + chrono::Duration::minutes(5);
    clock.set(after);
    wait_audited(&f, "hook-called", 2).await;
    assert_eq!(
        calls(&host, "/stuck").len(),
        1,
        "the hung call still holds its hook's lane"
    );
    let called: Vec<String> = audited(&f, "hook-called")
        .into_iter()
        .map(|r| {
            format!(
                "{} {}",
                r.message_id.unwrap_or_default(),
                r.member.unwrap_or_default()
            )
        })
        .collect();
    assert!(
        called.contains(&format!("{a} flaky")) && called.contains(&format!("{b} flaky")),
        "{called:?}"
    );
    // Each delivery kept its id across its attempts.
    let ids: std::collections::BTreeSet<String> = calls(&host, "/flaky")
        .iter()
        .map(|(head, _)| header(head, "x-embargo-relay-delivery").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "one id per embargo's call");
    list.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_calls_the_cancel_hook_and_never_the_lift() {
    let (f, host) = fixture().await;
    host.serve("localhost", "/both", 204, b"");
    host.serve("localhost", "/lift-only", 204, b"");
    // A cancel hook the endpoint refuses for good.
    host.serve("localhost", "/gone", 410, b"");
    let list = f
        .start_in_process(&Tweaks {
            extra: webhook(&host, "both", "/both", "on = [\"lift\", \"cancel\"]")
                + &webhook(&host, "lift-only", "/lift-only", "")
                + &webhook(&host, "gone", "/gone", "on = [\"cancel\"]"),
            ..Tweaks::default()
        })
        .await;
    let clock = &list.clock;
    let until = ahead(clock.now(), chrono::Duration::days(2));
    let id = announce(&f, list.addr(), until, "").await;
    wait_copies(&list.sink, f.usable_members().count()).await;
    let cancel = f.gpg_signed(PST, "embargo command", &format!("Embargo-Cancel: {id}\n"));
    send(list.addr(), PST, &cancel).await.unwrap();
    let got = wait_calls(&host, "/both", 1).await;
    let (head, body) = &got[0];
    let json = signed_json(head, body);
    assert_eq!(json["event"], "cancel");
    assert_eq!(json["embargo"], id.as_str());
    assert_eq!(header(head, "x-embargo-relay-event"), Some("cancel"));
    no_canary("the cancel call", body);
    assert!(json.get("lift_time").is_none(), "{json}");
    wait_audited(&f, "cancel-hook-called", 1).await;
    // The refused one failed for good, and the PST reads so.
    wait_audited(&f, "cancel-hook-failed", 1).await;
    let failed = audited(&f, "cancel-hook-failed");
    assert!(
        failed[0].detail.contains("HTTP 410; not retried"),
        "{failed:?}"
    );
    let got = list
        .sink
        .wait_until(PATIENCE, |g| {
            receipt_texts_at(&f, g, clock.now())
                .iter()
                .any(|t| t.contains("THE RELEASE HOOK gone FAILED"))
        })
        .await;
    let texts = receipt_texts_at(&f, &got, clock.now());
    assert!(
        texts.iter().any(|t| t
            .contains("THE RELEASE HOOK gone FAILED: the endpoint answered HTTP 410; not retried")
            && t.contains("gone: called for the cancel: FAILED")),
        "{texts:#?}"
    );
    // Past the lift time: nothing more.
    let later = until + chrono::Duration::hours(1);
    clock.set(later);
    wait_settled(&list.running.relay, later).await;
    assert_eq!(host.whole_requests().len(), 2, "{:?}", host.requests());
    let info = f.spool().embargo(&id).unwrap();
    let state = |s: &str| s.to_owned();
    assert_eq!(
        info.hooks,
        [
            (state("both"), state("cancelled")),
            (state("lift-only"), state("cancelled")),
            (state("both (cancel)"), state("sent")),
            (state("gone (cancel)"), state("failed")),
        ]
    );
    list.stop().await;
}

/// A reload that drops a hook before the lift: its call fails with the
/// reason, nothing is called, and the PST reads it in a fresh receipt.
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_removed_by_a_reload_is_not_called_and_the_pst_is_told() {
    let (f, host, list, until, _) = one_hook_announced(chrono::Duration::days(2)).await;
    let clock = &list.clock;
    // The same file without the hook, as a SIGHUP reads it.
    let text = std::fs::read_to_string(&list.config).unwrap();
    let cut = text.find("[[release_hook]]").unwrap();
    std::fs::write(&list.config, &text[..cut]).unwrap();
    list.running
        .reload(embargo_relay::config::Config::load_all(&list.config).unwrap())
        .await
        .unwrap();
    clock.set(until);
    wait_audited(&f, "hook-failed", 1).await;
    let failed = audited(&f, "hook-failed");
    assert!(
        failed[0]
            .detail
            .contains("the hook `site` is no longer configured: not called"),
        "{failed:?}"
    );
    let got = list
        .sink
        .wait_until(PATIENCE, |g| {
            receipt_texts_at(&f, g, until)
                .iter()
                .any(|t| t.contains("THE RELEASE HOOK site FAILED"))
        })
        .await;
    assert!(
        receipt_texts_at(&f, &got, until)
            .iter()
            .any(|t| t.contains("THE RELEASE HOOK site FAILED")),
        "a fresh receipt"
    );
    assert!(host.whole_requests().is_empty(), "{:?}", host.requests());
    list.stop().await;
}

/// kill -9 while the endpoint has the call and has not answered, and
/// right after it answered (failpoint `hook-called`, before the outcome
/// is committed): after the restart the hook is called again with the
/// same delivery id, and the success is recorded once.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_during_a_call_calls_again_with_the_same_id_and_records_once() {
    futures_util::future::join_all([crash_during_call(false), crash_during_call(true)]).await;
}

async fn crash_during_call(after_answer: bool) {
    let (f, host) = fixture().await;
    host.serve(
        "localhost",
        "/lift",
        if after_answer { 200 } else { 0 },
        b"",
    );
    let sink = embargo_relay::sink::CaptureSink::start().await.unwrap();
    let config = f.write_config_with(
        sink.addr(),
        &Tweaks {
            extra: webhook(&host, "site", "/lift", "timeout = \"300s\""),
            ..Tweaks::default()
        },
    );
    let log = f.path("daemon.log");
    let env: &[(&str, &str)] = if after_answer {
        &[("EMBARGO_RELAY_FAILPOINT", "hook-called")]
    } else {
        &[]
    };
    let mut daemon = Daemon::start_with(&config, &log, env);
    let until = ahead(now(), chrono::Duration::seconds(6));
    send(daemon.addr, PST, &announcement(&f, until, ""))
        .await
        .unwrap();
    wait_calls(&host, "/lift", 1).await;
    if after_answer {
        assert!(
            daemon.wait_exit(),
            "the daemon did not crash at hook-called"
        );
    } else {
        daemon.kill();
        host.serve("localhost", "/lift", 200, b"");
    }
    assert!(
        audited(&f, "hook-called").is_empty(),
        "not recorded before the crash"
    );
    let _daemon = Daemon::start(&config, &log);
    wait_audited(&f, "hook-called", 1).await;
    f.wait_until_no_pending().await;
    let got = calls(&host, "/lift");
    assert_eq!(got.len(), 2, "called again after the restart, once");
    let ids: Vec<&str> = got
        .iter()
        .map(|(head, _)| header(head, "x-embargo-relay-delivery").unwrap())
        .collect();
    assert_eq!(ids[0], ids[1], "the same delivery id");
    for (head, body) in &got {
        let json = signed_json(head, body);
        let called: DateTime<Utc> = json["called_at"].as_str().unwrap().parse().unwrap();
        assert!(
            called >= until,
            "called at {called}, before the lift at {until}"
        );
    }
    assert_eq!(audited(&f, "hook-called").len(), 1);
    assert!(audited(&f, "hook-called")[0].at >= until);
}

/// The wall clock leaping ahead while the daemon runs calls no hook (as
/// it publishes nothing); the operator's release-now calls them at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_clock_leap_holds_the_hooks_until_release_now() {
    let (f, host, list, _, id) = one_hook_announced(chrono::Duration::hours(1)).await;
    let clock = &list.clock;
    // The host's clock jumps two hours; no time passed.
    clock.leap_by(chrono::Duration::hours(2));
    wait_audited(&f, "release-held", 1).await;
    wait_settled(&list.running.relay, clock.now()).await;
    assert!(host.whole_requests().is_empty(), "called on a leapt clock");
    let config = embargo_relay::config::Config::load(&list.config).unwrap();
    embargo_relay::operator::embargo(
        &config,
        embargo_relay::cli::EmbargoAction::ReleaseNow { id: id.clone() },
        clock,
        &mut Vec::new(),
    )
    .unwrap();
    let got = wait_calls(&host, "/lift", 1).await;
    let json = signed_json(&got[0].0, &got[0].1);
    assert_eq!(json["embargo"], id.as_str());
    wait_audited(&f, "hook-called", 1).await;
    list.stop().await;
}
