//! Acceptance 8: `embargo-relay demo` runs the whole list and exits 0.

#[test]
fn demo_exits_zero_after_checking_every_copy() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .arg("demo")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all 4 member copies decrypt"), "{stdout}");
    assert!(
        stdout.contains("signed by the list key: good"),
        "the public release is shown: {stdout}"
    );
    assert!(
        stdout.contains("Subject: [embargoed announcement]"),
        "{stdout}"
    );
}

/// Issue 13: `demo --keep DIR` keeps secret keys at 0600, and the commands
/// it prints work: gpg reads a member's copy, and running it again sends
/// another announcement to the same list.
#[test]
fn a_kept_demo_list_can_be_read_with_gpg_and_used_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("list");
    let demo = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
            .args(["demo", "--keep"])
            .arg(&kept)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = demo();
    let mut secrets = 0;
    for dir in [kept.join("keys"), kept.join("keys/secret")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "key") {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
                secrets += 1;
            }
        }
    }
    assert_eq!(
        secrets, 5,
        "the list's, the PST's and three members' secret keys"
    );

    // The printed gpg commands, run as printed (GNUPGHOME a fresh directory).
    let commands: Vec<&str> = first
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("gpg "))
        .collect();
    assert_eq!(commands.len(), 2, "{first}");
    let gpg = crate::common::Gpg::new();
    for command in commands {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let out = gpg.run(&args, b"");
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if command.contains("--decrypt") {
            assert!(String::from_utf8_lossy(&out.stdout).contains("path traversal"));
        }
    }

    // Run again: the same list (same key) takes another announcement.
    let fingerprint = |text: &str| {
        text.lines()
            .find(|l| l.contains(" the list key "))
            .and_then(|l| l.split_whitespace().nth(3))
            .map(str::to_owned)
    };
    let second = demo();
    assert!(second.contains("reusing the list key"), "{second}");
    assert_eq!(fingerprint(&first), fingerprint(&second), "{second}");
    assert!(second.contains("all 4 member copies decrypt"), "{second}");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["embargo", "--config"])
        .arg(kept.join("config.toml"))
        .arg("list")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.contains("lifted")).count(),
        2,
        "{listing}"
    );
}
