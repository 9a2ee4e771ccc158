//! What goes into the spool and comes out of it: new messages and posts,
//! delivery kinds and rows, embargo and audit views.

use chrono::{DateTime, Utc};

/// A new, verified announcement to commit, already sealed to the list key.
#[derive(Debug)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub signer: &'a str,
    /// When the announcement's embargo lifts.
    pub embargo_until: DateTime<Utc>,
    /// Identities of its signatures (replay cache keys); any seen before
    /// makes the message a replay.
    pub sig_digests: &'a [String],
    pub sealed: &'a [u8],
    /// One delivery is created per member address.
    pub members: &'a [String],
    /// The public lists the held advisory goes to at `embargo_until`
    /// (empty: no advisory held).
    pub public_to: &'a [String],
    /// The release hooks called at `embargo_until` (a `hook` row each).
    pub hooks: &'a [String],
    /// The PST address to remind, and when (none if that time has passed).
    pub reminder: Option<(&'a str, DateTime<Utc>)>,
    /// When to remind the members who will not have acknowledged by then,
    /// and who they are (a reminder row each, skipped at its time for a
    /// member who has).
    pub ack_reminders: Option<(DateTime<Utc>, &'a [String])>,
    /// SHA-256 of the raw mail as fetched from a mailbox, recorded in the
    /// same transaction so that a crash before the mailbox copy is deleted
    /// never processes it twice.
    pub fetched: Option<&'a str>,
    /// The submission's digest (envelope and bytes), so that the same
    /// submission again is answered as accepted.
    pub submission: Option<&'a str>,
}

/// A verified member post to commit, sealed to the list key.
#[derive(Debug)]
pub struct NewPost<'a> {
    pub id: &'a str,
    /// Fingerprint of the member certificate that signed it.
    pub signer: &'a str,
    pub sig_digests: &'a [String],
    pub sealed: &'a [u8],
    /// Who gets a copy: every member, or the PST only (`member_posts`).
    pub recipients: &'a [String],
    /// The raw mail's digest when it was fetched from a mailbox.
    pub fetched: Option<&'a str>,
    /// The submission's digest (see [`NewMessage::submission`]).
    pub submission: Option<&'a str>,
    /// A join request's envelope sender and peer, for its rate limit.
    pub join_from: Option<(&'a str, &'a str)>,
    /// The audit record: its event (`member-post`, `join-request`) and detail.
    pub event: &'a str,
    pub detail: &'a str,
}

/// What a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A member's encrypted copy of the announcement.
    Copy,
    /// The public advisory, to one public list, at the embargo time.
    Release,
    /// The signed, encrypted receipt to the PST member who sent it.
    Receipt,
    /// A member's encrypted notice that the embargo has lifted.
    Lifted,
    /// The PST's encrypted reminder before the embargo lifts.
    Reminder,
    /// Why an authenticated PST mail was refused, encrypted to its signer.
    Refusal,
    /// A member's post (a reply to an announcement), re-encrypted to one recipient.
    Post,
    /// A notice from the list to one roster member (the weekly key check):
    /// encrypted when the member's key is usable, else signed only.
    Notice,
    /// A release hook called at the lift (issue 21): the row's `member` is
    /// the hook's name, `<name>#<n>` for the n-th GitHub advisory the
    /// announcement names (never the advisory itself: it is embargoed).
    Hook,
    /// A release hook called when the embargo is cancelled.
    CancelHook,
}

impl Kind {
    /// Every kind, for the one mapping to and from the spool's text.
    pub(super) const ALL: [Kind; 10] = [
        Kind::Copy,
        Kind::Release,
        Kind::Receipt,
        Kind::Lifted,
        Kind::Reminder,
        Kind::Refusal,
        Kind::Post,
        Kind::Notice,
        Kind::Hook,
        Kind::CancelHook,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Copy => "copy",
            Kind::Release => "release",
            Kind::Receipt => "receipt",
            Kind::Lifted => "lifted",
            Kind::Reminder => "reminder",
            Kind::Refusal => "refusal",
            Kind::Notice => "notice",
            Kind::Post => "post",
            Kind::Hook => "hook",
            Kind::CancelHook => "cancel-hook",
        }
    }

    /// A call to a release hook, not a mail.
    pub fn is_hook(self) -> bool {
        matches!(self, Kind::Hook | Kind::CancelHook)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The spool's text for a kind, back; an unknown one is an error, never
/// taken for a member copy.
impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown delivery kind `{s}` in the spool"))
    }
}

/// A delivery whose time has come.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub message_id: String,
    /// Where it goes: a member's address, or a public list's for a
    /// release (the spool's `member` column).
    pub to: String,
    pub kind: Kind,
    /// The embargo time in force (the spool's, which operators may change).
    pub embargo_until: DateTime<Utc>,
    /// The embargo was cancelled: nothing is published.
    pub embargo_cancelled: bool,
    pub copy_id: String,
    pub attempts: u32,
    /// When an attempt first failed transiently (the retry lifetime runs from then).
    pub first_failed: Option<DateTime<Utc>>,
    /// The secret of its envelope sender (`<list>+bounce-<token>`); none:
    /// it is sent from the list's own address (a release).
    pub bounce_token: Option<String>,
}

/// A change asked for by signed mail: its signatures (against replays) and
/// where the receipt goes.
#[derive(Debug, Clone, Copy)]
pub struct CommandOrigin<'a> {
    pub digests: &'a [String],
    pub reply_to: &'a str,
    /// The command mail's submission digest (see [`NewMessage::submission`]).
    pub submission: Option<&'a str>,
}

/// An embargo as operators see it.
#[derive(Debug, Clone)]
pub struct EmbargoInfo {
    pub id: String,
    pub signer: String,
    pub received_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub cancelled: bool,
    /// Public lists and the state of the release to each.
    pub releases: Vec<(String, String)>,
    /// Release hooks (a cancel hook's name with ` (cancel)`) and the state
    /// of each call.
    pub hooks: Vec<(String, String)>,
    pub copies: DeliveryCounts,
}

impl EmbargoInfo {
    /// `held`, `lifted` or `cancelled` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.cancelled {
            "cancelled"
        } else if self.until > now {
            "held"
        } else {
            "lifted"
        }
    }
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub event: String,
    pub message_id: Option<String>,
    pub member: Option<String>,
    pub detail: String,
}

/// One delivery as the operator's CLI shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub message_id: String,
    pub member: String,
    pub kind: Kind,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// How many of a list's deliveries are of one kind and state
/// ([`Spool::delivery_tally`]).
#[derive(Debug, Clone)]
pub struct DeliveryTally {
    pub kind: Kind,
    pub state: DeliveryState,
    pub count: usize,
    /// The earliest next attempt among them.
    pub first_attempt: DateTime<Utc>,
    /// The earliest embargo time of their messages.
    pub first_embargo: DateTime<Utc>,
}

/// Per-state counts of a message's deliveries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: usize,
    pub sent: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// Where a delivery stands (the spool's `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not sent yet: due, scheduled or retrying.
    Pending,
    Sent,
    /// Not sent, and never will be (nothing to send it to).
    Skipped,
    /// Given up on.
    Failed,
    /// Withdrawn with its embargo, or by the operator.
    Cancelled,
    /// Sent, then refused by the member's server: a delivery status
    /// notification came back for it.
    Bounced,
}

impl DeliveryState {
    const ALL: [DeliveryState; 6] = [
        DeliveryState::Pending,
        DeliveryState::Sent,
        DeliveryState::Skipped,
        DeliveryState::Failed,
        DeliveryState::Cancelled,
        DeliveryState::Bounced,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Failed => "failed",
            DeliveryState::Cancelled => "cancelled",
            DeliveryState::Bounced => "bounced",
        }
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The spool's text for a state, back; an unknown one is an error.
impl std::str::FromStr for DeliveryState {
    type Err = String;

    fn from_str(s: &str) -> Result<DeliveryState, String> {
        DeliveryState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown delivery state `{s}` in the spool"))
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Sent,
    Skipped,
    Failed,
}

impl Finished {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Finished::Sent => "sent",
            Finished::Skipped => "skipped",
            Finished::Failed => "failed",
        }
    }
}

/// How one delivery attempt ended, to be recorded ([`Spool::record`]).
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Sent, skipped or failed, with its detail; a sealed notice (to its
    /// address) queued with it.
    Finished {
        state: Finished,
        detail: String,
        notice: Option<(String, Vec<u8>)>,
    },
    /// Tried again at `next`; `failed`: an attempt failed (which starts
    /// the retry lifetime), not a postponement.
    Later {
        error: String,
        next: DateTime<Utc>,
        failed: bool,
    },
}

impl Outcome {
    /// Whether recording this outcome of `d` sends the PST's receipt again
    /// (due at once): a copy, release, lifted notice or hook call that
    /// failed for good, or a hook's first failed attempt (told at once;
    /// it is retried meanwhile).
    pub fn redoes_receipt(&self, d: &DueDelivery) -> bool {
        match self {
            Outcome::Finished { state, .. } => redoes_receipt(d, Some(*state), false),
            Outcome::Later { failed, .. } => redoes_receipt(d, None, *failed),
        }
    }
}

/// [`Outcome::redoes_receipt`] for a delivery that ended as `finished`, or
/// (none) was put off, `failed` telling an attempt that failed from a
/// postponement: the one rule, for the spool's writes and the worker's wake.
pub(crate) fn redoes_receipt(d: &DueDelivery, finished: Option<Finished>, failed: bool) -> bool {
    match finished {
        Some(Finished::Failed) => matches!(
            d.kind,
            Kind::Copy | Kind::Release | Kind::Lifted | Kind::Hook | Kind::CancelHook
        ),
        Some(_) => false,
        None => failed && d.kind.is_hook() && d.first_failed.is_none(),
    }
}

/// What [`Spool::record`] did: each outcome's result, in order, and the
/// announcements whose receipt is owed but could not be queued yet
/// (announcement id, PST address).
#[derive(Debug, Default)]
pub struct Recorded {
    pub results: Vec<Result<(), crate::spool::SpoolError>>,
    pub receipts_owed: Vec<(String, String)>,
}

/// One outcome to record: the delivery, how it ended, when, and for a
/// member copy the PST's address (its receipt is queued once every copy
/// was tried).
#[derive(Debug, Clone)]
pub struct Recording {
    pub delivery: DueDelivery,
    pub outcome: Outcome,
    pub at: DateTime<Utc>,
    pub receipt_to: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_and_an_unknown_one_is_refused() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        assert!("copy ".parse::<Kind>().is_err());
        assert!("bounce".parse::<Kind>().is_err());
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>(), Ok(state));
        }
        assert!("Pending".parse::<DeliveryState>().is_err());
        assert_eq!(format!("{:<9}|", Kind::Copy), "copy     |");
        assert_eq!(format!("{:<9}|", DeliveryState::Sent), "sent     |");
    }
}
