//! Issue 17: keys find themselves. Against a loopback HTTPS server with a
//! test CA made by `openssl` (the daemon trusts it through
//! `[discovery] extra_ca`), serving Web Key Directory paths (as GnuPG's
//! `gpg-wks-client` computes them) and a VKS keyserver: `roster add
//! --discover` and a PST `Roster-Add` without a key find certificates; the
//! weekly refresh merges an extended expiry and a revocation, holds a
//! different fingerprint for the PST, and reports a failing source.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embargo_relay::clock::Clock;
use embargo_relay::crypto;
use embargo_relay::sink::Captured;
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::StandardPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

type Routes = Arc<Mutex<HashMap<(String, String), (u16, Vec<u8>)>>>;
/// Requests whole: each one's head and body.
type Whole = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A loopback HTTPS server for several host names (one certificate with
/// all of them, from a test CA): answers GETs by host and path (the query
/// ignored) from its table, 404 for the rest; a status 0 never answers.
pub struct KeyHost {
    addr: SocketAddr,
    hosts: Vec<String>,
    routes: Routes,
    log: Arc<Mutex<Vec<String>>>,
    /// Every request whole: its head and its body (by Content-Length).
    whole: Whole,
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed (scripts/deps)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl KeyHost {
    pub async fn start(hosts: &[&str]) -> KeyHost {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=embargo-relay test CA",
        ]);
        openssl(d, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=key server",
        ]);
        openssl(d, &csr);
        let san: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
        std::fs::write(
            d.join("san.ext"),
            format!("subjectAltName={}\n", san.join(",")),
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
        let identity = tokio_native_tls::native_tls::Identity::from_pkcs8(
            &std::fs::read(d.join("server.pem")).unwrap(),
            &std::fs::read(d.join("server.key")).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            tokio_native_tls::native_tls::TlsAcceptor::new(identity).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Routes = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let whole: Whole = Arc::default();
        let (r, l, w) = (routes.clone(), log.clone(), whole.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, r, l, w) = (acceptor.clone(), r.clone(), l.clone(), w.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = head
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(head.len(), |p| p + 4);
                    let mut body = head.split_off(end);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while body.len() < length.min(1 << 20) {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&buf[..n]),
                        }
                    }
                    w.lock().unwrap().push((head.clone(), body));
                    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                        .unwrap_or("")
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    l.lock().unwrap().push(format!("{host}{target}"));
                    let path = target.split('?').next().unwrap_or("").to_owned();
                    // A route for this method (`PATCH /path`) first.
                    let method = head.split(' ').next().unwrap_or("").to_owned();
                    let (status, body) = {
                        let routes = r.lock().unwrap();
                        routes
                            .get(&(host.clone(), format!("{method} {path}")))
                            .or_else(|| routes.get(&(host, path)))
                            .cloned()
                            .unwrap_or((404, b"not here".to_vec()))
                    };
                    if status == 0 {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let mut answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    answer.extend_from_slice(&body);
                    let _ = tls.write_all(&answer).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        KeyHost {
            addr,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            routes,
            log,
            whole,
            dir,
        }
    }

    /// Answers `path` on `host` (any method; `"PATCH /path"` for one
    /// method only, looked at first) with `status` and `body`.
    pub fn serve(&self, host: &str, path: &str, status: u16, body: &[u8]) {
        self.routes
            .lock()
            .unwrap()
            .insert((host.to_owned(), path.to_owned()), (status, body.to_vec()));
    }

    /// Serves `body` for `email` by the advanced or the direct WKD method.
    pub fn wkd(&self, email: &str, advanced: bool, status: u16, body: &[u8]) {
        let (host, path) = wkd_path(email, advanced);
        self.serve(&host, &path, status, body);
    }

    /// Every request so far, whole: its head, its body.
    pub fn whole_requests(&self) -> Vec<(String, Vec<u8>)> {
        self.whole.lock().unwrap().clone()
    }

    /// Every request so far, as `host/path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A `[discovery]` section sending every host name here.
    pub fn discovery_toml(&self, keyserver: Option<&str>) -> String {
        let mut text = format!(
            "[discovery]\nextra_ca = \"{}\"\ntimeout = \"3s\"\n",
            self.ca().display()
        );
        if let Some(k) = keyserver {
            text.push_str(&format!("keyserver = \"{k}\"\n"));
        }
        text.push_str("[discovery.connect_to]\n");
        for h in &self.hosts {
            text.push_str(&format!("\"{h}\" = \"{}\"\n", self.addr));
        }
        text
    }
}

/// The WKD host and path of `email`, as GnuPG's `gpg-wks-client` computes
/// them (not this crate's own code).
fn wkd_path(email: &str, advanced: bool) -> (String, String) {
    let out = Command::new("/usr/lib/gnupg/gpg-wks-client")
        .args(["--print-wkd-url", email])
        .output()
        .expect("gpg-wks-client must be installed (scripts/deps)");
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8(out.stdout).unwrap();
    let url = url.trim().strip_prefix("https://").unwrap();
    let (host, path) = url.split_once('/').unwrap();
    let path = format!("/{}", path.split('?').next().unwrap());
    if advanced {
        return (host.to_owned(), path);
    }
    let domain = email.rsplit_once('@').unwrap().1.to_ascii_lowercase();
    let hash = path.rsplit('/').next().unwrap();
    (domain, format!("/.well-known/openpgpkey/hu/{hash}"))
}

fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .arg("roster")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn public(cert: &Cert) -> Vec<u8> {
    crypto::armored_public(&cert.clone().strip_secret_key_material()).unwrap()
}

fn key(uid: &str) -> Cert {
    crypto::generate_key(uid, now() - chrono::Duration::hours(1), None).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn roster_add_discovers_a_key_by_wkd_or_the_keyserver() {
    const ADV: &str = "sec@adv.example";
    const DIRECT: &str = "Sec@Direct.example";
    const VKS: &str = "sec@vks.example";
    const NOUID: &str = "other@adv.example";
    const HANG: &str = "sec@hang.example";
    let host = KeyHost::start(&[
        "openpgpkey.adv.example",
        "adv.example",
        "openpgpkey.direct.example",
        "direct.example",
        "openpgpkey.vks.example",
        "vks.example",
        "keys.example.net",
        "openpgpkey.hang.example",
    ])
    .await;
    let (adv, direct, vks, stranger) = (
        key(&format!("Adv <{ADV}>")),
        key(&format!("Direct <{}>", DIRECT.to_ascii_lowercase())),
        key(&format!("Vks <{VKS}>")),
        key("Stranger <x@else.example>"),
    );
    host.wkd(ADV, true, 200, &public(&adv));
    host.wkd(DIRECT, false, 200, &public(&direct));
    host.serve(
        "keys.example.net",
        "/vks/v1/by-email/sec%40vks.example",
        200,
        &public(&vks),
    );
    host.wkd(NOUID, true, 200, &public(&stranger));
    host.wkd(HANG, true, 0, b"");

    let f = Fixture::new();
    let config = f.write_config_with(
        "127.0.0.1:25".parse().unwrap(),
        &Tweaks {
            list: vec![("roster_file", Tweaks::text("roster.toml"))],
            extra: host.discovery_toml(Some("https://keys.example.net")),
            ..Tweaks::default()
        },
    );
    let c = config.clone();
    let add = move |email: &'static str, extra: Vec<String>| {
        let c = c.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args = vec!["add", email, "--organization", "Org X", "--discover"];
                args.extend(extra.iter().map(String::as_str));
                cli(&c, &args)
            })
            .await
            .unwrap()
        }
    };
    for (email, cert, how) in [
        (ADV, &adv, "Web Key Directory (advanced method)"),
        (DIRECT, &direct, "Web Key Directory (direct method)"),
        (VKS, &vks, "keyserver (VKS)"),
    ] {
        let (ok, out, err) = add(email, vec![]).await;
        assert!(ok, "{email}: {err}");
        assert!(
            out.contains(&cert.fingerprint().to_string()) && out.contains(how),
            "{email}: {out}"
        );
    }
    let log = host.requests();
    let hash = |e: &str| wkd_path(e, true).1;
    assert!(
        log.contains(&format!("openpgpkey.adv.example{}?l=sec", hash(ADV))),
        "the advanced method first, with the local part: {log:#?}"
    );
    let direct_at = |prefix: &str| log.iter().position(|l| l.starts_with(prefix));
    assert!(
        direct_at("openpgpkey.direct.example/") < direct_at("direct.example/"),
        "advanced, then direct: {log:#?}"
    );

    // A certificate without the address, and a fingerprint that is not
    // the one served, are refused, naming why.
    let (ok, _, err) = add(NOUID, vec![]).await;
    assert!(!ok && err.contains("does not carry the address"), "{err}");
    let (ok, _, err) = add(
        ADV,
        vec!["--fingerprint".into(), stranger.fingerprint().to_hex()],
    )
    .await;
    assert!(!ok && err.contains("not the fingerprint given"), "{err}");
    // A server that never answers is given up on after the timeout, named.
    let (ok, _, err) = add(HANG, vec![]).await;
    assert!(!ok && err.contains("no answer within 3 s"), "{err}");

    let (ok, out, _) = tokio::task::spawn_blocking(move || cli(&config, &["list"]))
        .await
        .unwrap();
    assert!(ok);
    for cert in [&adv, &direct, &vks] {
        assert!(out.contains(&cert.fingerprint().to_hex()), "{out}");
    }
    assert!(!out.contains(NOUID), "{out}");
}

/// Notices to the PST opened with its key at `at`, those containing `what`.
fn pst_notices(
    f: &Fixture,
    got: &[Captured],
    at: chrono::DateTime<chrono::Utc>,
    what: &str,
) -> Vec<String> {
    let list = f.list.clone().strip_secret_key_material();
    let p = StandardPolicy::new();
    got.iter()
        .filter(|c| c.envelope.rcpt_to == [PST.to_owned()])
        .filter_map(|c| {
            let start = find(&c.raw, b"-----BEGIN PGP MESSAGE-----")?;
            let end = find(&c.raw, b"-----END PGP MESSAGE-----")? + 25;
            crypto::open_copy_at(
                &p,
                &f.members[0].secret,
                &list,
                &c.raw[start..end],
                Some(at),
            )
            .ok()
        })
        .map(|o| String::from_utf8_lossy(o.plaintext.expose()).into_owned())
        .filter(|t| t.contains(what))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_roster_add_without_a_key_is_looked_up_and_the_weekly_refresh_merges_and_holds() {
    const EXT: &str = "sec@ext.example";
    const REV: &str = "sec@rev.example";
    const FAIL: &str = "sec@fail.example";
    const ROT: &str = "sec@rot.example";
    let host = KeyHost::start(&[
        "openpgpkey.ext.example",
        "ext.example",
        "openpgpkey.rev.example",
        "rev.example",
        "openpgpkey.fail.example",
        "fail.example",
        "openpgpkey.rot.example",
        "rot.example",
    ])
    .await;
    let f = Fixture::new();
    // Keys made and changed by GnuPG, as their holders would: one expiring
    // in ten days, later extended; one later revoked.
    let gpg = Gpg::new();
    let ext_fpr = gpg.generate(&format!("Ext <{EXT}>"));
    gpg.must(&["--quick-set-expire", &ext_fpr, "10d"], b"");
    gpg.must(&["--quick-set-expire", &ext_fpr, "10d", "*"], b"");
    std::fs::write(f.path("keys/ext.asc"), gpg.export(&ext_fpr)).unwrap();
    gpg.must(&["--quick-set-expire", &ext_fpr, "2y"], b"");
    gpg.must(&["--quick-set-expire", &ext_fpr, "2y", "*"], b"");
    host.wkd(EXT, true, 200, &gpg.export(&ext_fpr));

    let rev_fpr = gpg.generate(&format!("Rev <{REV}>"));
    std::fs::write(f.path("keys/rev.asc"), gpg.export(&rev_fpr)).unwrap();
    let revocation = std::fs::read_to_string(
        gpg.home()
            .join("openpgp-revocs.d")
            .join(format!("{rev_fpr}.rev")),
    )
    .unwrap()
    .replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    gpg.import(revocation.as_bytes());
    host.wkd(REV, true, 200, &gpg.export(&rev_fpr));

    let fail = key(&format!("Fail <{FAIL}>"));
    std::fs::write(f.path("keys/fail.asc"), public(&fail)).unwrap();
    host.wkd(FAIL, true, 500, b"oops");
    host.wkd(FAIL, false, 500, b"oops");

    let (rot1, rot2) = (
        key(&format!("Rot <{ROT}>")),
        key(&format!("Rot new <{ROT}>")),
    );
    host.wkd(ROT, true, 200, &public(&rot1));

    let t0 = embargo_relay::clock::from_millis(now().timestamp_millis());
    let daemon = f
        .start_in_process(&Tweaks {
            list: vec![("roster_file", Tweaks::text("roster.toml"))],
            members: vec![
                (EXT.into(), "Ext".into(), "keys/ext.asc".into()),
                (REV.into(), "Rev".into(), "keys/rev.asc".into()),
                (FAIL.into(), "Fail".into(), "keys/fail.asc".into()),
            ],
            extra: host.discovery_toml(None),
            clock_at: Some(t0),
            ..Tweaks::default()
        })
        .await;
    let (sink, clock) = (&daemon.sink, &daemon.clock);

    // A signed Roster-Add naming a fingerprint, no key attached: found by WKD.
    let add = |fpr: String| format!("Roster-Add: {ROT}, Rot Org, {fpr}");
    let reply = send(
        daemon.addr(),
        PST,
        &crate::roster::command(&f, &add(rot1.fingerprint().to_hex()), None),
    )
    .await
    .expect("added");
    assert!(reply.contains("roster updated"), "{reply}");
    // One that nothing publishes is refused; the clear reply names no address.
    let (code, text) = send(
        daemon.addr(),
        PST,
        &crate::roster::command(
            &f,
            &format!("Roster-Add: nobody@rot.example, X, {}", rot2.fingerprint()),
            None,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        code == 550 && text.contains("none with that fingerprint was found"),
        "{text}"
    );
    assert!(
        !text.contains("nobody") && !text.contains("rot.example"),
        "{text}"
    );
    let got = sink
        .wait_until(PATIENCE, |g| !pst_notices(&f, g, t0, "Added ").is_empty())
        .await;
    let receipt = pst_notices(&f, &got, t0, "Added ").remove(0);
    assert!(
        receipt.contains(&rot1.fingerprint().to_hex())
            && receipt.contains("found by the Web Key Directory (advanced method)"),
        "{receipt}"
    );

    // The weekly refresh (five minutes after start): ROT now publishes another key.
    // ROT now publishes a new key beside the old one (as while changing keys).
    host.wkd(ROT, true, 200, &[public(&rot1), public(&rot2)].concat());
    clock.set(t0 + chrono::Duration::minutes(5));
    let at = clock.now();
    let got = sink
        .wait_until(PATIENCE, |g| {
            !pst_notices(&f, g, at, "Key refresh of").is_empty()
        })
        .await;
    let report = pst_notices(&f, &got, at, "Key refresh of").remove(0);
    let line = |who: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(who))
            .unwrap_or_else(|| panic!("{who} not in the report:\n{report}"))
            .to_owned()
    };
    let expiry = (now() + chrono::Duration::days(730))
        .format("%Y-")
        .to_string();
    assert!(
        line(EXT).contains("expiry") && line(EXT).contains(&expiry),
        "{report}"
    );
    assert!(line(REV).contains("revoked"), "{report}");
    assert!(line(ROT).contains(&rot2.fingerprint().to_hex()), "{report}");
    assert!(
        report.contains(&format!(
            "Roster-Add: {ROT}, Rot Org, {}",
            rot2.fingerprint().to_hex()
        )),
        "{report}"
    );
    let failed = report
        .split("Could not be refreshed")
        .nth(1)
        .expect(&report);
    assert!(
        failed.contains(FAIL) && failed.contains("HTTP 500"),
        "{report}"
    );
    assert!(
        f.state_dir()
            .join("key-updates")
            .join(format!("{ext_fpr}.asc"))
            .exists()
    );
    // The key check that follows sees the merged keys: the extended one is
    // fine, the revoked one cannot be used.
    let got = sink
        .wait_until(PATIENCE, |g| {
            !pst_notices(&f, g, at, "Weekly key check").is_empty()
        })
        .await;
    let check = pst_notices(&f, &got, at, "Weekly key check").remove(0);
    assert!(!check.contains(EXT) && check.contains(REV), "{check}");

    // An announcement: the revoked member is skipped with the reason; the
    // rotated member's copy is still encrypted to the key on the roster.
    let before = copies(&got).len();
    let id = announce_with_advisory(&f, daemon.addr(), PUBLIC_DEFAULT).await;
    let got = sink
        .wait_until(PATIENCE, |g| {
            receipt_texts_at(&f, g, at).iter().any(|r| r.contains(&id))
        })
        .await;
    let receipt = receipt_texts_at(&f, &got, at)
        .into_iter()
        .find(|r| r.contains(&id))
        .unwrap();
    let rev_line = receipt.lines().find(|l| l.contains(REV)).expect(&receipt);
    assert!(rev_line.contains("revoked"), "{receipt}");
    let new: Vec<&Captured> = copies(&got).into_iter().skip(before).collect();
    let to = |who: &str| {
        new.iter()
            .find(|c| c.envelope.rcpt_to == [who.to_owned()])
            .copied()
    };
    assert!(to(EXT).is_some() && to(REV).is_none(), "{new:#?}");
    let open = |secret: &Cert, c: &Captured| {
        crypto::open_copy_at(
            &StandardPolicy::new(),
            secret,
            &f.list.clone().strip_secret_key_material(),
            armored_payload(&c.raw),
            Some(at),
        )
        .is_ok()
    };
    assert!(open(&rot1, to(ROT).unwrap()) && !open(&rot2, to(ROT).unwrap()));

    // The PST takes the held key by naming it: no attachment needed.
    let reply = send(
        daemon.addr(),
        PST,
        &crate::roster::command(&f, &add(rot2.fingerprint().to_hex()), None),
    )
    .await
    .expect("replaced");
    assert!(reply.contains("roster updated"), "{reply}");
    let got = sink
        .wait_until(PATIENCE, |g| {
            !pst_notices(&f, g, at, "Replaced the certificate").is_empty()
        })
        .await;
    let replaced = pst_notices(&f, &got, at, "Replaced the certificate").remove(0);
    assert!(replaced.contains("held since"), "{replaced}");
    let roster = Cert::from_file(f.path(&format!("keys/{}.asc", rot2.fingerprint().to_hex())));
    assert!(roster.is_ok(), "the held key is on the roster now");
    assert!(f.spool().held_keys().unwrap().is_empty());
    daemon.stop().await;
}

/// Issue 21's footing: the HTTPS client sends a POST or a PATCH with its
/// headers and body exactly (the body signed with HMAC-SHA256, as a
/// release hook's will be), trusts the test CA only when told to, and
/// gives up on a server that never answers within its timeout.
#[tokio::test(flavor = "multi_thread")]
async fn the_https_client_sends_a_signed_body_exactly() {
    use embargo_relay::discovery::https::{Client, Request, Url};
    let host = KeyHost::start(&["hooks.example"]).await;
    host.serve("hooks.example", "/lift", 204, b"");
    host.serve("hooks.example", "/hang", 0, b"");
    let ca = std::fs::read(host.ca()).unwrap();
    let to = vec![("hooks.example".to_owned(), host.addr)];
    let client = Client::new(Some(&ca), to.clone(), Duration::from_secs(2), 1 << 16).unwrap();
    let url = Url::parse(&format!("https://hooks.example:{}/lift", host.addr.port())).unwrap();
    for (method, size) in [
        (hyper::Method::POST, 0usize),
        (hyper::Method::POST, 1),
        (hyper::Method::PATCH, 1000),
        (hyper::Method::POST, 70_000),
    ] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let signature = format!(
            "sha256={}",
            crypto::hmac_sha256_hex(b"hook secret", &body).unwrap()
        );
        let headers = [
            ("content-type", "application/json"),
            ("x-embargo-relay-signature", signature.as_str()),
        ];
        let answer = client
            .send(&Request {
                method: method.clone(),
                url: &url,
                headers: &headers,
                body: body.clone().into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{method} {size}: {e:?}"));
        assert_eq!(answer.status, 204, "{method} {size}");
        let (head, got) = host.whole_requests().pop().unwrap();
        assert!(
            head.starts_with(&format!("{method} /lift HTTP/1.1\r\n")),
            "{head}"
        );
        let signed = head
            .lines()
            .find_map(|l| l.strip_prefix("x-embargo-relay-signature: sha256="))
            .expect("the signature header");
        assert_eq!(got, body, "{method} {size}: the body exactly");
        assert_eq!(
            signed,
            crypto::hmac_sha256_hex(b"hook secret", &got).unwrap(),
            "the receiver's own HMAC of what it got"
        );
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{head}"
        );
    }
    // Without the test CA: not trusted.
    let untrusting = Client::new(None, to, Duration::from_secs(2), 1 << 16).unwrap();
    let refused = untrusting
        .send(&Request {
            method: hyper::Method::POST,
            url: &url,
            headers: &[],
            body: Vec::new().into(),
        })
        .await;
    assert!(refused.is_err(), "an unknown CA is refused");
    // A server that never answers: an error within the timeout.
    let hang = Url::parse(&format!("https://hooks.example:{}/hang", host.addr.port())).unwrap();
    let started = std::time::Instant::now();
    let hung = client
        .send(&Request {
            method: hyper::Method::POST,
            url: &hang,
            headers: &[],
            body: b"{}".to_vec().into(),
        })
        .await;
    assert!(hung.is_err());
    assert!(started.elapsed() < Duration::from_secs(30));
}
