use super::*;

#[test]
fn the_key_comes_from_the_systemd_credential_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = Path::new("/etc/embargo-relay/keys/list.key");
    assert_eq!(key_source(file, None), file);
    assert_eq!(
        key_source(file, Some(dir.path())),
        file,
        "no such credential"
    );
    std::fs::write(dir.path().join(KEY_CREDENTIAL), "key").unwrap();
    assert_eq!(
        key_source(file, Some(dir.path())),
        dir.path().join("list-key")
    );
}

#[test]
fn durations_and_sizes() {
    assert_eq!(
        parse_duration("72h").unwrap(),
        Duration::from_secs(72 * 3600)
    );
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert!(parse_duration("5 weeks").is_err());
    for spelled in ["5d", "90m", "1h", "30s", "250ms"] {
        assert_eq!(human_duration(parse_duration(spelled).unwrap()), spelled);
    }
    assert_eq!(parse_size("25MiB").unwrap(), 25 << 20);
    assert_eq!(parse_size("1000").unwrap(), 1000);
    assert!(parse_size("lots").is_err());
}

#[test]
fn smarthost_forms() {
    assert_eq!(
        parse_smarthost("smtp://127.0.0.1:2526").unwrap(),
        ("127.0.0.1".into(), 2526)
    );
    assert_eq!(
        parse_smarthost("smtp://mx.example.org").unwrap(),
        ("mx.example.org".into(), 25)
    );
    assert_eq!(
        parse_smarthost("smtp://[::1]:25").unwrap(),
        ("::1".into(), 25)
    );
    assert!(parse_smarthost("smtps://mx.example.org").is_err());
}

#[test]
fn addresses() {
    assert_eq!(check_address("Sec@Example.org").unwrap(), "sec@example.org");
    for bad in ["", "nobody", "a@b@c", "x\r\nBcc: y@z", "<a@b>", "a b@c"] {
        assert!(check_address(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_example_config_uses_only_known_fields() {
    let raw: RawConfig = toml::from_str(include_str!("../../config/embargo-relay.example.toml"))
        .expect("config/embargo-relay.example.toml must parse");
    assert_eq!(raw.members.len(), 2);
    assert!(raw.members[0].pst);
    parse_smarthost(&raw.outbound.smarthost).unwrap();
}

#[test]
fn imap_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let path = dir.path().join("c.toml");
    let v = Validator {
        path: &path,
        base: dir.path(),
    };
    let raw = |host: &str, tls: Option<&str>, pw: &str| RawImap {
        host: host.into(),
        port: None,
        tls: tls.map(Into::into),
        ca_file: None,
        user: "relay".into(),
        password_file: pw.into(),
        mailbox: None,
        poll_interval: None,
        done_folder: None,
    };
    let ok = v.imap(raw("imap.example.org", None, "pw")).unwrap();
    assert_eq!((ok.port, ok.tls), (993, ImapTls::Implicit));
    assert_eq!(ok.password.expose(), b"s3cret");
    assert!(!format!("{ok:?}").contains("s3cret"), "password redacted");
    assert_eq!(ok.mailbox, "INBOX");
    let local = v.imap(raw("127.0.0.1", Some("none"), "pw")).unwrap();
    assert_eq!(local.port, 143);
    let err = v
        .imap(raw("imap.example.org", Some("none"), "pw"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("inbound.imap.tls") && err.contains("in clear"),
        "{err}"
    );
    let err = v
        .imap(raw("imap.example.org", None, "missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("inbound.imap.password_file"), "{err}");
}

#[test]
fn mime_limits_default_and_are_checked() {
    let path = Path::new("/etc/er.toml");
    let v = Validator {
        path,
        base: Path::new("/etc"),
    };
    assert_eq!(
        v.mime_limits(&RawPolicy::default()).unwrap(),
        MimeLimits::default()
    );
    let set = v
        .mime_limits(&RawPolicy {
            mime_max_parts: Some(10),
            mime_max_header_size: Some("4KiB".into()),
            ..RawPolicy::default()
        })
        .unwrap();
    assert_eq!((set.max_parts, set.max_header_size), (10, 4096));
    let zero = RawPolicy {
        mime_max_depth: Some(0),
        ..RawPolicy::default()
    };
    let err = v.mime_limits(&zero).unwrap_err().to_string();
    assert!(err.contains("policy.mime_max_depth"), "{err}");
    let tiny = RawPolicy {
        mime_max_header_size: Some("100".into()),
        ..RawPolicy::default()
    };
    let err = v.mime_limits(&tiny).unwrap_err().to_string();
    assert!(err.contains("policy.mime_max_header_size"), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    let err = Config::parse(
        "[list]\naddress='l@x.org'\nsecret_key='k'\nstate_dir='s'\nsurprise=1\n[outbound]\nsmarthost='smtp://h'\n",
        Path::new("/etc/er.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("surprise"), "{err}");
    assert!(err.contains("/etc/er.toml"), "{err}");
}
