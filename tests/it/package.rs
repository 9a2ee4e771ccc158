//! Issue 22: the Debian package. `scripts/package` builds it (from this
//! build's binary) and the previous release's (0.1.0, built by
//! `scripts/previous-release`); lintian finds no error; dpkg installs
//! 0.1.0, whose binary writes a held embargo; dpkg upgrades to this
//! version, and the held release, the audit trail and replay protection
//! survive (the daemon releases the advisory; 0.1.0 then refuses the newer
//! spool); the installed binary passes `check` on the installed example
//! configuration; every manual page renders; removal keeps the state and
//! configuration, a purge deletes the spool and says so.
//!
//! It installs into this machine (as root, in CI), so it refuses to run
//! where embargo-relay is installed or set up and it did not do it. It
//! leaves the system user `embargo-relay` behind (as a purge does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use embargo_relay::crypto;
use embargo_relay::sink::CaptureSink;

use crate::common::*;

const STATE: &str = "/var/lib/embargo-relay";
const ETC: &str = "/etc/embargo-relay";
const CONFIG: &str = "/etc/embargo-relay/config.toml";
/// Left by this test in /etc/embargo-relay: what it finds there it may purge.
const MARK: &str = "/etc/embargo-relay/.installed-by-the-package-test";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn must(program: &str, args: &[&str]) -> String {
    let o = run(program, args);
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        output_text(&o)
    );
    output_text(&o)
}

/// `embargo-relay args…` run by the installed binary (or `binary`) as the
/// service's user, as the unit and Postfix's pipe run it.
fn as_service(binary: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new("runuser")
        .args(["-u", "embargo-relay", "--", binary])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn installed() -> bool {
    let o = run("dpkg-query", &["-W", "-f=${Status}", "embargo-relay"]);
    String::from_utf8_lossy(&o.stdout).contains("ok installed")
}

/// Purges the package and this test's files however the test ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "embargo-relay"]);
        let _ = std::fs::remove_dir_all(ETC);
        let _ = std::fs::remove_dir_all(STATE);
    }
}

/// A file for the service: `owner` root or embargo-relay, group embargo-relay.
fn put(path: &str, bytes: &[u8], mode: &str, owner: &str) {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
    must("chown", &[&format!("{owner}:embargo-relay"), path]);
    must("chmod", &[mode, path]);
}

fn package(binary: &Path, docs_from: &Path, out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package");
    let o = Command::new(&script)
        .arg("--binary")
        .arg(binary)
        .arg("--docs-from")
        .arg(docs_from)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "scripts/package: {}", output_text(&o));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_package_installs_upgrades_from_0_1_0_keeping_state_and_removes_cleanly() {
    let in_ci = std::env::var_os("CI").is_some();
    let root = String::from_utf8(run("id", &["-u"]).stdout).unwrap().trim() == "0";
    let previous = std::env::var_os("EMBARGO_RELAY_PREVIOUS_BIN").map(PathBuf::from);
    let (true, Some(previous)) = (root, previous) else {
        // Both are there under scripts/test as root, which CI is.
        assert!(
            !in_ci,
            "in CI this test runs as root, through scripts/test (which builds 0.1.0 and sets EMBARGO_RELAY_PREVIOUS_BIN)"
        );
        eprintln!(
            "package test skipped: it needs root and scripts/test (EMBARGO_RELAY_PREVIOUS_BIN)"
        );
        return;
    };
    // Only what this test made is ever removed: a machine with the package,
    // a configuration or a spool of its own is left alone.
    let ours = Path::new(MARK).exists();
    assert!(
        ours || !(installed() || Path::new(ETC).exists() || Path::new(STATE).exists()),
        "embargo-relay is installed or set up on this machine ({ETC}, {STATE}): the package test will not touch it"
    );
    if ours {
        drop(Cleanup); // what a run that crashed left
    }
    let _cleanup = Cleanup;
    let current = PathBuf::from(env!("CARGO_BIN_EXE_embargo-relay"));
    let out = tempfile::tempdir().unwrap();
    // 0.1.0 runs as the service's user below: from where it may read it
    // (a checkout under /root is not).
    let shared = tempfile::tempdir().unwrap();
    must("chmod", &["0755", shared.path().to_str().unwrap()]);
    let old_binary = shared.path().join("embargo-relay-0.1.0");
    std::fs::copy(&previous, &old_binary).unwrap();
    let new = package(&current, &current, &out.path().join("new"));
    // 0.1.0 cannot make pages: this build's stand in (they are not looked at).
    let old = package(&previous, &current, &out.path().join("old"));
    assert!(
        new.to_string_lossy().ends_with(&format!(
            "embargo-relay_{}_{}.deb",
            env!("CARGO_PKG_VERSION"),
            must("dpkg", &["--print-architecture"]).trim()
        )),
        "{}",
        new.display()
    );
    assert!(
        old.to_string_lossy().contains("embargo-relay_0.1.0_"),
        "{}",
        old.display()
    );

    // lintian: no error (its verdict is its exit status).
    let lint = run("lintian", &["--fail-on", "error", new.to_str().unwrap()]);
    assert!(lint.status.success(), "lintian: {}", output_text(&lint));

    // 0.1.0 installs: the user and directories, and nothing started.
    let said = must("dpkg", &["-i", old.to_str().unwrap()]);
    assert!(said.contains("installed, not started"), "{said}");
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/embargo-relay.service").exists(),
        "not enabled"
    );
    std::fs::write(MARK, "").unwrap();
    must("getent", &["passwd", "embargo-relay"]);
    let state = std::fs::metadata(STATE).unwrap();
    assert!(state.is_dir());
    assert_eq!(
        must("stat", &["-c", "%a %U", STATE]).trim(),
        "700 embargo-relay"
    );
    assert!(
        !Path::new(CONFIG).exists(),
        "the package writes no configuration"
    );
    assert!(must("/usr/bin/embargo-relay", &["--version"]).contains("0.1.0"));

    // A list, its state written by 0.1.0: a held embargo (by `submit`, as
    // Postfix's pipe hands it over).
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let public =
        |m: &embargo_relay::sink::Captured| m.envelope.rcpt_to == vec![PUBLIC_DEFAULT.to_owned()];
    put(
        &format!("{ETC}/keys/test-list.key"),
        &crypto::armored_secret(&f.list).unwrap(),
        "0400",
        "embargo-relay",
    );
    for (i, name) in [(0, "test-pst"), (1, "test-member")] {
        let cert = f.members[i].secret.clone().strip_secret_key_material();
        put(
            &format!("{ETC}/keys/members/{name}.asc"),
            &crypto::armored_public(&cert).unwrap(),
            "0640",
            "root",
        );
    }
    let config = format!(
        "[list]\naddress = \"{LIST}\"\nsecret_key = \"keys/test-list.key\"\nstate_dir = \"{STATE}\"\n\n\
         [inbound.smtp]\nlisten = \"127.0.0.1:0\"\n\n\
         [outbound]\nsmarthost = \"smtp://{}\"\nretry_initial = \"1s\"\n\n\
         [public]\nrecipients = [\"{PUBLIC_DEFAULT}\"]\n\n\
         [[member]]\nemail = \"{PST}\"\norganization = \"PST\"\nkey = \"keys/members/test-pst.asc\"\npst = true\n\n\
         [[member]]\nemail = \"{GPG_MEMBER}\"\norganization = \"Distro\"\nkey = \"keys/members/test-member.asc\"\n",
        sink.addr()
    );
    put(CONFIG, config.as_bytes(), "0640", "root");
    let (mail, _) = (
        {
            let until = (now() + chrono::Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ");
            let body = format!("Embargo-Until: {until}\n\nPRIVATE-CANARY for members.\n");
            let entity = embargo_relay::compose::text_with_advisory(
                "CVE-2026-9: z",
                &body,
                "ADVISORY-CANARY is public.",
            );
            f.gpg_signed_entity(PST, "CVE-2026-9: z", &entity)
        },
        (),
    );
    let submit = |binary: &str, sender: &str| {
        as_service(
            binary,
            &[
                "submit",
                "--config",
                CONFIG,
                "--sender",
                sender,
                "--recipient",
                LIST,
            ],
            Some(&mail),
        )
    };
    let first = submit("/usr/bin/embargo-relay", PST);
    assert!(
        first.status.success(),
        "0.1.0 submit: {}",
        output_text(&first)
    );
    let listed = as_service(
        "/usr/bin/embargo-relay",
        &["embargo", "--config", CONFIG, "list"],
        None,
    );
    let listed = output_text(&listed);
    let id = listed
        .lines()
        .find(|l| l.contains("held"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("0.1.0 lists no held embargo: {listed}"))
        .to_owned();

    // The upgrade: the configuration passes `check`, nothing is said.
    let said = must("dpkg", &["-i", new.to_str().unwrap()]);
    assert!(!said.contains("does not pass"), "{said}");
    assert!(must("/usr/bin/embargo-relay", &["--version"]).contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        config,
        "the configuration is the operator's"
    );
    let check = as_service(
        "/usr/bin/embargo-relay",
        &["check", "--config", CONFIG],
        None,
    );
    assert!(check.status.success(), "check: {}", output_text(&check));

    // Held release, audit trail and replay protection, through the new binary.
    let listed = output_text(&as_service(
        "/usr/bin/embargo-relay",
        &["embargo", "--config", CONFIG, "list"],
        None,
    ));
    assert!(
        listed.lines().any(|l| l.starts_with(&id)
            && l.contains("held")
            && l.contains(&format!("{PUBLIC_DEFAULT} (pending)"))),
        "{listed}"
    );
    let audit = output_text(&as_service(
        "/usr/bin/embargo-relay",
        &["audit", "--config", CONFIG, "--embargo", &id],
        None,
    ));
    assert!(audit.contains("accepted"), "{audit}");
    let again = submit("/usr/bin/embargo-relay", PST);
    assert!(
        again.status.success()
            && output_text(&again).contains(&format!("already accepted as {id}")),
        "{}",
        output_text(&again)
    );
    let replay = submit("/usr/bin/embargo-relay", "someone-else@example.net");
    assert_eq!(
        replay.status.code(),
        Some(77),
        "a replay: {}",
        output_text(&replay)
    );
    assert!(
        output_text(&replay).contains("replayed"),
        "{}",
        output_text(&replay)
    );
    // 0.1.0 refuses the migrated spool rather than misread it.
    let downgrade = as_service(
        old_binary.to_str().unwrap(),
        &["embargo", "--config", CONFIG, "list"],
        None,
    );
    assert!(!downgrade.status.success(), "{}", output_text(&downgrade));
    assert!(
        output_text(&downgrade).contains("newer than this program's"),
        "{}",
        output_text(&downgrade)
    );

    // The upgraded daemon (as the unit runs it) publishes the record 0.1.0
    // sealed, once the operator lifts the embargo.
    let log = f.path("daemon.log");
    // setpriv execs the daemon itself (runuser would stand between it and
    // the signal).
    let mut command = Command::new("setpriv");
    command.args([
        "--reuid=embargo-relay",
        "--regid=embargo-relay",
        "--init-groups",
        "/usr/bin/embargo-relay",
    ]);
    let mut daemon = Daemon::spawn(command, Path::new(CONFIG), &log);
    let lifted = as_service(
        "/usr/bin/embargo-relay",
        &["embargo", "--config", CONFIG, "release-now", &id],
        None,
    );
    assert!(lifted.status.success(), "{}", output_text(&lifted));
    let got = sink.wait_until(PATIENCE, |g| g.iter().any(public)).await;
    let release = got
        .iter()
        .find(|m| public(m))
        .expect("the held advisory released");
    assert!(find(&release.raw, b"ADVISORY-CANARY").is_some());
    assert!(find(&release.raw, b"PRIVATE-CANARY").is_none());
    assert!(daemon.terminate(), "the daemon stops on SIGTERM");

    // The example configuration, as installed, passes `check` once the
    // keys it names are there.
    let born = now() - chrono::Duration::hours(1);
    let key = |uid: &str| crypto::generate_key(uid, born, None).unwrap();
    put(
        &format!("{ETC}/keys/list.key"),
        &crypto::armored_secret(&key("List <distributors-announce@lists.example.org>")).unwrap(),
        "0400",
        "embargo-relay",
    );
    for (file, uid) in [
        ("pst.asc", "PST <security@example.org>"),
        ("distro.asc", "Distro <secalert@distro.example>"),
    ] {
        put(
            &format!("{ETC}/keys/members/{file}"),
            &crypto::armored_public(&key(uid).strip_secret_key_material()).unwrap(),
            "0640",
            "root",
        );
    }
    let example = "/usr/share/doc/embargo-relay/examples/config.toml";
    let check = as_service(
        "/usr/bin/embargo-relay",
        &["check", "--config", example],
        None,
    );
    assert!(
        check.status.success(),
        "check of the installed example: {}",
        output_text(&check)
    );

    // Every manual page renders; the completions are where shells look.
    let pages: Vec<PathBuf> = std::fs::read_dir("/usr/share/man/man8")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("embargo-relay")
        })
        .collect();
    assert!(pages.len() >= 15, "{pages:?}");
    for page in &pages {
        let o = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(page)
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stdout.len() > 200,
            "man -l {}: {}",
            page.display(),
            output_text(&o)
        );
    }
    let main_page = Command::new("man")
        .args([
            "-l",
            "-P",
            "cat",
            "/usr/share/man/man8/embargo-relay-submit.8.gz",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&main_page.stdout).contains("Postfix master.cf"),
        "the example from --help"
    );
    for file in [
        "/usr/share/bash-completion/completions/embargo-relay",
        "/usr/share/zsh/vendor-completions/_embargo-relay",
        "/usr/share/fish/vendor_completions.d/embargo-relay.fish",
    ] {
        assert!(Path::new(file).is_file(), "{file}");
    }
    must(
        "bash",
        &["-n", "/usr/share/bash-completion/completions/embargo-relay"],
    );

    // Removal keeps the spool and the configuration; a purge deletes the
    // spool and says so, and keeps what the operator wrote.
    let said = must("dpkg", &["-r", "embargo-relay"]);
    assert!(said.contains("Kept /var/lib/embargo-relay"), "{said}");
    assert!(!Path::new("/usr/bin/embargo-relay").exists());
    assert!(
        Path::new(STATE).join("spool.sqlite").exists(),
        "the spool is kept"
    );
    assert!(Path::new(CONFIG).exists());
    let said = must("dpkg", &["--purge", "embargo-relay"]);
    assert!(
        said.contains("purging deletes /var/lib/embargo-relay"),
        "{said}"
    );
    assert!(said.contains("kept /etc/embargo-relay"), "{said}");
    assert!(!Path::new(STATE).exists(), "purged");
    assert!(
        Path::new(CONFIG).exists(),
        "the operator's configuration is kept (and said so)"
    );
    assert!(!installed());
}

/// The maintainer scripts' decisions where systemd runs (which the package
/// test, without systemd, never reaches): under `DPKG_ROOT`, with stubs on
/// `PATH` recording what they are asked (`systemctl`, `deb-systemd-invoke`,
/// `deb-systemd-helper`, `systemd-sysusers`, `systemd-tmpfiles`) and
/// `runuser` answering for `check`. Any user may run it.
#[test]
fn the_maintainer_scripts_stop_for_an_upgrade_and_start_only_a_checked_configuration() {
    let root = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let log = root.path().join("calls.log");
    std::fs::create_dir_all(root.path().join("run/systemd/system")).unwrap();
    std::fs::create_dir_all(root.path().join("etc/embargo-relay")).unwrap();
    for (name, body) in [
        (
            "systemctl",
            "echo \"systemctl $*\" >> \"$LOG\"\n[ \"$1\" = is-active ] && exit \"${ACTIVE:-3}\"\nexit 0\n",
        ),
        ("deb-systemd-invoke", "echo \"invoke $*\" >> \"$LOG\"\n"),
        ("deb-systemd-helper", "echo \"helper $*\" >> \"$LOG\"\n"),
        ("systemd-sysusers", "echo \"sysusers $*\" >> \"$LOG\"\n"),
        ("systemd-tmpfiles", "echo \"tmpfiles $*\" >> \"$LOG\"\n"),
        (
            "runuser",
            "echo \"runuser $*\" >> \"$LOG\"\n[ \"${CHECK:-pass}\" = pass ] && exit 0\necho 'config.toml: list.secret_key: SOME-PROBLEM'\nexit 1\n",
        ),
    ] {
        let path = bin.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        must("chmod", &["0755", path.to_str().unwrap()]);
    }
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/debian");
    let flag = root.path().join("run/embargo-relay.restart-after-upgrade");
    let config = root.path().join("etc/embargo-relay/config.toml");
    // Runs a script; what it printed, and the calls it made.
    let script = |name: &str, args: &[&str], env: &[(&str, &str)]| -> (String, Vec<String>) {
        let _ = std::fs::remove_file(&log);
        let o = Command::new("sh")
            .arg(scripts.join(name))
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
            .env("DPKG_ROOT", root.path())
            .env("LOG", &log)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{name} {args:?}: {}", output_text(&o));
        let calls = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        (output_text(&o), calls)
    };
    let starts = |calls: &[String]| calls.iter().any(|c| c.starts_with("invoke start"));
    let stops = |calls: &[String]| calls.iter().any(|c| c.starts_with("invoke stop"));

    // A first install: the user and directories, no start, no check.
    let (said, calls) = script("postinst", &["configure"], &[]);
    assert!(said.contains("installed, not started"), "{said}");
    assert!(
        calls.iter().any(|c| c.starts_with("sysusers"))
            && calls.iter().any(|c| c.starts_with("tmpfiles")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "systemctl --system daemon-reload"),
        "{calls:?}"
    );
    assert!(
        !starts(&calls) && !calls.iter().any(|c| c.starts_with("runuser")),
        "{calls:?}"
    );
    std::fs::write(&config, "").unwrap();

    // An upgrade of a running service, its configuration good: stopped
    // before the new binary is unpacked, started after.
    let (_, calls) = script("prerm", &["upgrade", "0.2.0"], &[("ACTIVE", "0")]);
    assert!(stops(&calls) && flag.exists(), "{calls:?}");
    let (said, calls) = script("postinst", &["configure", "0.1.0"], &[]);
    assert!(
        calls
            .iter()
            .any(|c| c.contains("runuser -u embargo-relay -- embargo-relay check --config")),
        "{calls:?}"
    );
    assert!(starts(&calls), "{calls:?} {said}");
    assert!(!flag.exists());

    // Its configuration bad: it stays stopped, and the operator reads why.
    script("prerm", &["upgrade", "0.2.0"], &[("ACTIVE", "0")]);
    let (said, calls) = script("postinst", &["configure", "0.1.0"], &[("CHECK", "fail")]);
    assert!(!starts(&calls), "{calls:?}");
    assert!(
        said.contains("does not pass")
            && said.contains("  config.toml: list.secret_key: SOME-PROBLEM")
            && said.contains("stays stopped"),
        "{said}"
    );
    assert!(!flag.exists());

    // A service that was not running is not started by an upgrade.
    let (_, calls) = script("prerm", &["upgrade", "0.2.0"], &[("ACTIVE", "3")]);
    assert!(!stops(&calls) && !flag.exists(), "{calls:?}");
    let (_, calls) = script("postinst", &["configure", "0.1.0"], &[]);
    assert!(!starts(&calls), "{calls:?}");

    // An upgrade that fails: the old version is started again.
    script("prerm", &["upgrade", "0.2.0"], &[("ACTIVE", "0")]);
    let (_, calls) = script("postinst", &["abort-upgrade", "0.2.0"], &[]);
    assert!(starts(&calls) && !flag.exists(), "{calls:?}");

    // Removal stops it and keeps the state; a purge deletes the state and
    // an operator's enable link.
    let state = root.path().join("var/lib/embargo-relay");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("spool.sqlite"), "").unwrap();
    let wants = root
        .path()
        .join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/embargo-relay.service",
        wants.join("embargo-relay.service"),
    )
    .unwrap();
    let (_, calls) = script("prerm", &["remove"], &[]);
    assert!(stops(&calls), "{calls:?}");
    let (said, _) = script("postrm", &["remove"], &[]);
    assert!(
        said.contains("Kept /var/lib/embargo-relay") && state.join("spool.sqlite").exists(),
        "{said}"
    );
    let (said, calls) = script("postrm", &["purge"], &[]);
    assert!(
        said.contains("purging deletes /var/lib/embargo-relay"),
        "{said}"
    );
    assert!(!state.exists(), "the state directory is purged");
    assert!(
        wants
            .join("embargo-relay.service")
            .symlink_metadata()
            .is_err(),
        "the enable link is gone"
    );
    assert!(
        calls
            .iter()
            .any(|c| c == "helper purge embargo-relay.service"),
        "{calls:?}"
    );
    assert!(config.exists(), "the configuration is the operator's");
}
