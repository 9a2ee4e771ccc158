//! Issue 3, acceptance 1 and 5: the public advisory is held (unreadable in
//! the state directory) and goes out at its time, never before, exactly once
//! per public list, plaintext and signed by the list key; driven by a
//! controllable clock.

use embargo_relay::clock::{Clock, ManualClock};
use embargo_relay::compose;
use embargo_relay::config::Config;
use embargo_relay::intake::mime::parse_signed;
use embargo_relay::sink::{CaptureSink, Captured};

use crate::common::*;

const PUBLIC_A: &str = "oss-security@lists.example.net";
const PUBLIC_B: &str = "announce@project.example.org";
const PRIVATE: &str = "PRIVATE-CANARY-members-only";
const ADVISORY: &str = "ADVISORY-CANARY: CVE-2026-1234 is fixed in 1.31.4; upgrade.";
const SUBJECT: &str = "CVE-2026-1234: kubelet path traversal";

/// A list in a temp dir with a capture sink, its daemon in-process on a manual clock.
async fn manual_list() -> (
    Fixture,
    CaptureSink,
    ManualClock,
    embargo_relay::daemon::Running,
) {
    manual_list_with(&[]).await
}

/// The same, with `outbound` settings in the config's `[outbound]`.
async fn manual_list_with(
    outbound: &[(&'static str, String)],
) -> (
    Fixture,
    CaptureSink,
    ManualClock,
    embargo_relay::daemon::Running,
) {
    let f = Fixture::new();
    let list = f
        .start_in_process(&Tweaks {
            outbound: outbound.to_vec(),
            ..Tweaks::default()
        })
        .await;
    (f, list.sink, list.clock, list.running)
}

/// Sends an announcement held until `until` whose advisory goes to
/// `public_to`; returns its id.
async fn announce(f: &Fixture, addr: std::net::SocketAddr, until: &str, public_to: &str) -> String {
    let body = format!("Embargo-Until: {until}\nPublic-To: {public_to}\n\n{PRIVATE}\n");
    let entity = compose::text_with_advisory(SUBJECT, &body, ADVISORY);
    let reply = send(addr, PST, &f.gpg_signed_entity(PST, SUBJECT, &entity))
        .await
        .expect("accepted");
    reply.rsplit(' ').next().unwrap().to_owned()
}

fn to(c: &Captured, who: &str) -> bool {
    c.envelope.rcpt_to == vec![who.to_owned()]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_advisory_goes_out_at_its_time_and_not_before() {
    let (f, sink, clock, running) = manual_list().await;
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let until_text = stamp(clock.now() + chrono::Duration::days(2));
    let until: chrono::DateTime<chrono::Utc> = chrono::DateTime::parse_from_rfc3339(&until_text)
        .unwrap()
        .into();
    announce(
        &f,
        running.smtp_addr,
        &until_text,
        &format!("{PUBLIC_A}, {PUBLIC_B}"),
    )
    .await;

    // Members at once; the public lists nothing.
    let members = f.usable_members().count();
    wait_copies(&sink, members).await;
    let public = |got: &[Captured]| {
        got.iter()
            .filter(|c| to(c, PUBLIC_A) || to(c, PUBLIC_B))
            .count()
    };
    assert_eq!(public(&sink.captured()), 0);

    // One second before the time: a further announcement makes the worker
    // take a full pass at that clock reading; still nothing public.
    clock.set(until - chrono::Duration::seconds(1));
    let later = format!(
        "Embargo-Until: {}\n\nsecond",
        stamp(until + chrono::Duration::days(1))
    );
    send(running.smtp_addr, PST, &f.gpg_signed(PST, "second", &later))
        .await
        .unwrap();
    wait_copies(&sink, 2 * members).await;
    assert_eq!(
        public(&sink.captured()),
        0,
        "nothing public before the time"
    );

    // The held advisory is not readable in the state directory.
    for (path, bytes) in all_files(&f.state_dir()) {
        assert!(
            find(&bytes, b"ADVISORY-CANARY").is_none(),
            "advisory readable in {}",
            path.display()
        );
    }

    // At the time: exactly one signed plaintext advisory per public list.
    clock.set(until);
    let got = sink
        .wait_until(PATIENCE, |g| {
            public(g) >= 2 && lifted_notices(g).len() >= members && reminders(g).len() >= 2
        })
        .await;
    f.wait_until_nothing_due(until).await;
    let list_cert = f.list.clone().strip_secret_key_material();
    let gpg = Gpg::new();
    gpg.import(&embargo_relay::crypto::armored_public(&list_cert).unwrap());
    for list in [PUBLIC_A, PUBLIC_B] {
        let copies: Vec<&Captured> = got.iter().filter(|c| to(c, list)).collect();
        assert_eq!(copies.len(), 1, "{list}: exactly one release");
        let raw = &copies[0].raw;
        let text = String::from_utf8_lossy(raw);
        assert!(text.contains(&format!("Subject: {SUBJECT}\r\n")), "{text}");
        assert!(text.contains(&format!("From: {LIST}")), "{text}");
        assert!(text.contains("multipart/signed"), "{text}");
        assert!(text.contains(ADVISORY), "plaintext advisory: {text}");
        assert!(
            !text.contains(PRIVATE),
            "the private part must not be published"
        );
        let signed = parse_signed(raw).expect("RFC 3156 multipart/signed");
        let status = gpg
            .verify(&signed.signature, signed.signed_part.expose())
            .unwrap_or_else(|s| panic!("gpg --verify failed: {s}"));
        let validsig = status
            .lines()
            .find(|l| l.starts_with("[GNUPG:] VALIDSIG "))
            .unwrap();
        assert!(
            validsig.ends_with(&f.list.fingerprint().to_hex()),
            "{validsig}"
        );
    }
    assert!(
        !got.iter().any(|c| to(c, PUBLIC_DEFAULT)),
        "Public-To replaces the default"
    );
    let released: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "released")
        .collect();
    assert_eq!(released.len(), 2);
    assert!(released.iter().all(|r| r.at >= until), "never early");
    assert!(
        released.iter().all(|r| r.detail.contains("on time")),
        "{released:?}"
    );
    running.shutdown().await;
}

/// Sends a signed announcement with an advisory and no Public-To (so the
/// configured default list gets it); returns its embargo time.
async fn announce_with_default_public(
    f: &Fixture,
    addr: std::net::SocketAddr,
    clock: &ManualClock,
) -> chrono::DateTime<chrono::Utc> {
    let until = clock.now() + chrono::Duration::days(1);
    let until_text = until.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = format!("Embargo-Until: {until_text}\n\n{PRIVATE}\n");
    let entity = compose::text_with_advisory(SUBJECT, &body, ADVISORY);
    send(addr, PST, &f.gpg_signed_entity(PST, SUBJECT, &entity))
        .await
        .expect("accepted");
    chrono::DateTime::parse_from_rfc3339(&until_text)
        .unwrap()
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_keep_the_advisory_held_and_a_missed_time_releases_at_start_marked_late() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let clock = ManualClock::new(now());
    let config = f.write_config(sink.addr());
    let start = || run_in_process(&config, &clock);
    let members = f.usable_members().count();

    let running = start().await;
    let until = announce_with_default_public(&f, running.smtp_addr, &clock).await;
    wait_copies(&sink, members).await;
    running.shutdown().await;

    // Restarted before the time: still held. A second announcement is the
    // point by which the restarted worker has taken a full pass.
    clock.set(until - chrono::Duration::hours(1));
    let running = start().await;
    let later = format!(
        "Embargo-Until: {}\n\nsync",
        (until + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    send(running.smtp_addr, PST, &f.gpg_signed(PST, "sync", &later))
        .await
        .unwrap();
    wait_copies(&sink, 2 * members).await;
    assert!(
        !sink.captured().iter().any(|c| to(c, PUBLIC_DEFAULT)),
        "held across a restart"
    );
    running.shutdown().await;

    // Down through the embargo time: released as soon as it starts, marked late.
    clock.set(until + chrono::Duration::hours(2));
    let running = start().await;
    let got = sink
        .wait_until(PATIENCE, |g| g.iter().any(|c| to(c, PUBLIC_DEFAULT)))
        .await;
    assert_eq!(got.iter().filter(|c| to(c, PUBLIC_DEFAULT)).count(), 1);
    f.wait_until_nothing_due(clock.now()).await;
    let released: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "released")
        .collect();
    assert_eq!(released.len(), 1);
    assert!(
        released[0].detail.contains("7200 s late"),
        "{}",
        released[0].detail
    );
    running.shutdown().await;
    assert_eq!(
        sink.captured()
            .iter()
            .filter(|c| to(c, PUBLIC_DEFAULT))
            .count(),
        1,
        "exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clock_jumping_back_mid_batch_delays_the_release() {
    // Two public lists, one delivery at a time: the release to FIRST holds
    // the lane, so the one to LAST is still ahead when the clock jumps.
    const FIRST: &str = "aa-public@lists.example.net";
    const LAST: &str = "zz-public@lists.example.net";
    let (f, sink, clock, running) = manual_list_with(&[("concurrency", "1".to_owned())]).await;
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let until_text = stamp(clock.now() + chrono::Duration::days(1));
    let until: chrono::DateTime<chrono::Utc> = chrono::DateTime::parse_from_rfc3339(&until_text)
        .unwrap()
        .into();
    let body = format!("Embargo-Until: {until_text}\nPublic-To: {FIRST}, {LAST}\n\n{PRIVATE}\n");
    let entity = compose::text_with_advisory(SUBJECT, &body, ADVISORY);
    send(
        running.smtp_addr,
        PST,
        &f.gpg_signed_entity(PST, SUBJECT, &entity),
    )
    .await
    .unwrap();
    let members = f.usable_members().count();
    wait_copies(&sink, members).await;

    // The worker takes the batch due at the time and is held sending its first item…
    sink.hold();
    clock.set(until);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while sink.waiting() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was sent at the time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // …when the clock jumps back an hour. The rest of the batch must wait.
    clock.set(until - chrono::Duration::hours(1));
    sink.release();
    let later = format!(
        "Embargo-Until: {}\n\nsync",
        stamp(until + chrono::Duration::days(1))
    );
    send(running.smtp_addr, PST, &f.gpg_signed(PST, "sync", &later))
        .await
        .unwrap();
    wait_copies(&sink, 2 * members).await;
    assert!(
        !sink.captured().iter().any(|c| to(c, LAST)),
        "released while the clock said it was early"
    );

    clock.set(until);
    let got = sink
        .wait_until(PATIENCE, |g| g.iter().any(|c| to(c, LAST)))
        .await;
    assert_eq!(got.iter().filter(|c| to(c, LAST)).count(), 1);
    running.shutdown().await;
}

/// Issue 14, point 7: the wall clock leaping far ahead while the daemon
/// runs does not publish the held advisory (nor tell members it lifted):
/// the release is held, the operator and the PST are told once, and the
/// operator's release-now still releases it.
#[tokio::test(flavor = "multi_thread")]
async fn a_clock_leaping_ahead_holds_the_release_until_the_operator_lifts_it() {
    let (f, sink, clock, running) = manual_list().await;
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let until = clock.now() + chrono::Duration::hours(1);
    let id = announce(&f, running.smtp_addr, &stamp(until), PUBLIC_A).await;
    wait_copies(&sink, f.usable_members().count()).await;

    // The host's clock jumps two hours; no time passed.
    clock.leap_by(chrono::Duration::hours(2));
    let held = |g: &[Captured]| {
        refusal_texts_at(&f, g, clock.now())
            .iter()
            .any(|t| t.contains("held rather than sent"))
    };
    let got = sink.wait_until(PATIENCE, held).await;
    assert!(held(&got), "the PST is told");
    assert!(!got.iter().any(|c| to(c, PUBLIC_A)), "nothing published");
    assert!(
        lifted_notices(&got).is_empty(),
        "members not told it lifted"
    );
    let audit = f.audit();
    assert_eq!(
        audit.iter().filter(|r| r.event == "release-held").count(),
        1,
        "{audit:?}"
    );

    // The operator checked the clock: release-now releases it.
    let config = Config::load(&f.path("config.toml")).unwrap();
    embargo_relay::operator::embargo(
        &config,
        embargo_relay::cli::EmbargoAction::ReleaseNow { id: id.clone() },
        &clock,
        &mut Vec::new(),
    )
    .unwrap();
    let got = sink
        .wait_until(PATIENCE, |g| g.iter().any(|c| to(c, PUBLIC_A)))
        .await;
    assert!(
        got.iter().any(|c| to(c, PUBLIC_A)),
        "released by the operator"
    );
    running.shutdown().await;
}

/// A leap holds the release only while the time that really passed has
/// not reached the embargo: once it has, the advisory goes out by itself,
/// without the operator, and the hold never counted as a failed attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_release_goes_out_once_the_time_that_passed_reaches_the_embargo() {
    let (f, sink, clock, running) = manual_list().await;
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let start = clock.now();
    let until = start + chrono::Duration::hours(1);
    announce(&f, running.smtp_addr, &stamp(until), PUBLIC_A).await;
    wait_copies(&sink, f.usable_members().count()).await;

    clock.leap_by(chrono::Duration::hours(2));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f.audit().iter().any(|r| r.event == "release-held") {
        assert!(tokio::time::Instant::now() < deadline, "never held");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Half an hour really passes: still early.
    clock.set(clock.now() + chrono::Duration::minutes(30));
    wait_settled(&running.relay, clock.now()).await;
    assert!(!sink.captured().iter().any(|c| to(c, PUBLIC_A)));
    // The time that passed reaches the embargo: out by itself.
    clock.set(until + chrono::Duration::hours(2));
    let got = sink
        .wait_until(PATIENCE, |g| g.iter().any(|c| to(c, PUBLIC_A)))
        .await;
    assert_eq!(got.iter().filter(|c| to(c, PUBLIC_A)).count(), 1);
    let audit = f.audit();
    assert_eq!(
        audit.iter().filter(|r| r.event == "release-held").count(),
        1,
        "{audit:?}"
    );
    assert!(
        !audit
            .iter()
            .any(|r| r.event == "deferred" && r.member.as_deref() == Some(PUBLIC_A)),
        "a hold is not a failed attempt: {audit:?}"
    );
    running.shutdown().await;
}
