//! Acceptance 7: SMTP smuggling. A DATA section with `\n.\n` or a bare LF
//! yields no message (never two), and the session and daemon carry on.

use std::net::SocketAddr;

use embargo_relay::sink::CaptureSink;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::*;

/// Speaks SMTP over a raw socket; returns the final reply to DATA and to QUIT.
async fn raw_transaction(addr: SocketAddr, data: &[u8]) -> (String, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut reply = String::new();
    async fn read_reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, out: &mut String) {
        loop {
            out.clear();
            if r.read_line(out).await.unwrap_or(0) == 0 {
                return;
            }
            if out.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }
    read_reply(&mut r, &mut reply).await;
    for cmd in [
        "EHLO client.example\r\n".to_owned(),
        format!("MAIL FROM:<{PST}>\r\n"),
        format!("RCPT TO:<{LIST}>\r\n"),
        "DATA\r\n".to_owned(),
    ] {
        w.write_all(cmd.as_bytes()).await.unwrap();
        read_reply(&mut r, &mut reply).await;
    }
    assert!(reply.starts_with("354"), "{reply}");
    w.write_all(data).await.unwrap();
    read_reply(&mut r, &mut reply).await;
    let data_reply = reply.clone();
    let _ = w.write_all(b"QUIT\r\n").await;
    read_reply(&mut r, &mut reply).await;
    (data_reply, reply)
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggled_messages_are_refused_whole() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let daemon = Daemon::start(&f.write_config(sink.addr()), &f.path("daemon.log"));
    let first = f.gpg_signed(PST, "first", &embargoed("the real one"));
    let second = f.gpg_signed(PST, "second", &embargoed("the smuggled one"));

    // The last one hides the bare LF at the end of a line over 1000 octets.
    let long_line = [&[b'x'; 1200][..], b"\n.\r\n"].concat();
    for ending in [&b"\n.\n"[..], b"\n.\r\n", b"\r\n.\n", &long_line] {
        let mut data = first.clone();
        data.extend_from_slice(ending);
        data.extend_from_slice(
            format!("MAIL FROM:<{PST}>\r\nRCPT TO:<{LIST}>\r\nDATA\r\n").as_bytes(),
        );
        data.extend_from_slice(&second);
        data.extend_from_slice(b"\r\n.\r\n");
        let (data_reply, quit) = raw_transaction(daemon.addr, &data).await;
        assert!(
            data_reply.starts_with("554 5.6.0"),
            "{ending:?}: {data_reply}"
        );
        assert!(
            quit.is_empty(),
            "{ending:?}: the session must be closed, not read further: {quit}"
        );
    }
    // A bare LF inside an otherwise valid, PST-signed message.
    let mut bare = f.gpg_signed(PST, "bare", &embargoed("line one"));
    let at = find(&bare, b"line one").unwrap();
    bare.splice(at..at, b"x\n".iter().copied());
    bare.extend_from_slice(b"\r\n.\r\n");
    let (data_reply, _) = raw_transaction(daemon.addr, &bare).await;
    assert!(data_reply.starts_with("554 5.6.0"), "{data_reply}");

    assert!(
        f.audit().iter().all(|r| r.event != "accepted"),
        "nothing was accepted"
    );

    // The daemon still serves: a clean message goes through and is the only one sent.
    let mut clean = first.clone();
    clean.extend_from_slice(b"\r\n.\r\n");
    let (data_reply, _) = raw_transaction(daemon.addr, &clean).await;
    assert!(data_reply.starts_with("250"), "{data_reply}");
    let n = f.usable_members().count();
    wait_copies(&sink, n).await;
    f.wait_until_no_pending().await;
    assert_eq!(copies(&sink.captured()).len(), n);
    assert_eq!(
        f.audit().iter().filter(|r| r.event == "accepted").count(),
        1
    );
}
