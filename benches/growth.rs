//! The growth benchmark (issue 14, point 5): what 100,000 junk mails add to
//! the spool. Junk arrives from eight untrusted loopback addresses
//! (127.0.0.2-9) over the daemon's SMTP listener: unsigned mail (refused
//! after DATA) and mail to an unknown recipient (refused in the session).
//! Then junk through the `submit` path (a process per mail behind Postfix,
//! here its intake called in this process), which counts in the spool.
//!
//! ```text
//! cargo bench --bench growth                      # 100,000 junk mails
//! cargo bench --bench growth -- --mails 20000 --submit 2000
//! ```
//!
//! Prints the audit records added and the spool's growth in bytes (the
//! database and its WAL, after the daemon stopped and wrote its counts).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embargo_relay::clock::{Clock, SystemClock};
use embargo_relay::config::Config;
use embargo_relay::context::Relay;
use embargo_relay::crypto;
use embargo_relay::inbound::smtp::Envelope;
use embargo_relay::intake::Intake;
use embargo_relay::spool::Spool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const LIST: &str = "list@bench.example";
const PST: &str = "pst@bench.example";
const PEERS: u8 = 8;

fn spool_bytes(state: &Path) -> u64 {
    ["spool.sqlite", "spool.sqlite-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(state.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn audit_rows(state: &Path) -> usize {
    Spool::open(state, LIST)
        .unwrap()
        .audit_records()
        .unwrap()
        .len()
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let born = SystemClock.now() - chrono::Duration::days(1);
    let list = crypto::generate_key(&format!("List <{LIST}>"), born, None).unwrap();
    let pst = crypto::generate_key(&format!("PST <{PST}>"), born, None).unwrap();
    std::fs::write(dir.join("list.key"), crypto::armored_secret(&list).unwrap()).unwrap();
    std::fs::write(dir.join("pst.asc"), crypto::armored_public(&pst).unwrap()).unwrap();
    let text = format!(
        "[list]\naddress = \"{LIST}\"\nsecret_key = \"{}\"\nstate_dir = \"{}\"\n\n\
[inbound.smtp]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"1MiB\"\nmax_sessions = 64\nmax_sessions_per_peer = 8\n\n\
[outbound]\nsmarthost = \"smtp://127.0.0.1:9\"\n\n\
[[member]]\nemail = \"{PST}\"\norganization = \"PST\"\nkey = \"{}\"\npst = true\n",
        dir.join("list.key").display(),
        dir.join("state").display(),
        dir.join("pst.asc").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One reply (the last line of a multi-line one): its code; 0 when the
/// connection closed.
async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, line: &mut String) -> u16 {
    loop {
        line.clear();
        if r.read_line(line).await.unwrap_or(0) == 0 {
            return 0;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line[..3].parse().unwrap_or(0);
        }
    }
}

/// One junk client from `from`: `mails` refused transactions, every other
/// one unsigned mail, the rest an unknown recipient; connecting again
/// whenever the server closes the session for its errors (421).
async fn junk_client(server: std::net::SocketAddr, from: std::net::IpAddr, mails: usize) {
    let mut done = 0;
    let mut line = String::new();
    while done < mails {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
        let stream = socket.connect(server).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        if reply(&mut r, &mut line).await != 220 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        w.write_all(b"EHLO junk.example\r\n").await.unwrap();
        assert_eq!(reply(&mut r, &mut line).await, 250);
        while done < mails {
            let i = done;
            let mut step = async |cmd: &[u8]| {
                if w.write_all(cmd).await.is_err() {
                    return 0;
                }
                reply(&mut r, &mut line).await
            };
            if step(b"MAIL FROM:<junk@junk.example>\r\n").await != 250 {
                break;
            }
            let refused = if i % 2 == 0 {
                if step(format!("RCPT TO:<{LIST}>\r\n").as_bytes()).await != 250
                    || step(b"DATA\r\n").await != 354
                {
                    break;
                }
                let body = format!(
                    "From: <junk@junk.example>\r\nTo: <{LIST}>\r\nSubject: junk {i}\r\n\r\njunk {i}\r\n.\r\n"
                );
                step(body.as_bytes()).await == 550
            } else {
                let code = step(b"RCPT TO:<nobody@bench.example>\r\n").await;
                code == 550 && step(b"RSET\r\n").await == 250
            };
            if !refused {
                break;
            }
            done += 1;
        }
    }
}

fn smtp_case(mails: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path());
    let state = dir.path().join("state");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (secs, during, base, base_bytes) = rt.block_on(async {
        let config = Config::load(&config_path).unwrap();
        let running = embargo_relay::daemon::start(config, Arc::new(SystemClock))
            .await
            .unwrap();
        let base = audit_rows(&state);
        let base_bytes = spool_bytes(&state);
        let t0 = Instant::now();
        let mut clients = Vec::new();
        for p in 0..PEERS {
            let from = std::net::IpAddr::from([127, 0, 0, 2 + p]);
            let n = mails / PEERS as usize + usize::from((p as usize) < mails % PEERS as usize);
            clients.push(tokio::spawn(junk_client(running.smtp_addr, from, n)));
        }
        for c in clients {
            c.await.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        let during = audit_rows(&state) - base;
        running.shutdown().await;
        (secs, during, base, base_bytes)
    });
    let rows = audit_rows(&state) - base;
    let bytes = spool_bytes(&state).saturating_sub(base_bytes);
    println!(
        "| SMTP listener | {mails} | {:.0}/s | {during} | {rows} | {:.0} KB | {:.2} B |",
        mails as f64 / secs,
        bytes as f64 / 1e3,
        bytes as f64 / mails as f64
    );
}

fn submit_case(mails: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path());
    let state = dir.path().join("state");
    // A first submit creates the spool; its size then is the base.
    let relay = |clock| {
        Arc::new(Relay::open_for_submit(Config::load(&config_path).unwrap(), clock).unwrap())
    };
    drop(relay(Arc::new(SystemClock)));
    let base_bytes = spool_bytes(&state);
    let base_rows = audit_rows(&state);
    let t0 = Instant::now();
    for i in 0..mails {
        // As `submit` does it: a relay and an intake per mail.
        let intake = Intake::for_one_mail(relay(Arc::new(SystemClock)));
        let envelope = Envelope {
            helo: "submit".to_owned(),
            mail_from: "junk@junk.example".to_owned(),
            rcpt_to: vec![LIST.to_owned()],
            peer: format!("192.0.2.{} (submit)", i % PEERS as usize + 1),
        };
        let raw = format!(
            "From: <junk@junk.example>\r\nTo: <{LIST}>\r\nSubject: junk {i}\r\n\r\njunk {i}\r\n"
        );
        let reply = intake.process(&envelope, raw.as_bytes());
        assert_eq!(reply.code, 550);
    }
    let secs = t0.elapsed().as_secs_f64();
    let during = audit_rows(&state) - base_rows;
    // The daemon writes what the windows counted.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = Config::load(&config_path).unwrap();
        let running = embargo_relay::daemon::start(config, Arc::new(SystemClock))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        running.shutdown().await;
    });
    let rows = audit_rows(&state) - base_rows;
    let bytes = spool_bytes(&state).saturating_sub(base_bytes);
    println!(
        "| `submit` (in process) | {mails} | {:.0}/s | {during} | {rows} | {:.0} KB | {:.2} B |",
        mails as f64 / secs,
        bytes as f64 / 1e3,
        bytes as f64 / mails as f64
    );
}

fn main() {
    let mut mails = 100_000;
    let mut submit = 10_000;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--mails" => {
                mails = args[i + 1].parse().expect("--mails N");
                i += 1;
            }
            "--submit" => {
                submit = args[i + 1].parse().expect("--submit N");
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    println!(
        "| path | junk mails | rate | audit records while running | after stop (counts written) | spool size | per mail |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    smtp_case(mails);
    if submit > 0 {
        submit_case(submit);
    }
}
