//! The IMAP poller: fetches new mail from a mailbox, commits each one
//! through the intake, and only then deletes it (or moves it to
//! `done_folder`). A crash between fetch and commit fetches the mail again;
//! a crash between commit and delete finds its digest in the spool and
//! deletes it without processing it twice. With IDLE the server tells us
//! of new mail at once; otherwise the mailbox is polled.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_imap::types::UnsolicitedResponse;
use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::{ImapConfig, ImapTls};
use crate::context::Relay;
use crate::crypto::sha256_hex;
use crate::failpoint;
use crate::inbound::smtp::Envelope;
use crate::intake::Intake;

/// Any byte stream a session runs over: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> Io for T {}

type Imap = Session<Box<dyn Io>>;

/// How long one IMAP command may take before the connection is dropped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a session ended; logged without any message content.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("{0}")]
    Imap(String),
    #[error("IMAP server did not answer within {0:?}")]
    Timeout(Duration),
}

fn imap_error(e: async_imap::error::Error) -> PollError {
    use async_imap::error::Error;
    // Parse errors can quote server data (a message's bytes): never shown.
    PollError::Imap(match e {
        // Only the kind: async-imap's parse failures arrive as Io errors
        // whose text quotes the unparsed response, message bodies included.
        Error::Io(e) => format!("connection: {}", e.kind()),
        Error::Bad(s) => format!("server said BAD: {}", one_line(&s)),
        Error::No(s) => format!("server said NO: {}", one_line(&s)),
        Error::ConnectionLost => "connection lost".to_owned(),
        Error::Parse(_) => "unparseable server response".to_owned(),
        Error::Validate(_) => "invalid mailbox or folder name".to_owned(),
        _ => "IMAP error".to_owned(),
    })
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Runs `f` under the command timeout.
async fn timed<T>(f: impl Future<Output = async_imap::error::Result<T>>) -> Result<T, PollError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(r) => r.map_err(imap_error),
        Err(_) => Err(PollError::Timeout(COMMAND_TIMEOUT)),
    }
}

/// Polls until `shutdown`, handing mail to the intake of its list among
/// `lists` (the daemon's, so their rejections are counted with the
/// listener's): the lists that share this mailbox, at least one. Several
/// lists sharing one mailbox get each mail by the list it names (see
/// [`route`]). Connection trouble is logged and retried with backoff (5 s
/// doubling to 5 min), never fatal to the daemon.
///
/// `lists` is replaced by a reload (a list removed, or added on this
/// mailbox); while it is empty the mailbox is left alone. `relay` is the
/// daemon's first list's, for what is the daemon's (the clock, the digests
/// of fetched mail, the records of mail that names no list).
pub(crate) async fn run(
    lists: MailboxLists,
    relay: Arc<Relay>,
    config: ImapConfig,
    shutdown: CancellationToken,
) {
    let intake = &lists;
    const FIRST: Duration = Duration::from_secs(5);
    let mut backoff = FIRST;
    loop {
        let mut connected = false;
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&relay, intake, &config, &shutdown, &mut connected) => r,
        };
        if connected {
            // A session that got going: the next trouble starts the backoff anew.
            backoff = FIRST;
        }
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(host = %config.host, port = config.port, error = %e, retry_in = ?backoff, "IMAP session failed; reconnecting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

async fn connect(config: &ImapConfig) -> Result<Client<Box<dyn Io>>, PollError> {
    // Only the kind: a read error may quote server data (see `imap_error`).
    let io = |e: std::io::Error| PollError::Imap(format!("connection: {}", e.kind()));
    let tcp = tokio::time::timeout(
        COMMAND_TIMEOUT,
        TcpStream::connect((config.host.as_str(), config.port)),
    )
    .await
    .map_err(|_| PollError::Timeout(COMMAND_TIMEOUT))?
    .map_err(io)?;
    tcp.set_nodelay(true).map_err(io)?;
    let stream: Box<dyn Io> = match config.tls {
        ImapTls::Implicit => Box::new(tls(config, tcp).await?),
        ImapTls::None | ImapTls::StartTls => Box::new(tcp),
    };
    let mut client = Client::new(stream);
    let greeting = tokio::time::timeout(COMMAND_TIMEOUT, client.read_response())
        .await
        .map_err(|_| PollError::Timeout(COMMAND_TIMEOUT))?
        .map_err(io)?;
    if greeting.is_none() {
        return Err(PollError::Imap("server closed before its greeting".into()));
    }
    if config.tls == ImapTls::StartTls {
        timed(client.run_command_and_check_ok("STARTTLS", None)).await?;
        // No greeting follows STARTTLS (RFC 3501 6.2.1).
        let upgraded: Box<dyn Io> = Box::new(tls(config, client.into_inner()).await?);
        client = Client::new(upgraded);
    }
    Ok(client)
}

fn connector(config: &ImapConfig) -> Result<tokio_native_tls::TlsConnector, PollError> {
    use tokio_native_tls::native_tls;
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(pem) = &config.ca_pem {
        let ca = native_tls::Certificate::from_pem(pem)
            .map_err(|e| PollError::Imap(format!("inbound.imap.ca_file: {e}")))?;
        builder.add_root_certificate(ca);
    }
    let c = builder
        .build()
        .map_err(|e| PollError::Imap(format!("TLS setup: {e}")))?;
    Ok(tokio_native_tls::TlsConnector::from(c))
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin + Send + Debug>(
    config: &ImapConfig,
    stream: S,
) -> Result<tokio_native_tls::TlsStream<S>, PollError> {
    tokio::time::timeout(
        COMMAND_TIMEOUT,
        connector(config)?.connect(&config.host, stream),
    )
    .await
    .map_err(|_| PollError::Timeout(COMMAND_TIMEOUT))?
    .map_err(|e| PollError::Imap(format!("TLS with {}: {e}", config.host)))
}

/// One connection: log in, then drain the mailbox and wait, until shutdown.
async fn session(
    relay: &Arc<Relay>,
    intake: &MailboxLists,
    config: &ImapConfig,
    shutdown: &CancellationToken,
    connected: &mut bool,
) -> Result<(), PollError> {
    let client = connect(config).await?;
    let password = String::from_utf8_lossy(config.password.expose()).into_owned();
    let mut imap =
        match tokio::time::timeout(COMMAND_TIMEOUT, client.login(&config.user, password)).await {
            Err(_) => return Err(PollError::Timeout(COMMAND_TIMEOUT)),
            Ok(Err((e, _))) => {
                return Err(PollError::Imap(format!(
                    "login as {} failed: {}",
                    config.user,
                    imap_error(e)
                )));
            }
            Ok(Ok(s)) => s,
        };
    let caps = timed(imap.capabilities()).await?;
    let idle = caps.has_str("IDLE");
    let uidplus = caps.has_str("UIDPLUS");
    let can_move = caps.has_str("MOVE");
    timed(imap.select(&config.mailbox)).await?;
    tracing::info!(host = %config.host, mailbox = %config.mailbox, idle, "IMAP poller connected");
    let remove = Remove {
        uidplus,
        can_move,
        done_folder: config.done_folder.clone(),
    };
    *connected = true;
    loop {
        drain(relay, intake, config, &mut imap, &remove).await?;
        // Mail that arrived during the drain was announced then (EXISTS):
        // drain again instead of idling past it.
        let mut news = false;
        while let Ok(r) = imap.unsolicited_responses.try_recv() {
            news |= matches!(
                r,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            );
        }
        if news && !shutdown.is_cancelled() {
            continue;
        }
        if shutdown.is_cancelled() {
            let _ = tokio::time::timeout(Duration::from_secs(5), imap.logout()).await;
            return Ok(());
        }
        imap = if idle {
            wait_idle(imap, config.poll_interval, shutdown).await?
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
            imap
        };
        if shutdown.is_cancelled() {
            let _ = tokio::time::timeout(Duration::from_secs(5), imap.logout()).await;
            return Ok(());
        }
    }
}

/// Waits in IDLE until the server reports something, the poll interval
/// passes (a safety net) or the daemon shuts down.
async fn wait_idle(
    imap: Imap,
    interval: Duration,
    shutdown: &CancellationToken,
) -> Result<Imap, PollError> {
    let mut handle = imap.idle();
    timed(handle.init()).await?;
    {
        let (wait, stop) = handle.wait_with_timeout(interval);
        tokio::pin!(wait);
        // The server's keep-alives restart async-imap's own timeout, so the
        // poll interval (the safety net under IDLE) is enforced here.
        tokio::select! {
            r = &mut wait => { r.map_err(imap_error)?; }
            _ = tokio::time::sleep(interval) => { drop(stop); let _ = wait.await; }
            _ = shutdown.cancelled() => { drop(stop); let _ = wait.await; }
        }
    }
    timed(handle.done()).await
}

/// The lists that share one mailbox, replaced by a reload.
pub(crate) type MailboxLists = Arc<std::sync::RwLock<Vec<Intake>>>;

/// How processed mail leaves the mailbox.
struct Remove {
    uidplus: bool,
    can_move: bool,
    done_folder: Option<String>,
}

/// Processes every message in the mailbox, oldest first.
async fn drain(
    relay: &Arc<Relay>,
    lists: &MailboxLists,
    config: &ImapConfig,
    imap: &mut Imap,
    remove: &Remove,
) -> Result<(), PollError> {
    let intake = &lists.read().unwrap_or_else(|e| e.into_inner()).clone()[..];
    if intake.is_empty() {
        // Every list of this mailbox was removed: its mail is left there.
        return Ok(());
    }
    let mut uids: Vec<u32> = timed(imap.uid_search("UNDELETED"))
        .await?
        .into_iter()
        .collect();
    uids.sort_unstable();
    for uid in uids {
        let limit = relay.config().smtp.max_message_size;
        let size = fetch_size(imap, uid).await?;
        let Some(size) = size else {
            tracing::warn!(uid, "server gave no size for a message; skipped this round");
            continue;
        };
        let raw = if size as usize > limit {
            None
        } else {
            match fetch_body(imap, uid).await? {
                Some(raw) => Some(raw),
                None => {
                    tracing::warn!(uid, "server gave no body for a message; skipped this round");
                    continue;
                }
            }
        };
        failpoint::hit("imap-after-fetch");
        let done = match raw {
            None => {
                let detail = format!(
                    "IMAP {}/{} uid {uid}: message of {size} octets larger than the limit of {limit} octets (inbound.smtp.max_message_size)",
                    config.host, config.mailbox
                );
                tracing::warn!(uid, size, limit, "fetched mail too large; rejected");
                relay
                    .counters
                    .rejected(&relay.config().list_address, "too_large");
                let now = relay.clock.now();
                // Not read, so not routed: the daemon's own record.
                relay
                    .spool
                    .for_list("")
                    .audit(now, "rejected", None, None, &detail)
                    .is_ok()
            }
            Some(raw) => process(relay, intake, config, uid, raw).await,
        };
        if !done {
            // Temporary trouble: leave it for the next round.
            continue;
        }
        failpoint::hit("imap-before-delete");
        // One mail that cannot be removed (a missing done_folder, no right
        // to delete) must not hold up the ones behind it; it is recorded as
        // processed, so the next round removes it without processing it.
        if let Err(e) = remove_message(imap, uid, remove).await {
            tracing::error!(uid, error = %e, "processed mail could not be removed from the mailbox");
        }
    }
    Ok(())
}

/// Commits one fetched mail; true when it was dealt with for good
/// (accepted, rejected, or seen before) and may leave the mailbox.
async fn process(
    relay: &Arc<Relay>,
    lists: &[Intake],
    config: &ImapConfig,
    uid: u32,
    raw: Vec<u8>,
) -> bool {
    let digest = sha256_hex(&raw);
    match relay.spool.fetched(&digest) {
        Ok(Some(outcome)) => {
            tracing::info!(uid, %outcome, "fetched mail was processed before; removing it");
            return true;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "spool unreadable; leaving the mail in the mailbox");
            return false;
        }
    }
    let peer = format!("IMAP {}/{} uid {uid}", config.host, config.mailbox);
    let Some(intake) = route(lists, &raw) else {
        let detail = format!(
            "{peer}: the mailbox serves {} lists and the mail's Delivered-To, X-Original-To, To and Cc name not exactly one of them",
            lists.len()
        );
        tracing::warn!(
            uid,
            "fetched mail names no single list of its mailbox; rejected"
        );
        relay
            .counters
            .rejected(&relay.config().list_address, "binding");
        let now = relay.clock.now();
        let recorded = relay
            .spool
            .for_list("")
            .audit(now, "rejected", None, None, &detail);
        return recorded.is_ok()
            && relay
                .spool
                .record_fetched(&digest, "rejected: names no single list", now)
                .is_ok();
    };
    // One configuration for this mail, handed on to the intake.
    let snapshot = intake.relay().snapshot();
    let envelope = Envelope {
        helo: "imap".to_owned(),
        mail_from: String::new(),
        rcpt_to: vec![snapshot.config.list_address.clone()],
        peer,
    };
    let this = intake.clone();
    let key = digest.clone();
    let reply = match tokio::task::spawn_blocking(move || {
        let raw = crate::entity::to_crlf(&raw);
        this.process_under(snapshot, &envelope, &raw, Some(&key))
    })
    .await
    {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "intake task failed");
            return false;
        }
    };
    if (400..500).contains(&reply.code) {
        tracing::warn!(uid, reply = %reply.text, "temporary failure; the mail stays in the mailbox");
        return false;
    }
    let outcome = format!("{} {} {}", reply.code, reply.enhanced, reply.text);
    if let Err(e) = relay
        .spool
        .record_fetched(&digest, &outcome, relay.clock.now())
    {
        tracing::error!(error = %e, "could not record the fetched mail; leaving it in the mailbox");
        return false;
    }
    true
}

/// The list a fetched mail is for: the mailbox's only list, or, when
/// several share it, the one list its header names ([`pick`]).
fn route<'a>(lists: &'a [Intake], raw: &[u8]) -> Option<&'a Intake> {
    if let [only] = lists {
        return Some(only);
    }
    let configs: Vec<_> = lists.iter().map(|i| i.relay().config()).collect();
    pick(raw, |address| {
        configs.iter().position(|c| c.serves(address))
    })
    .map(|i| &lists[i])
}

/// Which list (by `which`, the list an address reaches) a mail names: by
/// the delivery headers an MTA adds (`Delivered-To`, `X-Original-To`),
/// else by `To` and `Cc`. None or two named: no list (the mail is
/// refused, not guessed).
fn pick(raw: &[u8], which: impl Fn(&str) -> Option<usize>) -> Option<usize> {
    let message = mail_parser::MessageParser::new().parse_headers(raw)?;
    let named = |names: &[&str]| -> Vec<usize> {
        let mut found = Vec::new();
        for header in message.headers() {
            if !names
                .iter()
                .any(|n| header.name.as_str().eq_ignore_ascii_case(n))
            {
                continue;
            }
            for address in crate::intake::mime::header_addresses(&header.value) {
                if let Some(i) = which(&address)
                    && !found.contains(&i)
                {
                    found.push(i);
                }
            }
        }
        found
    };
    for names in [&["Delivered-To", "X-Original-To"][..], &["To", "Cc"][..]] {
        match named(names)[..] {
            [one] => return Some(one),
            [] => continue,
            _ => return None,
        }
    }
    None
}

/// `UID FETCH uid query`: the response for that message, if the server gave one.
async fn fetch_one(
    imap: &mut Imap,
    uid: u32,
    query: &str,
) -> Result<Option<async_imap::types::Fetch>, PollError> {
    let fetches: Vec<_> = timed(async {
        imap.uid_fetch(uid.to_string(), query)
            .await?
            .try_collect()
            .await
    })
    .await?;
    Ok(fetches.into_iter().find(|f| f.uid == Some(uid)))
}

async fn fetch_size(imap: &mut Imap, uid: u32) -> Result<Option<u32>, PollError> {
    Ok(fetch_one(imap, uid, "RFC822.SIZE")
        .await?
        .and_then(|f| f.size))
}

async fn fetch_body(imap: &mut Imap, uid: u32) -> Result<Option<Vec<u8>>, PollError> {
    Ok(fetch_one(imap, uid, "BODY.PEEK[]")
        .await?
        .and_then(|f| f.body().map(<[u8]>::to_vec)))
}

async fn remove_message(imap: &mut Imap, uid: u32, how: &Remove) -> Result<(), PollError> {
    let set = uid.to_string();
    if let Some(folder) = &how.done_folder {
        if how.can_move {
            return timed(imap.uid_mv(&set, folder)).await;
        }
        timed(imap.uid_copy(&set, folder)).await?;
    }
    timed(async {
        imap.uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    if how.uidplus {
        timed(async { imap.uid_expunge(&set).await?.try_collect::<Vec<_>>().await }).await?;
    } else {
        timed(async { imap.expunge().await?.try_collect::<Vec<_>>().await }).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A mailbox several lists share: each mail goes to the one list its
    /// delivery headers name, else its To/Cc; none or two: no list.
    #[test]
    fn a_shared_mailbox_routes_by_the_list_a_mail_names() {
        let lists = ["a@x.org", "b@x.org"];
        let which = |address: &str| lists.iter().position(|l| l.eq_ignore_ascii_case(address));
        let pick =
            |headers: &str| super::pick(format!("{headers}\r\n\r\nbody\r\n").as_bytes(), which);
        assert_eq!(pick("Delivered-To: B@x.org\r\nTo: a@x.org"), Some(1));
        assert_eq!(pick("X-Original-To: a@x.org\r\nTo: b@x.org"), Some(0));
        assert_eq!(pick("To: Team <b@x.org>, other@y.org"), Some(1));
        assert_eq!(pick("To: other@y.org\r\nCc: a@x.org"), Some(0));
        assert_eq!(pick("To: a@x.org\r\nCc: b@x.org"), None, "two lists");
        assert_eq!(pick("Delivered-To: a@x.org\r\nDelivered-To: b@x.org"), None);
        assert_eq!(pick("To: other@y.org"), None, "no list");
    }
}
