//! Issue 5, acceptance 5 to 7: the operator's `check`, `roster` and
//! `audit` commands, run as the binary an operator runs, and `status`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use embargo_relay::crypto;
use embargo_relay::sink::CaptureSink;
use sequoia_openpgp::cert::CertBuilder;

use crate::common::*;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(args)
        .output()
        .unwrap()
}

/// A list config with the fixture's list key and the given member blocks.
fn config_with(f: &Fixture, members: &str, extra_list: &str) -> std::path::PathBuf {
    config_with_key(f, "keys/list.key", members, extra_list)
}

fn config_with_key(
    f: &Fixture,
    secret_key: &str,
    members: &str,
    extra_list: &str,
) -> std::path::PathBuf {
    let text = format!(
        "[list]\naddress = \"{LIST}\"\nsecret_key = \"{secret_key}\"\nstate_dir = \"state\"\n{extra_list}\n\
[outbound]\nsmarthost = \"smtp://127.0.0.1:25\"\n{members}"
    );
    let path = f.path("check.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn member(email: &str, key: &str, pst: bool) -> String {
    format!(
        "\n[[member]]\nemail = \"{email}\"\norganization = \"Org of {email}\"\nkey = \"{key}\"\npst = {pst}\n"
    )
}

fn write_cert(f: &Fixture, name: &str, cert: &sequoia_openpgp::Cert) -> String {
    let rel = format!("keys/{name}.asc");
    std::fs::write(
        f.path(&rel),
        crypto::armored_public(&cert.clone().strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    rel
}

/// A key made by GnuPG with a weak choice: `algo` for both keys, extra options.
fn gpg_key(f: &Fixture, name: &str, algo: &str, sub: &str, extra: &[&str]) -> String {
    let gpg = Gpg::new();
    let uid = format!("{name} <{name}@weak.example>");
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--quick-gen-key", &uid, algo, "sign", "never"]);
    assert!(gpg.run(&args, b"").status.success());
    let listing =
        String::from_utf8(gpg.run(&["--with-colons", "--list-keys", &uid], b"").stdout).unwrap();
    let fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_owned();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--quick-add-key", &fpr, sub, "encr", "never"]);
    assert!(gpg.run(&args, b"").status.success());
    let public = gpg.run(&["--armor", "--export", &fpr], b"").stdout;
    let rel = format!("keys/{name}.asc");
    std::fs::write(f.path(&rel), public).unwrap();
    rel
}

#[test]
fn check_finds_each_planted_key_problem_and_passes_a_clean_config() {
    let f = Fixture::new();
    let born = now() - chrono::Duration::days(1);
    let good = |name: &str| {
        crypto::generate_key(&format!("{name} <{name}@ok.example>"), born, None).unwrap()
    };
    let pst = write_cert(
        &f,
        "pst",
        &crypto::generate_key(&format!("PST <{PST}>"), born, None).unwrap(),
    );
    let a = write_cert(&f, "a", &good("a"));
    let clean = config_with(
        &f,
        &(member(PST, &pst, true) + &member("a@ok.example", &a, false)),
        "",
    );
    let out = cli(&["check", "--config", clean.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("clean"));

    let build = |b: CertBuilder<'static>| {
        b.set_creation_time(std::time::SystemTime::from(born))
            .generate()
            .unwrap()
    };
    let (revoked, rev) = build(CertBuilder::general_purpose(Some("r <r@x.example>")));
    let revoked = revoked.insert_packets(rev).unwrap().0;
    let (signing_only, _) = build(
        CertBuilder::new()
            .add_userid("s <s@x.example>")
            .add_signing_subkey(),
    );
    let (cannot_sign, _) = build(
        CertBuilder::new()
            .add_userid("c <c@x.example>")
            .add_transport_encryption_subkey(),
    );
    let (expiring, _) = build(
        CertBuilder::general_purpose(Some("e <e@x.example>"))
            .set_validity_period(Duration::from_secs(10 * 86400)),
    );
    let expired = f.members.iter().find(|m| !m.usable).unwrap().secret.clone();
    let planted = [
        (
            "revoked@x.example",
            write_cert(&f, "revoked", &revoked),
            false,
            "revoked",
        ),
        (
            "nocrypt@x.example",
            write_cert(&f, "nocrypt", &signing_only),
            false,
            "no usable encryption subkey",
        ),
        (
            "nosign@x.example",
            write_cert(&f, "nosign", &cannot_sign),
            true,
            "no usable signing key",
        ),
        (
            "soon@x.example",
            write_cert(&f, "soon", &expiring),
            false,
            "expires on",
        ),
        (
            "expired@x.example",
            write_cert(&f, "expired", &expired),
            false,
            "expired",
        ),
        (
            "missing@x.example",
            "keys/nothing-here.asc".to_owned(),
            false,
            "unreadable",
        ),
        (
            "rsa1024@x.example",
            gpg_key(&f, "rsa1024", "rsa1024", "rsa1024", &[]),
            false,
            "has 1024 bits (under 2048)",
        ),
        (
            "sha1@x.example",
            gpg_key(
                &f,
                "sha1",
                "ed25519",
                "cv25519",
                &["--cert-digest-algo", "SHA1"],
            ),
            false,
            "uses SHA1",
        ),
        ("twin@x.example", a.clone(), false, "the same certificate"),
        (
            "not-on-key@x.example",
            write_cert(&f, "other", &good("other")),
            true,
            "is not a valid user ID of its certificate",
        ),
    ];
    let mut members = member(PST, &pst, true) + &member("a@ok.example", &a, false);
    for (email, key, pst, _) in &planted {
        members.push_str(&member(email, key, *pst));
    }
    let bad = config_with(&f, &members, "");
    let out = cli(&[
        "check",
        "--config",
        bad.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["clean"], false);
    let problems = report["problems"].as_array().unwrap();
    for (email, _, _, problem) in &planted {
        assert!(
            problems.iter().any(|p| {
                p["field"].as_str().unwrap().contains(email)
                    && p["problem"].as_str().unwrap().contains(problem)
                    && !p["fix"].as_str().unwrap().is_empty()
                    && p["file"].as_str().unwrap().ends_with("check.toml")
            }),
            "{email}: `{problem}` not reported: {report:#}"
        );
    }
    let named: Vec<&str> = problems
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert!(
        !named
            .iter()
            .any(|f| f.contains("a@ok.example") || f.contains(PST)),
        "the good keys are not flagged (the twin is, once): {named:?}"
    );

    // A listener on a public address is worth a warning.
    let open = config_with(&f, &member(PST, &pst, true), "");
    let mut text_open = std::fs::read_to_string(&open).unwrap();
    text_open.push_str("\n[inbound.smtp]\nlisten = \"0.0.0.0:2525\"\n");
    std::fs::write(&open, text_open).unwrap();
    // A warning: it may be meant (a firewalled listener), so exit 0.
    let out = cli(&["check", "--config", open.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("inbound.smtp.listen: warning:")
            && output_text(&out).contains("not loopback")
            && output_text(&out).contains(&format!("clean (one list, {LIST}), 1 warning(s)")),
        "{}",
        output_text(&out)
    );

    // Problems of the configuration itself, one file each.
    let list_public = f.path("keys/list-public.asc");
    std::fs::write(
        &list_public,
        crypto::armored_public(&f.list.clone().strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    for (what, members, list_extra, field, problem) in [
        (
            "unknown key",
            member(PST, &pst, true),
            "colour = \"blue\"",
            "",
            "colour",
        ),
        (
            "duplicate member",
            member(PST, &pst, true)
                + &member("a@ok.example", &a, false)
                + &member("a@ok.example", &a, false),
            "",
            "member",
            "listed twice",
        ),
    ] {
        let path = config_with(&f, &members, list_extra);
        let out = cli(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", output_text(&out));
        assert!(
            output_text(&out).contains(problem) && output_text(&out).contains(field),
            "{what}: {}",
            output_text(&out)
        );
        assert!(
            output_text(&out).contains("fix:"),
            "{what}: {}",
            output_text(&out)
        );
    }
    // The list's public key where its secret key belongs.
    let path = config_with_key(&f, "keys/list-public.asc", &member(PST, &pst, true), "")
        .to_str()
        .unwrap()
        .to_owned();
    let out = cli(&["check", "--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("list.secret_key")
            && output_text(&out).contains("no secret key material"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn import_markdown_reads_all_27_rows_and_names_who_lacks_a_certificate() {
    let f = Fixture::new();
    let born = now() - chrono::Duration::days(1);
    let pst = write_cert(
        &f,
        "pst",
        &crypto::generate_key("pst <pst@ok.example>", born, None).unwrap(),
    );
    let config = config_with(
        &f,
        &member(PST, &pst, true),
        "roster_file = \"roster.toml\"",
    );
    let table =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/private-distributors-list.md");
    let cfg = config.to_str().unwrap();
    let out = cli(&[
        "roster",
        "--config",
        cfg,
        "import-markdown",
        table.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let report = output_text(&out);
    assert!(
        report.contains("27 rows read") && report.contains("27 imported"),
        "{report}"
    );
    assert!(
        report.contains("27 member(s) still lack a certificate"),
        "{report}"
    );
    // The last row has no closing pipe.
    assert!(report.contains("security@platform9.com"), "{report}");

    let list = output_text(&cli(&["roster", "--config", cfg, "list"]));
    for (email, org) in [
        ("argoprod@us.ibm.com", "IBM"),
        ("security@platform9.com", "Platform9"),
        ("security@gravitational.com", "Gravitational"),
        ("secalert@redhat.com", "Red Hat"),
    ] {
        let line = list
            .lines()
            .find(|l| l.starts_with(email))
            .unwrap_or_else(|| panic!("{list}"));
        assert!(line.contains(org) && line.contains("MISSING"), "{line}");
    }
    assert_eq!(
        list.lines().count(),
        1 + 1 + 27,
        "header, the PST, 27 imported:\n{list}"
    );

    // Adding the certificate makes the member complete; importing again adds nobody.
    let key = write_cert(
        &f,
        "ibm",
        &crypto::generate_key("IBM <argoprod@us.ibm.com>", born, None).unwrap(),
    );
    let out = cli(&[
        "roster",
        "--config",
        cfg,
        "add",
        "argoprod@us.ibm.com",
        "--organization",
        "IBM",
        "--key",
        f.path(&key).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let again = output_text(&cli(&[
        "roster",
        "--config",
        cfg,
        "import-markdown",
        table.to_str().unwrap(),
    ]));
    assert!(again.contains("0 imported, 27 already"), "{again}");
    assert!(again.contains("26 member(s) still lack"), "{again}");
    let out = cli(&["roster", "--config", cfg, "remove", "argoprod@us.ibm.com"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cli(&["roster", "--config", cfg, "remove", PST]);
    assert!(
        !out.status.success(),
        "a config member is edited in the config"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_answers_for_an_announcement_after_a_mixed_delivery() {
    let f = Fixture::new();
    let daemon = f
        .start_in_process(&Tweaks {
            outbound: vec![
                ("retry_initial", Tweaks::text("1h")),
                ("retry_max", Tweaks::text("1h")),
            ],
            ..Tweaks::default()
        })
        .await;
    let (sink, config) = (&daemon.sink, &daemon.config);
    sink.answer_for(SQ_MEMBER, 550, None);
    sink.answer_for(GPG_MEMBER, 451, None);
    let reply = send(
        daemon.addr(),
        PST,
        &f.gpg_signed(PST, "mixed", &embargoed("AUDIT-CANARY")),
    )
    .await
    .unwrap();
    let id = reply.rsplit(' ').next().unwrap().to_owned();
    sink.wait_until(PATIENCE, |g| !receipts(g).is_empty()).await;

    let cfg = config.to_str().unwrap();
    let out = cli(&["audit", "--config", cfg, "--embargo", &id]);
    assert!(out.status.success(), "{}", output_text(&out));
    let report = output_text(&out);
    let row = |who: &str| {
        report
            .lines()
            .find(|l| l.contains(" copy ") && l.contains(who))
            .unwrap_or_else(|| panic!("no copy row for {who}:\n{report}"))
            .to_owned()
    };
    assert!(row(PST).contains("sent"), "{report}");
    assert!(
        row(SQ_MEMBER).contains("failed") && row(SQ_MEMBER).contains("550"),
        "{report}"
    );
    assert!(
        row(SQ_MEMBER).contains("Org 2"),
        "the organization: {report}"
    );
    assert!(
        row(GPG_MEMBER).contains("pending") && row(GPG_MEMBER).contains("451"),
        "{report}"
    );
    assert!(row(EXPIRED_MEMBER).contains("skipped"), "{report}");
    assert!(
        report.contains("TRAIL") && report.contains("accepted"),
        "{report}"
    );
    assert!(!report.contains("AUDIT-CANARY"), "no content in the audit");

    let mine = output_text(&cli(&["audit", "--config", cfg, "--member", SQ_MEMBER]));
    assert!(mine.contains("failed") && mine.contains(&id), "{mine}");
    assert!(!mine.contains(GPG_MEMBER), "only that member: {mine}");

    let status = output_text(&cli(&["status", "--config", cfg]));
    assert!(
        // The reminder, five lifted notices, four reminders to acknowledge.
        status.contains("0 due now, 1 retrying, 1 failed, 0 bounced; 10 scheduled for later"),
        "{status}"
    );
    // The reminder a day before the embargo lifts is scheduled, not stuck.
    // (It goes with the members' reminders to acknowledge, at the same time.)
    assert!(
        status
            .lines()
            .any(|l| l.contains("reminder") && l.contains(&id) && l.contains("due ")),
        "{status}"
    );
    assert!(
        f.spool()
            .deliveries(Some(&id), Some(PST))
            .unwrap()
            .iter()
            .any(|r| r.kind == embargo_relay::spool::Kind::Reminder
                && r.state == embargo_relay::spool::DeliveryState::Pending),
        "the PST's reminder is scheduled"
    );
    assert!(
        status.contains("HELD EMBARGOES: 1") && status.contains(&id),
        "{status}"
    );
    assert!(
        status.contains(EXPIRED_MEMBER) && status.contains(MISSING_MEMBER),
        "keys: {status}"
    );
}

/// Issue 13: relative paths are taken from the config file's directory for
/// every command, also when the config itself is given as a bare name
/// (`--config config.toml`, run from its folder).
#[tokio::test(flavor = "multi_thread")]
async fn every_command_takes_a_relative_config_path() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    f.write_config_with(
        sink.addr(),
        &Tweaks {
            list: vec![("roster_file", Tweaks::text("roster.toml"))],
            ..Tweaks::default()
        },
    );
    let here = f.dir.path();
    let rel = |args: &[&str], stdin: &[u8]| -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
            .args(args)
            .current_dir(here)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let out = rel(args, b"");
        assert!(out.status.success(), "{args:?}: {}", output_text(&out));
        output_text(&out)
    };
    let c = ["--config", "config.toml"];

    // check: the keys are found (only the planted expired and missing ones are reported).
    let out = rel(&["check", c[0], c[1]], b"");
    let report = output_text(&out);
    assert!(
        report.contains(EXPIRED_MEMBER) && report.contains(MISSING_MEMBER),
        "{report}"
    );
    assert!(report.contains("2 problem(s)"), "{report}");

    // run, from the config's folder.
    let mut command = Command::new(env!("CARGO_BIN_EXE_embargo-relay"));
    command.current_dir(here);
    let daemon = Daemon::spawn(command, Path::new("config.toml"), &f.path("daemon.log"));
    let reply = send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "relative", &embargoed("relative config")),
    )
    .await
    .unwrap();
    let id = reply.rsplit(' ').next().unwrap().to_owned();
    wait_copies(&sink, f.usable_members().count()).await;

    // submit.
    let mail = f.gpg_signed(PST, "relative 2", &embargoed("by submit"));
    let out = rel(&["submit", c[0], c[1]], &mail);
    assert!(out.status.success(), "{}", output_text(&out));

    // roster: import-markdown (the reported failure), add, list, remove.
    std::fs::write(
        f.path("members.md"),
        "| Email | Organization |\n| --- | --- |\n| security@new.example | New Org |\n",
    )
    .unwrap();
    let report = ok(&["roster", c[0], c[1], "import-markdown", "members.md"]);
    assert!(report.contains("1 imported"), "{report}");
    let key = write_cert(
        &f,
        "new",
        &crypto::generate_key("New <security@new.example>", now(), None).unwrap(),
    );
    ok(&[
        "roster",
        c[0],
        c[1],
        "add",
        "security@new.example",
        "--organization",
        "New Org",
        "--key",
        &key,
    ]);
    assert!(f.path("roster.toml").exists(), "written beside the config");
    let list = ok(&["roster", c[0], c[1], "list"]);
    assert!(list.contains("security@new.example"), "{list}");
    ok(&["roster", c[0], c[1], "remove", "security@new.example"]);

    // status, audit, embargo list/show/extend/release-now.
    assert!(ok(&["status", c[0], c[1]]).contains("HELD EMBARGOES: 2"));
    assert!(ok(&["audit", c[0], c[1], "--embargo", &id]).contains("accepted"));
    assert!(ok(&["embargo", c[0], c[1], "list"]).contains(&id));
    assert!(ok(&["embargo", c[0], c[1], "show", &id]).contains(&id));
    let later = (now() + chrono::Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    ok(&["embargo", c[0], c[1], "extend", &id, &later]);
    ok(&["embargo", c[0], c[1], "release-now", &id]);
    drop(daemon);
}
