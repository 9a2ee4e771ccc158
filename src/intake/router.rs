//! Several lists behind one listener: each mail goes to the list its
//! recipient names, one list per transaction.

use std::sync::{Arc, RwLock};

use crate::mail::{Envelope, MailHandler, Reply};

use super::Intake;

/// The handler the SMTP listener (and an IMAP poller shared by several
/// lists) hands mail to: it routes by recipient to each list's [`Intake`].
/// A SIGHUP that adds or removes lists replaces the set ([`Router::set`]).
#[derive(Clone)]
pub struct Router {
    lists: Arc<RwLock<Arc<Vec<Intake>>>>,
    /// Records what the listener refuses before a mail names a list.
    daemon: Intake,
}

/// The answer to a recipient that is no list here.
fn no_such_list() -> Reply {
    Reply::new(
        550,
        "5.1.1",
        "no such list here; only the lists, their request addresses and their bounce addresses are accepted",
    )
}

impl Router {
    /// A router over `lists` (at least one).
    pub fn new(lists: Vec<Intake>) -> Router {
        let daemon = lists.first().expect("a daemon serves a list").daemon_wide();
        Router {
            lists: Arc::new(RwLock::new(Arc::new(lists))),
            daemon,
        }
    }

    /// Puts another set of lists in force (a reload).
    pub fn set(&self, lists: Vec<Intake>) {
        *self.lists.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(lists);
    }

    /// The lists in force.
    pub fn lists(&self) -> Arc<Vec<Intake>> {
        self.lists.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What records the daemon's own rejections (its tally is flushed by
    /// the daemon's upkeep).
    pub fn daemon(&self) -> &Intake {
        &self.daemon
    }

    /// The list `rcpt` reaches (its address or request address, any case).
    pub fn route(&self, rcpt: &str) -> Option<Intake> {
        self.lists()
            .iter()
            .find(|i| i.relay().config().serves(rcpt))
            .cloned()
    }
}

/// Whether two intakes are the same list's.
fn same(a: &Intake, b: &Intake) -> bool {
    Arc::ptr_eq(a.relay(), b.relay())
}

impl MailHandler for Router {
    /// A recipient of another list than the transaction's first gets 452
    /// (RFC 5321: too many recipients; the client sends it in another
    /// transaction): each mail is examined under one list's keys, roster
    /// and binding.
    fn check_rcpt(&self, rcpt: &str, earlier: &[String]) -> Result<(), Reply> {
        let Some(this) = self.route(rcpt) else {
            return Err(no_such_list());
        };
        if this.relay().taking.is_closed() {
            // A reload is removing it, or finds it cannot: the sender
            // tries again, and hears then.
            return Err(Reply::new(
                451,
                "4.3.0",
                "this list is being changed on this server; try again later",
            ));
        }
        match earlier.first().and_then(|first| self.route(first)) {
            Some(first) if !same(&first, &this) => Err(Reply::new(
                452,
                "4.5.3",
                format!(
                    "one list per transaction: this one goes to {}; send the mail for {} in another",
                    first.relay().config().list_address,
                    this.relay().config().list_address
                ),
            )),
            _ => Ok(()),
        }
    }

    fn refused(&self, peer: &str, mail_from: Option<&str>, reply: &Reply) {
        self.daemon.refused(peer, mail_from, reply);
    }

    async fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> Reply {
        let routed: Option<Vec<Intake>> = envelope.rcpt_to.iter().map(|r| self.route(r)).collect();
        let Some(routed) = routed else {
            // A list removed by a reload between RCPT and the end of DATA:
            // the sender tries again, and hears at RCPT that it is gone.
            return Reply::new(
                451,
                "4.3.0",
                "a recipient's list is not served here now; try again later",
            );
        };
        let Some(first) = routed.first().cloned() else {
            return Reply::new(503, "5.5.1", "no valid recipients");
        };
        if routed.iter().any(|i| !same(i, &first)) {
            // RCPT keeps one list per transaction; a reload in between
            // could still make two.
            return Reply::new(
                451,
                "4.5.3",
                "the recipients name more than one list; send one mail per list",
            );
        }
        first.deliver(envelope, raw).await
    }
}
