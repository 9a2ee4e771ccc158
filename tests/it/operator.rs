//! Issue 3, acceptance 3 (CLI part): an operator lists, extends, releases
//! and cancels embargoes with `embargo-relay embargo …` while the daemon
//! runs, each proved by what the sink receives.

use std::process::Command;

use embargo_relay::sink::{CaptureSink, Captured};

use crate::common::*;

const PUBLIC_A: &str = "oss-security@lists.example.net";
const PUBLIC_B: &str = "announce@project.example.org";

/// Runs `embargo-relay embargo --config … ARGS`; returns (success, stdout, stderr).
fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .arg("embargo")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn to(c: &Captured, who: &str) -> bool {
    c.envelope.rcpt_to == vec![who.to_owned()]
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_change_embargoes_from_the_cli_while_the_daemon_runs() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let daemon = Daemon::start(&config, &f.path("daemon.log"));
    let a = announce_with_advisory(&f, daemon.addr, PUBLIC_A).await;
    let b = announce_with_advisory(&f, daemon.addr, PUBLIC_B).await;
    let members = f.usable_members().count();
    wait_copies(&sink, 2 * members).await;

    let (ok, listing, _) = cli(&config, &["list"]);
    assert!(ok, "{listing}");
    for id in [&a, &b] {
        let line = listing
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} in {listing}"));
        assert!(line.contains("held") && line.contains("1d 23h"), "{line}");
    }

    let later = (now() + chrono::Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (ok, out, err) = cli(&config, &["extend", &a, &later]);
    assert!(ok, "{out}{err}");
    let (_, shown, _) = cli(&config, &["show", &a]);
    assert!(
        shown.contains(&later.replace('T', " ").replace('Z', "")),
        "{shown}"
    );
    assert!(
        shown.contains("extended") && shown.contains("operator (CLI)"),
        "{shown}"
    );

    // Release now: the daemon notices and publishes A's advisory.
    let (ok, out, err) = cli(&config, &["release-now", &a]);
    assert!(ok, "{out}{err}");
    sink.wait_until(PATIENCE, |g| g.iter().any(|c| to(c, PUBLIC_A)))
        .await;
    f.wait_until_no_pending().await;
    let got = sink.captured();
    assert_eq!(
        got.iter().filter(|c| to(c, PUBLIC_A)).count(),
        1,
        "exactly once"
    );

    // Cancel: B's advisory is discarded, members are told; nothing reaches B's list.
    let (ok, out, err) = cli(&config, &["cancel", &b]);
    assert!(ok, "{out}{err}");
    sink.wait_until(PATIENCE, |g| lifted_notices(g).len() >= 2 * members)
        .await;
    f.wait_until_no_pending().await;
    assert!(
        !sink.captured().iter().any(|c| to(c, PUBLIC_B)),
        "a cancelled advisory is never published"
    );
    let (_, shown, _) = cli(&config, &["show", &b]);
    assert!(
        shown.contains("state        cancelled")
            && shown.contains(&format!("{PUBLIC_B} (cancelled)")),
        "{shown}"
    );

    // Refusals name the problem.
    let (ok, _, err) = cli(&config, &["release-now", &b]);
    assert!(!ok && err.contains("was cancelled"), "{err}");
    let (ok, _, err) = cli(&config, &["cancel", "0000000000000000"]);
    assert!(
        !ok && err.contains("embargo 0000000000000000: no embargo with this id"),
        "{err}"
    );
    let (ok, _, err) = cli(&config, &["extend", &a, "next tuesday"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
}
