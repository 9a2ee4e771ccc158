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
    let several: RawConfig =
        toml::from_str(include_str!("../../config/several-lists.example.toml"))
            .expect("config/several-lists.example.toml must parse");
    let RawLists::Many(lists) = several.list else {
        panic!("the [[list]] form")
    };
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[1].members.len(), 2);
    assert!(several.defaults.state_dir.is_some());
}

#[test]
fn imap_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let path = dir.path().join("c.toml");
    let v = Validator {
        which: None,
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
        which: None,
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

/// A directory with a list key and two member certificates, for whole files.
fn keys_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let key = |uid: &str| crate::crypto::generate_key(uid, now, None).unwrap();
    for file in ["list.key", "list-b.key"] {
        std::fs::write(
            dir.path().join(file),
            crate::crypto::armored_secret(&key("List <a@x.org>")).unwrap(),
        )
        .unwrap();
    }
    for (file, uid) in [("pst.asc", "PST <pst@x.org>"), ("m.asc", "M <m@y.org>")] {
        let public = key(uid).strip_secret_key_material();
        std::fs::write(
            dir.path().join(file),
            crate::crypto::armored_public(&public).unwrap(),
        )
        .unwrap();
    }
    dir
}

const SHARED: &str = "
[defaults]
state_dir = 'state'
secret_key = 'list.key'

[outbound]
smarthost = 'smtp://127.0.0.1:2526'

[policy]
max_embargo = '7d'
member_posts = 'pst'

[public]
recipients = ['oss@x.org']

[[member]]
email = 'pst@x.org'
organization = 'PST'
key = 'pst.asc'
pst = true
";

/// `[[list]]` tables take what they do not set from the shared sections,
/// field by field for the policy; each is told of the others (their
/// addresses, the PST keys they share); `load` asks which list.
#[test]
fn several_lists_fall_back_on_the_shared_sections() {
    let dir = keys_dir();
    let path = dir.path().join("c.toml");
    let text = format!(
        "{SHARED}
[[list]]
address = 'a@x.org'

[[list]]
address = 'B@x.org'
secret_key = 'list-b.key'
request_address = 'b-join@x.org'
[list.policy]
max_embargo = '30d'
[list.public]
recipients = []
[[list.member]]
email = 'pst@x.org'
organization = 'PST'
key = 'pst.asc'
pst = true
[[list.member]]
email = 'm@y.org'
organization = 'Y'
key = 'm.asc'
"
    );
    let lists = Config::parse_all(&text, &path).unwrap();
    let (a, b) = (&lists[0], &lists[1]);
    assert_eq!(
        (a.list_address.as_str(), b.list_address.as_str()),
        ("a@x.org", "b@x.org")
    );
    assert_eq!(a.request_address, "a-request@x.org");
    assert_eq!(b.request_address, "b-join@x.org");
    assert_eq!(a.state_dir, b.state_dir, "one spool");
    assert_eq!(a.policy.max_embargo, chrono::Duration::days(7));
    assert_eq!(b.policy.max_embargo, chrono::Duration::days(30), "its own");
    assert_eq!(b.policy.member_posts, MemberPosts::Pst, "the rest shared");
    assert_eq!(a.policy.public_recipients, ["oss@x.org"]);
    assert!(b.policy.public_recipients.is_empty());
    assert_eq!(a.roster.members().len(), 1, "the shared [[member]]");
    assert_eq!(b.roster.members().len(), 2, "its own [[list.member]]");
    assert_eq!(a.neighbours.first, "a@x.org");
    assert_eq!(b.neighbours.first, "a@x.org");
    assert_eq!(a.neighbours.addresses, ["b@x.org", "b-join@x.org"]);
    assert_eq!(b.neighbours.addresses, ["a@x.org", "a-request@x.org"]);
    // One list must be named where one is meant.
    std::fs::write(&path, &text).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("2 lists (a@x.org, b@x.org)") && err.contains("--list"),
        "{err}"
    );
    assert_eq!(
        Config::load_list(&path, Some("B@X.org"))
            .unwrap()
            .list_address,
        "b@x.org"
    );
    let err = Config::load_list(&path, Some("c@x.org"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no list c@x.org"), "{err}");
    // The one-list form is read as before: the list alone, first of itself.
    let one = Config::parse(
        "[list]\naddress = 'solo@x.org'\nsecret_key = 'list.key'\nstate_dir = 'state'\n[outbound]\nsmarthost = 'smtp://h'\n[[member]]\nemail = 'pst@x.org'\norganization = 'PST'\nkey = 'pst.asc'\npst = true\n",
        &path,
    )
    .unwrap();
    assert_eq!(one.neighbours.first, "solo@x.org");
    assert!(one.neighbours.addresses.is_empty());
    assert_eq!(one.neighbours.lists, ["solo@x.org"]);
}

/// What cannot work with several lists is refused, naming the list.
#[test]
fn lists_that_would_collide_are_refused() {
    let dir = keys_dir();
    let path = dir.path().join("c.toml");
    let err = |tables: &str| {
        Config::parse_all(&format!("{SHARED}\n{tables}"), &path)
            .unwrap_err()
            .to_string()
    };
    let a = "[[list]]\naddress = 'a@x.org'\n";
    let b = |address: &str, more: &str| {
        format!("[[list]]\naddress = '{address}'\nsecret_key = 'list-b.key'\n{more}")
    };
    let e = err(&format!("{a}{}", b("A@x.org", "")));
    assert!(
        e.contains("[[list]] #2") && e.contains("already an address of the list a@x.org"),
        "{e}"
    );
    let e = err(&format!("{a}{}", b("a-request@x.org", "")));
    assert!(e.contains("already an address"), "{e}");
    let e = err(&format!("{a}{}", b("b@x.org", "state_dir = 'elsewhere'\n")));
    assert!(e.contains("share one spool"), "{e}");
    let e = err(&format!(
        "{a}roster_file = 'r.toml'\n{}",
        b("b@x.org", "roster_file = 'r.toml'\n")
    ));
    assert!(e.contains("already the roster file of a@x.org"), "{e}");
    // Both take the key of [defaults]: one key for two lists.
    let e = err(&format!("{a}[[list]]\naddress = 'b@x.org'\n"));
    assert!(e.contains("the same key as the list a@x.org"), "{e}");
    let e = err("[[list]]\nsecret_key = 'list.key'\n");
    assert!(e.contains("list.address") && e.contains("missing"), "{e}");
    // [defaults] takes only what lists may share.
    for field in [
        "address = 'x@x.org'",
        "roster_file = 'r.toml'",
        "member_posts = 'reject'",
    ] {
        let text = SHARED.replace("[defaults]\n", &format!("[defaults]\n{field}\n"));
        let e = Config::parse_all(&format!("{text}\n{a}"), &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{field}: {e}");
    }
}

/// A list's bounce addresses: its own address with `+bounce-` and a
/// 24-hex-digit token, any case; nothing else is taken for one.
#[test]
fn bounce_addresses_round_trip_and_nothing_else_is_one() {
    let dir = keys_dir();
    let path = dir.path().join("c.toml");
    let lists =
        Config::parse_all(&format!("{SHARED}\n[[list]]\naddress = 'a@x.org'\n"), &path).unwrap();
    let a = &lists[0];
    let token = "0123456789abcdef01234567";
    let address = a.bounce_address(token);
    assert_eq!(address, format!("a+bounce-{token}@x.org"));
    assert!(a.serves(&address));
    assert_eq!(
        a.bounce_token(&address.to_uppercase()).as_deref(),
        Some(token)
    );
    for not_one in [
        format!("a+bounce-{}@x.org", &token[1..]),
        format!("a+bounce-{token}0@x.org"),
        format!("a+bounce-{}g@x.org", &token[1..]),
        format!("a+bounce-{token}@y.org"),
        format!("b+bounce-{token}@x.org"),
        format!("aa+bounce-{token}@x.org"),
        "a+junk@x.org".to_owned(),
        "a@x.org".to_owned(),
    ] {
        assert_eq!(a.bounce_token(&not_one), None, "{not_one}");
    }
}

#[test]
fn discovery_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let v = Validator {
        which: None,
        path: &path,
        base: dir.path(),
    };
    // The example's commented section, uncommented, is valid but for its CA file.
    let example = include_str!("../../config/embargo-relay.example.toml");
    let start = example.find("# [discovery]").unwrap();
    let section: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect();
    let raw: RawDiscovery = toml::from_str::<toml::Table>(&section).unwrap()["discovery"]
        .clone()
        .try_into()
        .unwrap();
    let err = v.discovery(Some(raw.clone())).unwrap_err().to_string();
    assert!(err.contains("discovery.extra_ca"), "{err}");
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ok = RawDiscovery {
        extra_ca: Some("ca.pem".into()),
        ..raw
    };
    let d = v.discovery(Some(ok.clone())).unwrap().unwrap();
    assert_eq!(d.keyserver.unwrap().url.host, "keys.openpgp.org");
    assert_eq!(d.connect_to[0].0, "openpgpkey.example.net");
    assert!(d.wkd && d.refresh);
    for (bad, field) in [
        (
            RawDiscovery {
                keyserver: Some("hkp://keys.example".into()),
                ..ok.clone()
            },
            "discovery.keyserver",
        ),
        (
            RawDiscovery {
                keyserver_protocol: Some("ldap".into()),
                ..ok.clone()
            },
            "discovery.keyserver_protocol",
        ),
        (
            RawDiscovery {
                connect_to: [("h.example".to_owned(), "nowhere".to_owned())].into(),
                ..ok.clone()
            },
            "discovery.connect_to.h.example",
        ),
        (
            RawDiscovery {
                wkd: Some(false),
                keyserver: None,
                ..ok.clone()
            },
            "nothing to look keys up in",
        ),
    ] {
        let err = v.discovery(Some(bad)).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    assert!(v.discovery(None).unwrap().is_none());
}

/// A member has `key` (OpenPGP) or `smime_cert` (S/MIME), one of them; an
/// S/MIME member needs the list's own S/MIME certificate; a PST member
/// signs with OpenPGP.
#[test]
fn a_member_has_one_kind_of_key() {
    let dir = keys_dir();
    let path = dir.path().join("c.toml");
    let err = |member: &str, list: &str| {
        let text = format!(
            "{SHARED}\n[[list]]\naddress = 'a@x.org'\n{list}\n[[list.member]]\nemail = 'pst@x.org'\norganization = 'PST'\nkey = 'pst.asc'\npst = true\n[[list.member]]\nemail = 'v@y.org'\norganization = 'V'\n{member}\n"
        );
        Config::parse_all(&text, &path).unwrap_err().to_string()
    };
    let e = err("smime_cert = 'v.pem'", "");
    assert!(
        e.contains("list.member[1].smime_cert") && e.contains("list.smime_cert and list.smime_key"),
        "{e}"
    );
    let e = err("key = 'm.asc'\nsmime_cert = 'v.pem'", "");
    assert!(e.contains("not both"), "{e}");
    let e = err("", "");
    assert!(
        e.contains("list.member[1].key") && e.contains("smime_cert"),
        "{e}"
    );
    let e = err("key = 'm.asc'", "smime_cert = 'list.pem'");
    assert!(e.contains("list.smime_key") && e.contains("missing"), "{e}");
    let e = err(
        "key = 'm.asc'",
        "smime_cert = 'list.pem'\nsmime_key = 'list.pem'",
    );
    assert!(
        e.contains("list.smime_cert") && e.contains("list.pem"),
        "{e}"
    );
    let text = format!(
        "{SHARED}\n[[list]]\naddress = 'a@x.org'\n[[list.member]]\nemail = 'pst@x.org'\norganization = 'PST'\nsmime_cert = 'p.pem'\npst = true\n"
    );
    let e = Config::parse_all(&text, &path).unwrap_err().to_string();
    assert!(e.contains("a PST member needs `key` too"), "{e}");
}

/// `[http]`: an address or an absolute socket path; a token of 32+
/// printable characters from a file, read when the daemon starts (the
/// configuration itself loads without it, for `submit` and the CLI).
#[test]
fn http_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let v = Validator {
        which: None,
        path: &path,
        base: dir.path(),
    };
    std::fs::write(dir.path().join("good"), format!("{}\n", "t".repeat(40))).unwrap();
    std::fs::write(dir.path().join("short"), "tooshort\n").unwrap();
    std::fs::write(dir.path().join("spaced"), format!("{} x\n", "t".repeat(40))).unwrap();
    let raw = |listen: &str, token: Option<&str>| RawHttp {
        listen: listen.into(),
        token_file: token.map(Into::into),
        metrics_open: None,
    };
    let h = v.http(raw("127.0.0.1:8025", Some("good"))).unwrap();
    assert_eq!(h.listen, HttpListen::Tcp("127.0.0.1:8025".parse().unwrap()));
    assert_eq!(
        h.token().unwrap().expose(),
        "t".repeat(40).as_bytes(),
        "trimmed"
    );
    assert!(!h.metrics_open);
    let h = v
        .http(raw("/run/embargo-relay/http.sock", Some("good")))
        .unwrap();
    assert_eq!(
        h.listen,
        HttpListen::Unix("/run/embargo-relay/http.sock".into())
    );
    let e = v
        .http(raw("localhost", Some("good")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("http.listen"), "{e}");
    for (token, what) in [
        (None, "missing"),
        (Some("short"), "at least 32"),
        (Some("spaced"), "at least 32"),
        (Some("absent"), "http.token_file"),
    ] {
        let h = v.http(raw("127.0.0.1:8025", token)).unwrap();
        let e = h.token().unwrap_err();
        assert!(e.contains(what), "{e}");
    }
}

/// `policy.release_hours` and `policy.min_notice`: the defaults (any hour,
/// 7 days), a list's own, and what is refused, naming the field.
#[test]
fn release_guardrails_are_read_and_bad_ones_refused() {
    let dir = keys_dir();
    let path = dir.path().join("c.toml");
    let with = |policy: &str| {
        let text = format!("{SHARED}\n[[list]]\naddress = 'a@x.org'\n[list.policy]\n{policy}\n");
        Config::parse_all(&text, &path)
    };
    let lists = with("").unwrap();
    assert_eq!(lists[0].policy.release, super::ReleaseGuard::default());
    assert_eq!(
        lists[0].policy.release.min_notice,
        chrono::Duration::days(7)
    );
    let lists = with("release_hours = '14:00-18:30'\nmin_notice = '3d'").unwrap();
    let guard = &lists[0].policy.release;
    assert_eq!(guard.min_notice, chrono::Duration::days(3));
    let (from, to) = guard.hours.unwrap();
    assert_eq!(
        (from.to_string(), to.to_string()),
        ("14:00:00".into(), "18:30:00".into())
    );
    for bad in [
        "14-18",
        "18:00-14:00",
        "14:00-14:00",
        "25:00-26:00",
        "14:00",
        "",
    ] {
        let e = with(&format!("release_hours = '{bad}'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.release_hours"), "{bad}: {e}");
    }
    let e = with("min_notice = 'soon'").unwrap_err().to_string();
    assert!(e.contains("policy.min_notice"), "{e}");
}

/// `[[release_hook]]`: the file's hooks serve every list without its own;
/// what cannot work is refused at load, naming the field; the secret is
/// read then (the credential first) and never shown.
#[test]
fn release_hooks_are_read_and_bad_ones_refused() {
    let dir = keys_dir();
    let path = dir.path().join("c.toml");
    std::fs::write(dir.path().join("hook.key"), "SECRET-KEY-0123456789abcdef\n").unwrap();
    std::fs::write(dir.path().join("short.key"), "SECRET-short").unwrap();
    std::fs::write(dir.path().join("gh.token"), "github_pat_SECRET\n").unwrap();
    std::fs::write(dir.path().join("bad.token"), "github pat SECRET").unwrap();
    let with = |shared: &str, own: &str| {
        let text = format!(
            "{SHARED}\n{shared}\n[[list]]\naddress = 'a@x.org'\n{own}\n[[list]]\naddress = 'b@x.org'\nsecret_key = 'list-b.key'\n"
        );
        Config::parse_all(&text, &path)
    };
    let lists = with("", "").unwrap();
    assert!(lists[0].hooks.is_empty() && lists[0].lift_hook_rows(true).is_empty());
    let shared = "[[release_hook]]\nname = 'site'\nurl = 'https://hooks.example.org/lift'\nsecret_file = 'hook.key'\non = ['lift', 'cancel']\n\
                  [[release_hook]]\nname = 'gh'\nkind = 'github'\nsecret_file = 'gh.token'\ntimeout = '10s'\n";
    let lists = with(shared, "").unwrap();
    for list in &lists {
        let site = list.hook("site").unwrap();
        assert_eq!(site.kind, HookKind::Webhook);
        assert_eq!(site.url.host, "hooks.example.org");
        assert_eq!(site.secret.expose(), b"SECRET-KEY-0123456789abcdef");
        assert_eq!(site.timeout, list.outbound.timeout);
        assert!(site.on_lift && site.on_cancel);
        let gh = list.hook("gh").unwrap();
        assert_eq!(
            (gh.kind, gh.url.host.as_str()),
            (HookKind::Github, "api.github.com")
        );
        assert_eq!(gh.secret.expose(), b"github_pat_SECRET");
        assert_eq!(gh.timeout, Duration::from_secs(10));
        assert!(gh.on_lift && !gh.on_cancel);
        assert!(
            !format!("{list:?}").contains("SECRET"),
            "secrets stay out of Debug"
        );
        assert_eq!(list.lift_hook_rows(false), ["site"]);
        assert_eq!(list.lift_hook_rows(true), ["site", "gh"]);
        assert_eq!(list.cancel_hook_rows(), ["site"]);
    }
    // A list's own hooks replace the file's.
    let own = "[[list.release_hook]]\nname = 'mine'\nurl = 'https://a.example/'\nsecret_file = 'hook.key'\non = ['cancel']\n";
    let lists = with(shared, own).unwrap();
    assert_eq!(lists[0].hooks.len(), 1);
    assert!(lists[0].lift_hook_rows(true).is_empty());
    assert_eq!(lists[0].cancel_hook_rows(), ["mine"]);
    assert_eq!(lists[1].hooks.len(), 2);
    let hook = |body: &str| format!("[[release_hook]]\nname = 'h'\n{body}\n");
    for (body, field, words) in [
        (
            "url = 'https://a.example/'",
            "release_hook[0].secret_file",
            "missing",
        ),
        (
            "url = 'http://a.example/'\nsecret_file = 'hook.key'",
            "release_hook[0].url",
            "https",
        ),
        ("secret_file = 'hook.key'", "release_hook[0].url", "missing"),
        (
            "url = 'https://a.example/'\nsecret_file = 'short.key'",
            "release_hook[0].secret_file",
            "openssl rand",
        ),
        (
            "url = 'https://a.example/'\nsecret_file = 'nowhere.key'",
            "release_hook[0].secret_file",
            "nowhere.key",
        ),
        (
            "url = 'https://a.example/'\nsecret_file = 'hook.key'\non = []",
            "release_hook[0].on",
            "never",
        ),
        (
            "url = 'https://a.example/'\nsecret_file = 'hook.key'\non = ['publish']",
            "release_hook[0].on",
            "publish",
        ),
        (
            "url = 'https://a.example/'\nsecret_file = 'hook.key'\nkind = 'slack'",
            "release_hook[0].kind",
            "slack",
        ),
        (
            "url = 'https://a.example/'\nsecret_file = 'hook.key'\ntimeout = '1h'",
            "release_hook[0].timeout",
            "300s",
        ),
        (
            "url = 'https://a.example/'\nsecret_file = 'hook.key'\nextra_ca = 'hook.key'",
            "release_hook[0].extra_ca",
            "PEM",
        ),
        (
            "kind = 'github'\nsecret_file = 'bad.token'",
            "release_hook[0].secret_file",
            "one word",
        ),
        (
            "kind = 'github'\nsecret_file = 'gh.token'\non = ['lift', 'cancel']",
            "release_hook[0].on",
            "lift only",
        ),
        (
            "kind = 'github'\nsecret_file = 'gh.token'\nurl = 'https://api.example/v3'",
            "release_hook[0].url",
            "without a path",
        ),
    ] {
        let e = with(&hook(body), "").unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(words), "{body}: {e}");
        assert!(
            !e.contains("SECRET"),
            "{body}: the secret is never shown: {e}"
        );
    }
    for bad in ["Site", "a b", "", "x#1", &"a".repeat(41)] {
        let e = with(&format!("[[release_hook]]\nname = '{bad}'\nurl = 'https://a.example/'\nsecret_file = 'hook.key'\n"), "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("release_hook[0].name"), "{bad}: {e}");
    }
    let twice = format!(
        "{}{}",
        hook("url = 'https://a.example/'\nsecret_file = 'hook.key'"),
        hook("url = 'https://b.example/'\nsecret_file = 'hook.key'")
    );
    assert!(
        with(&twice, "")
            .unwrap_err()
            .to_string()
            .contains("names two hooks")
    );
    // The systemd credential `release-hook-<name>` wins over the file, and
    // serves without one.
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(
        credentials.path().join("release-hook-h"),
        "SECRET-from-the-credential\n",
    )
    .unwrap();
    let v = Validator {
        path: &path,
        base: dir.path(),
        which: None,
    };
    for file in [Some(Path::new("hook.key")), None] {
        let secret = v
            .hook_secret("h", file, Some(credentials.path()), HookKind::Webhook, "f")
            .unwrap();
        assert_eq!(secret.expose(), b"SECRET-from-the-credential");
    }
    let e = v
        .hook_secret(
            "other",
            None,
            Some(credentials.path()),
            HookKind::Webhook,
            "f",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("release-hook-other"), "{e}");
}
