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
