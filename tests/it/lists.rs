//! Issue 16, several lists in one daemon: one listener routes each mail by
//! its recipient; each list keeps its own key, roster, embargoes, replay
//! cache and audit trail in the one spool; a PST key serving two lists
//! must name the list it signs for; a reload adds, changes and removes
//! lists, never one that still holds a release.

use std::net::SocketAddr;
use std::sync::Arc;

use embargo_relay::clock::{Clock, ManualClock};
use embargo_relay::config::Config;
use embargo_relay::crypto;
use embargo_relay::sink::{CaptureSink, Captured};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::*;

pub const LIST_B: &str = "vendors-announce@lists.example.org";
pub const PUBLIC_B: &str = "vendors-public@project.example.org";

/// Two lists sharing the fixture's PST key: A with the GnuPG member, B
/// with the Sequoia one, each its own list key; `a_members` replaces A's
/// roster (without the PST, which stays).
pub fn two_lists(f: &Fixture, smarthost: SocketAddr, a_members: &[usize]) -> std::path::PathBuf {
    if !f.path("keys/list-b.key").exists() {
        let b = crypto::generate_key(&format!("List B <{LIST_B}>"), now(), None).unwrap();
        std::fs::write(
            f.path("keys/list-b.key"),
            crypto::armored_secret(&b).unwrap(),
        )
        .unwrap();
    }
    let member = |i: usize| {
        format!(
            "email = \"{}\"\norganization = \"Org {i}\"\nkey = \"keys/m{i}.asc\"\npst = {}\n",
            f.members[i].email,
            i == 0
        )
    };
    let mut text = format!(
        "[defaults]\nstate_dir = \"state\"\n\n\
         [inbound.smtp]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"1MiB\"\n\n\
         [outbound]\nsmarthost = \"smtp://{smarthost}\"\ntimeout = \"30s\"\nretry_initial = \"1s\"\nretry_max = \"2s\"\n\n\
         [public]\nrecipients = [\"{PUBLIC_DEFAULT}\"]\n\n\
         [policy]\nlate_after = \"1s\"\n\n\
         [[list]]\naddress = \"{LIST}\"\nsecret_key = \"keys/list.key\"\nroster_file = \"roster-a.toml\"\n"
    );
    for i in std::iter::once(0).chain(a_members.iter().copied()) {
        text += &format!("[[list.member]]\n{}", member(i));
    }
    text += &format!(
        "\n[[list]]\naddress = \"{LIST_B}\"\nsecret_key = \"keys/list-b.key\"\n[list.public]\nrecipients = [\"{PUBLIC_B}\"]\n"
    );
    for i in [0, 2] {
        text += &format!("[[list.member]]\n{}", member(i));
    }
    let path = f.path("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An announcement with a public advisory, `List:` naming `list` (or no
/// `List:` field), lifting `days` ahead; signed by the PST with GnuPG.
fn announcement(f: &Fixture, list: Option<&str>, days: i64, subject: &str) -> Vec<u8> {
    let until = (now() + chrono::Duration::days(days)).format("%Y-%m-%dT%H:%M:%SZ");
    let named = list.map(|l| format!("List: {l}\n")).unwrap_or_default();
    let body = format!("Embargo-Until: {until}\n{named}\nDetails for members.\n");
    let entity = embargo_relay::compose::text_with_advisory(subject, &body, "Public text.");
    f.gpg_signed_entity(PST, subject, &entity)
}

/// Who got a copy (the member copies' envelope recipients), sorted.
fn copy_recipients(got: &[Captured]) -> Vec<String> {
    let mut to: Vec<String> = copies(got)
        .iter()
        .flat_map(|c| c.envelope.rcpt_to.clone())
        .collect();
    to.sort();
    to
}

/// One SMTP transaction by hand: the reply to each RCPT, then to DATA
/// (if a recipient was taken).
async fn transaction(addr: SocketAddr, rcpts: &[&str], raw: &[u8]) -> Vec<String> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reply = async || {
        let mut last = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let more = line.as_bytes().get(3) == Some(&b'-');
            last = line;
            if !more {
                break;
            }
        }
        last
    };
    reply().await;
    let mut answers = Vec::new();
    for command in ["EHLO test\r\n".to_owned(), format!("MAIL FROM:<{PST}>\r\n")] {
        write.write_all(command.as_bytes()).await.unwrap();
        reply().await;
    }
    for rcpt in rcpts {
        write
            .write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await
            .unwrap();
        answers.push(reply().await);
    }
    if answers.iter().any(|a| a.starts_with("250")) {
        write.write_all(b"DATA\r\n").await.unwrap();
        reply().await;
        write.write_all(raw).await.unwrap();
        write.write_all(b"\r\n.\r\n").await.unwrap();
        answers.push(reply().await);
    }
    let _ = write.write_all(b"QUIT\r\n").await;
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn two_lists_sharing_a_pst_key_stay_apart() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let path = two_lists(&f, sink.addr(), &[1]);
    let start = embargo_relay::clock::from_millis(now().timestamp_millis());
    let clock = ManualClock::new(start);
    let lists = Config::load_all(&path).unwrap();
    let running = embargo_relay::daemon::start_lists(lists, Arc::new(clock.clone()))
        .await
        .unwrap();
    let addr = running.smtp_addr;
    let a = running.relay_of(LIST).unwrap();
    let b = running.relay_of(LIST_B).unwrap();

    // A mail for A, named in its List: field: A's members alone get it.
    let for_a = announcement(&f, Some(LIST), 1, "CVE-2026-161: for A");
    let reply = send_to(addr, PST, LIST, &for_a)
        .await
        .expect("accepted on A");
    let id_a = reply.rsplit(' ').next().unwrap().to_owned();
    let got = wait_copies(&sink, 2).await;
    assert_eq!(copy_recipients(&got), [GPG_MEMBER, PST]);
    // The same signed mail replayed to B is refused: it names A. So is a
    // mail that names no list, signed by the key both lists' PST holds.
    let (code, text) = send_to(addr, PST, LIST_B, &for_a).await.unwrap_err();
    assert!(
        code == 550 && text.contains("does not name this list"),
        "{text}"
    );
    let unbound = announcement(&f, None, 2, "CVE-2026-162: for either");
    for list in [LIST, LIST_B] {
        let (code, text) = send_to(addr, PST, list, &unbound).await.unwrap_err();
        assert!(
            code == 550 && text.contains("names no list") && text.contains("more than one list"),
            "{list}: {text}"
        );
    }
    // Signed headers naming both lists: one mail per list, it says.
    let both = {
        let until = (now() + chrono::Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ");
        let entity = embargo_relay::entity::text_plain_with(
            &[
                ("; protected-headers=", "\"v1\""),
                ("Subject", "CVE-2026-165: both"),
                ("To", LIST),
                ("Cc", LIST_B),
            ],
            &format!("Embargo-Until: {until}\n\nTo both lists.\n"),
        );
        f.gpg_signed_entity(PST, "CVE-2026-165: both", &entity)
    };
    for list in [LIST, LIST_B] {
        let (code, text) = send_to(addr, PST, list, &both).await.unwrap_err();
        assert!(
            code == 550 && text.contains("another list served here"),
            "{list}: {text}"
        );
    }
    // One transaction for both lists: the second list's recipient is put
    // off (452, the client sends it on its own), and the mail goes to A
    // alone, where it is the same submission again: nothing relayed twice.
    let answers = transaction(addr, &[LIST, LIST_B], &for_a).await;
    assert!(answers[0].starts_with("250"), "{answers:?}");
    assert!(
        answers[1].starts_with("452") && answers[1].contains("one list per transaction"),
        "{answers:?}"
    );
    assert!(
        answers[2].starts_with("250")
            && answers[2].contains(&format!("already accepted as {id_a}")),
        "{answers:?}"
    );

    // B's own announcement reaches B's members alone, under B's key.
    let for_b = announcement(&f, Some(LIST_B), 2, "CVE-2026-163: for B");
    let reply = send_to(addr, PST, LIST_B, &for_b)
        .await
        .expect("accepted on B");
    let id_b = reply.rsplit(' ').next().unwrap().to_owned();
    let got = wait_copies(&sink, 4).await;
    assert_eq!(copy_recipients(&got), [GPG_MEMBER, SQ_MEMBER, PST, PST]);
    assert!(
        copies(&got)
            .iter()
            .filter(|c| c.envelope.rcpt_to == [SQ_MEMBER])
            .all(|c| from_list(c, LIST_B)),
        "B's member hears from B"
    );
    // A join request to B's request address is B's (its PST hears of it).
    let join = "From: Seven Security <security@seven.example>\r\nTo: vendors-announce-request@lists.example.org\r\nSubject: membership\r\n\r\nWe would like to join.\r\n";
    let reply = send_to(
        addr,
        "security@seven.example",
        "vendors-announce-request@lists.example.org",
        join.as_bytes(),
    )
    .await
    .expect("a join request for B");
    assert!(reply.contains("forwarded"), "{reply}");
    let joined = |r: &embargo_relay::context::Relay| {
        r.spool
            .audit_records()
            .unwrap()
            .iter()
            .any(|r| r.event == "join-request")
    };
    assert!(
        joined(&b) && !joined(&a),
        "B's join request, in B's trail alone"
    );
    // Each list sees its own embargoes and audit trail, nothing of the other's.
    let ids = |r: &embargo_relay::context::Relay| -> Vec<String> {
        r.spool
            .embargoes()
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(ids(&a), std::slice::from_ref(&id_a));
    assert_eq!(ids(&b), std::slice::from_ref(&id_b));
    assert!(
        a.spool.embargo(&id_b).is_err(),
        "B's embargo is not A's to change"
    );
    assert!(
        b.spool
            .audit_records()
            .unwrap()
            .iter()
            .all(|r| r.message_id.as_deref() != Some(id_a.as_str())),
        "A's records are not in B's trail"
    );

    // The operator's commands: --list names the list where there are
    // several; status shows every list.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
            .arg(args[0])
            .arg("--config")
            .arg(&path)
            .args(&args[1..])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = cli(&["embargo", "list"]);
    assert!(!ok && text.contains("name one with --list"), "{text}");
    let (ok, text) = cli(&["embargo", "--list", LIST_B, "list"]);
    assert!(
        ok && text.contains(&id_b) && !text.contains(&id_a),
        "{text}"
    );
    let (ok, text) = cli(&["status"]);
    assert!(
        ok && text.contains(&format!("=== LIST {LIST} ==="))
            && text.contains(&format!("=== LIST {LIST_B} ===")),
        "{text}"
    );
    let (ok, text) = cli(&["audit", "--list", LIST, "--embargo", &id_b]);
    assert!(
        !ok && text.contains("no embargo with this id"),
        "B's embargo is not A's: {text}"
    );
    let (ok, text) = cli(&["check"]);
    assert!(text.contains("2 lists in [[list]] tables"), "{ok} {text}");

    // A's release at its time leaves B's held.
    clock.set(start + chrono::Duration::days(1) + chrono::Duration::seconds(5));
    let got = sink
        .wait_until(PATIENCE, |g| {
            g.iter().any(|c| c.envelope.rcpt_to == [PUBLIC_DEFAULT])
        })
        .await;
    assert!(got.iter().all(|c| c.envelope.rcpt_to != [PUBLIC_B]));
    wait_settled(&b, clock.now()).await;
    let held = b.spool.embargo(&id_b).unwrap();
    assert_eq!(held.state(clock.now()), "held");

    // A roster change on A (a reload that drops A's member) leaves B's
    // roster as it was, and B's next copies still reach B's member.
    let b_roster = |r: &embargo_relay::context::Relay| -> Vec<String> {
        r.directory()
            .roster
            .members()
            .iter()
            .map(|m| m.email.clone())
            .collect()
    };
    let before = b_roster(&b);
    two_lists(&f, sink.addr(), &[]);
    running
        .reload(Config::load_all(&path).unwrap())
        .await
        .expect("reloaded");
    assert_eq!(b_roster(&a), [PST], "A's roster changed");
    assert_eq!(b_roster(&b), before, "B's untouched");

    // Removing B while it holds a release (anything pending) is refused,
    // with the reason, and B keeps working; once cancelled and its notices
    // sent, it can go.
    let only_a = std::fs::read_to_string(&path).unwrap();
    let only_a = &only_a[..only_a.rfind("\n[[list]]").unwrap()];
    let dropped = f.path("only-a.toml");
    std::fs::write(&dropped, only_a).unwrap();
    let why = running
        .reload(Config::load_all(&dropped).unwrap())
        .await
        .unwrap_err();
    assert!(why.contains(LIST_B) && why.contains("pending"), "{why}");
    assert!(running.relay_of(LIST_B).is_some());
    b.spool
        .cancel(&id_b, clock.now(), "test", None, &[])
        .unwrap();
    b.wake.notify_one();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while b.spool.pending().unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "B's notices unsent");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    running
        .reload(Config::load_all(&dropped).unwrap())
        .await
        .expect("nothing pending on B now");
    assert!(running.relay_of(LIST_B).is_none());
    let (code, _) = send_to(addr, PST, LIST_B, &for_b).await.unwrap_err();
    assert_eq!(code, 550, "B is served no more");
    // Added again by the next reload: served, with its history.
    two_lists(&f, sink.addr(), &[]);
    running
        .reload(Config::load_all(&path).unwrap())
        .await
        .expect("B added");
    let b = running.relay_of(LIST_B).expect("B served again");
    assert_eq!(
        b.spool.embargo(&id_b).unwrap().state(clock.now()),
        "cancelled"
    );
    let again = announcement(&f, Some(LIST_B), 3, "CVE-2026-166: B again");
    send_to(addr, PST, LIST_B, &again)
        .await
        .expect("accepted on B");
    // A daemon started on a file without B, while B has deliveries
    // pending, refuses to start rather than leave them unsent.
    let err = embargo_relay::daemon::start_lists(
        Config::load_all(&dropped).unwrap(),
        Arc::new(clock.clone()),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains(LIST_B) && err.to_string().contains("pending"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["check", "--config"])
        .arg(&dropped)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains(&format!("pending deliveries of the list {LIST_B}")),
        "{text}"
    );
    running.shutdown().await;
}

/// A member on two lists can take what one list relayed to it (the signed
/// post of another member of both, say) and encrypt it to the other list's
/// key: so a mail signed by a key both lists know must name its list, in
/// its signed To/Cc, posts included.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_on_two_lists_must_name_the_list_it_posts_to() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    // Distro B (Sequoia key) is a member of both lists.
    let path = two_lists(&f, sink.addr(), &[1, 2]);
    let clock = ManualClock::new(embargo_relay::clock::from_millis(now().timestamp_millis()));
    let running =
        embargo_relay::daemon::start_lists(Config::load_all(&path).unwrap(), Arc::new(clock))
            .await
            .unwrap();
    let gpg = Gpg::new();
    let m = f.members.iter().find(|m| m.email == SQ_MEMBER).unwrap();
    gpg.import(&crypto::armored_secret(&m.secret).unwrap());
    gpg.import(&crypto::armored_public(&f.list.clone().strip_secret_key_material()).unwrap());
    let fpr = m.secret.fingerprint().to_hex();
    let post = |to: Option<&str>| {
        let mut fields = vec![("; protected-headers=", "\"v1\""), ("Subject", "Re: x")];
        if let Some(to) = to {
            fields.push(("To", to));
        }
        let text = format!("patched ({}).\n", crypto::random_hex(4));
        let entity = embargo_relay::entity::text_plain_with(&fields, &text);
        let sealed = gpg.sign_encrypt(&fpr, &f.list.fingerprint().to_hex(), &entity);
        embargo_relay::compose::multipart_encrypted(SQ_MEMBER, LIST, "...", &sealed)
    };
    let (code, text) = send_to(running.smtp_addr, SQ_MEMBER, LIST, &post(None))
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("names no list"), "{text}");
    send_to(running.smtp_addr, SQ_MEMBER, LIST, &post(Some(LIST)))
        .await
        .expect("a post that names its list is relayed");
    running.shutdown().await;

    // A key that comes onto a second list while the daemon runs (a roster
    // change, no reload) is bound from then on: on B alone, Distro B posts
    // to B without naming it; added to A, it must name it.
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let path = two_lists(&f, sink.addr(), &[1]);
    let clock = ManualClock::new(embargo_relay::clock::from_millis(now().timestamp_millis()));
    let running =
        embargo_relay::daemon::start_lists(Config::load_all(&path).unwrap(), Arc::new(clock))
            .await
            .unwrap();
    let gpg = Gpg::new();
    let m = f.members.iter().find(|m| m.email == SQ_MEMBER).unwrap();
    gpg.import(&crypto::armored_secret(&m.secret).unwrap());
    let b_key = running.relay_of(LIST_B).unwrap().config().list_key.cert();
    gpg.import(&crypto::armored_public(&b_key).unwrap());
    let unnamed_to_b = || {
        let text = format!("patched ({}).\n", crypto::random_hex(4));
        let entity = embargo_relay::compose::text_part(Some("Re: x"), &text);
        let fpr = m.secret.fingerprint().to_hex();
        let sealed = gpg.sign_encrypt(&fpr, &b_key.fingerprint().to_hex(), &entity);
        embargo_relay::compose::multipart_encrypted(SQ_MEMBER, LIST_B, "...", &sealed)
    };
    send_to(running.smtp_addr, SQ_MEMBER, LIST_B, &unnamed_to_b())
        .await
        .expect("its key is on B alone");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["roster", "--config"])
        .arg(&path)
        .args([
            "--list",
            LIST,
            "add",
            SQ_MEMBER,
            "--organization",
            "Org 2",
            "--key",
        ])
        .arg(f.path("keys/m2.asc"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = running.relay_of(LIST).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while a.directory().roster.find(SQ_MEMBER).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the roster file was not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, text) = send_to(running.smtp_addr, SQ_MEMBER, LIST_B, &unnamed_to_b())
        .await
        .unwrap_err();
    assert!(code == 550 && text.contains("names no list"), "{text}");
    running.shutdown().await;
}
