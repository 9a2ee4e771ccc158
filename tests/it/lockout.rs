//! Issue 14, point 4: the PST cannot be locked out. 200 idle and slow
//! clients from eight other addresses (127.0.0.2 to 127.0.0.9) take what
//! they can of the listener; each address gets at most its share, and an
//! announcement from the trusted local MTA's address (127.0.0.1) is still
//! accepted.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_junk_clients_from_other_addresses_do_not_lock_the_pst_out() {
    let f = Fixture::new();
    let InProcess { running, .. } = f.start_in_process(&Tweaks::default()).await;
    let addr = running.smtp_addr;
    let connect = |ip: std::net::Ipv4Addr| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((ip, 0).into()).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let mut greeting = [0u8; 256];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut greeting))
            .await
            .expect("an answer")
            .unwrap_or(0);
        (stream, String::from_utf8_lossy(&greeting[..n]).into_owned())
    };
    let mut junk = Vec::new();
    // One address alone: four sessions, and the fifth is told why not.
    let lone = std::net::Ipv4Addr::new(127, 0, 0, 10);
    for n in 1..=5 {
        let (stream, greeting) = connect(lone).await;
        if n <= 4 {
            assert!(greeting.starts_with("220 "), "{n}: {greeting}");
        } else {
            assert!(
                greeting.starts_with("421 4.7.0 too many connections from your address"),
                "{greeting}"
            );
        }
        junk.push(stream);
    }
    // The crowd: 200 from eight more addresses.
    let mut admitted = std::collections::BTreeMap::new();
    for i in 0..200u8 {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, 2 + i % 8);
        let (mut stream, greeting) = connect(ip).await;
        if greeting.starts_with("220 ") {
            *admitted.entry(ip).or_insert(0) += 1;
        } else {
            assert!(greeting.starts_with("421 "), "{greeting}");
        }
        // Half of them slow: a byte now and then, never a whole command.
        if i % 2 == 0 {
            let _ = stream.write_all(b"E").await;
        }
        junk.push(stream);
    }
    // No address over its share (32 / 8 = 4, the default), and the crowd
    // within the shared slots: 32 less the 8 kept for trusted peers, less
    // the lone address's 4.
    assert!(admitted.values().all(|n| *n <= 4), "{admitted:?}");
    assert!(admitted.values().sum::<usize>() <= 24 - 4, "{admitted:?}");
    let reply = send(
        addr,
        PST,
        &f.gpg_signed(PST, "through the crowd", &embargoed("still heard")),
    )
    .await
    .expect("the trusted MTA's announcement is accepted");
    assert!(reply.contains("announcement accepted as"), "{reply}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(junk);
    running.shutdown().await;
}
