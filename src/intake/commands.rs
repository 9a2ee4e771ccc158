//! PST command mails (embargo and roster commands), refusals of
//! authenticated PST mail, replays, and the signed, encrypted notices that
//! answer them.

use chrono::{DateTime, Utc};

use crate::crypto::random_hex;
use crate::embargo::PstCommand;
use crate::mail::{Envelope, Reply};
use crate::quote::Quoted;
use crate::record::Record;
use crate::secret::Secret;
use crate::spool::{CommandOrigin, SpoolError};

use super::examine::Sender;
use super::rejection::Rejection;
use super::roster_edit::{add_member, candidate, remove_member};
use super::{Intake, try_later};

impl Intake {
    /// Applies `Roster-Add` / `Roster-Remove`: the roster file is rewritten
    /// atomically, the new roster takes effect at once, and the PST gets a
    /// signed, encrypted receipt (which also records the command's
    /// signatures, so a replay is refused).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn roster_command(
        &self,
        envelope: &Envelope,
        command: &PstCommand,
        keys: Option<&[u8]>,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: &str,
    ) -> Reply {
        let relay = &self.relay;
        let refuse = |problem: String, detail: String| {
            self.refuse_command(
                envelope,
                (problem, &detail),
                command.id(),
                sender,
                now,
                submission,
            )
        };
        let Some(path) = &self.config().roster_file else {
            return refuse(
                "roster changes by mail need `list.roster_file` in the configuration".into(),
                String::new(),
            );
        };
        match relay.spool.replay_of(&sender.digests) {
            Ok(Some(previous)) => return self.replayed(envelope, &previous, sender, now),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "spool unreadable; answering 451");
                return try_later();
            }
        }
        let directory = self.directory();
        let p = crate::crypto::policy();
        let changed = match command {
            PstCommand::RosterAdd {
                email,
                organization,
                fingerprint,
            } => add_member(
                path,
                &directory.roster,
                || {
                    let held = relay.spool.held_key(email).ok().flatten();
                    let discovery = self.config().discovery.clone();
                    candidate(keys, held, discovery.as_ref(), email, fingerprint, &p, now)
                },
                email,
                organization,
                fingerprint,
                &p,
                now,
            )
            .map(|(text, origin)| (text, Some(origin))),
            PstCommand::RosterRemove { email } => {
                remove_member(path, &directory.roster, email).map(|text| (text, None))
            }
            _ => Err(("not a roster command".to_owned(), String::new())),
        };
        let (text, origin) = match changed {
            Ok(done) => done,
            Err((why, detail)) => return refuse(why, detail),
        };
        // Where the key came from (a held key is taken or moot); a removed
        // member's record forgotten.
        let recorded = match (origin, command) {
            (Some(from), PstCommand::RosterAdd { email, .. }) => {
                relay.spool.set_key_origin(email, from)
            }
            (_, PstCommand::RosterRemove { email }) => relay.spool.forget_member_key(email),
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            tracing::error!(error = %e, "could not record where a member's key came from");
        }
        // The roster in force now, not the one pinned for this mail: a
        // SIGHUP since then is kept.
        let members_now = match crate::roster::file::load(path) {
            Ok(members) => relay
                .update_roster(|current| current.with_file_members(members))
                .roster
                .members()
                .len(),
            Err(e) => {
                tracing::error!(error = %e, "roster file unreadable after a change; restart to load it");
                relay.directory().roster.members().len()
            }
        };
        let event = match command {
            PstCommand::RosterAdd { .. } => "roster-add",
            _ => "roster-remove",
        };
        let detail = format!("by PST {}: {text}", sender.signer);
        if let Err(e) = relay
            .spool
            .audit(now, event, None, Some(command.id()), &detail)
        {
            tracing::error!(error = %e, "could not audit a roster change");
        }
        tracing::info!(member = %command.id(), %event, "roster changed by PST command");
        let receipt = format!("{text}\n\nMembers now: {}.\n", members_now);
        let subject = format!("Roster changed: {}", command.id());
        let done = Reply::new(
            250,
            "2.0.0",
            // The member's address is in the PST's encrypted receipt, not
            // in this clear reply.
            format!("roster updated ({event}); a receipt follows"),
        );
        // The same submission again gets this same answer. A receipt that
        // cannot be queued is a 451: the sender tries again, and the PST
        // is never left without a word.
        let line = done.line();
        let queued = self.notify_pst(
            &random_hex(8),
            sender,
            &subject,
            &receipt,
            &sender.digests,
            Some((submission, line.as_str())),
            now,
        );
        self.answer(
            envelope,
            queued,
            now,
            || done,
            |previous| self.replayed(envelope, &previous, sender, now),
        )
    }

    /// Applies a PST command; its receipt is queued in the same transaction.
    pub(super) fn command(
        &self,
        envelope: &Envelope,
        command: &PstCommand,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: &str,
    ) -> Reply {
        let spool = &self.relay.spool;
        let signer = &sender.signer;
        let origin = CommandOrigin {
            digests: &sender.digests,
            reply_to: &sender.from,
            submission: Some(submission),
        };
        let actor = format!("PST {signer}");
        let max = self.config().policy.max_embargo;
        let result = match command {
            PstCommand::Extend { to, .. } if *to - now > max => Err(SpoolError::RefusedAt {
                reason: format!(
                    "the new time is more than the maximum of {} days ahead (policy.max_embargo)",
                    max.num_days()
                ),
                times: format!("asked for {}", to.to_rfc3339()),
            }),
            PstCommand::Extend { id, to } => spool.extend(id, *to, now, &actor, Some(&origin)),
            PstCommand::Cancel { id } => spool.cancel(
                id,
                now,
                &actor,
                Some(&origin),
                &self.config().cancel_hook_rows(),
            ),
            PstCommand::ReleaseNow { id } => spool.release_now(id, now, &actor, Some(&origin)),
            // Routed to `roster_command` before this.
            PstCommand::RosterAdd { .. } | PstCommand::RosterRemove { .. } => {
                Err(SpoolError::Refused("not an embargo command".to_owned()))
            }
        };
        let id = command.id();
        let result = match result {
            Err(SpoolError::Refused(problem)) => {
                return self.refuse_command(envelope, (problem, ""), id, sender, now, submission);
            }
            Err(SpoolError::RefusedAt { reason, times }) => {
                return self.refuse_command(
                    envelope,
                    (reason, &times),
                    id,
                    sender,
                    now,
                    submission,
                );
            }
            other => other,
        };
        self.answer(
            envelope,
            result,
            now,
            || {
                tracing::info!(embargo = %id, %signer, command = command.name(), "PST command applied");
                Reply::new(
                    250,
                    "2.0.0",
                    format!("command applied to embargo {id}; a receipt follows"),
                )
            },
            |previous| self.replayed(envelope, &previous, sender, now),
        )
    }

    /// Refuses an authenticated PST mail: the SMTP reply, the audit record,
    /// and the reason sent to the sender signed and encrypted. A replay of
    /// a refused mail is refused as a replay.
    pub(super) fn refuse(
        &self,
        envelope: &Envelope,
        rejection: &Rejection,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: Option<&str>,
    ) -> Reply {
        // The one place the quoted text is shown: signed and encrypted to the PST.
        let text = crate::quote::revealed(|| {
            format!(
                "The list refused your mail.\n\nReason: {rejection}\n\nNothing was relayed. Fix the mail and send it again; \
a resent copy of this one counts as a replay.\n"
            )
        });
        let subject = format!("Refused: {}", sender.subject);
        // The same submission again gets this same refusal (and no new
        // notice); see `process_fetched`.
        let line = rejection.reply().line();
        let queued = self.notify_pst(
            &random_hex(8),
            sender,
            &subject,
            &text,
            &sender.digests,
            submission.map(|digest| (digest, line.as_str())),
            now,
        );
        self.answer(
            envelope,
            queued,
            now,
            || self.reject(envelope, rejection, now),
            |previous| self.replayed(envelope, &previous, sender, now),
        )
    }

    /// Refuses a PST command that cannot be applied; `on` (the embargo id
    /// or member address it named) is quoted in the encrypted refusal only.
    pub(super) fn refuse_command(
        &self,
        envelope: &Envelope,
        (problem, times): (String, &str),
        on: &str,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: &str,
    ) -> Reply {
        let on = Quoted::new(on);
        let times = Quoted::new(times);
        self.refuse(
            envelope,
            &Rejection::Command { problem, times, on },
            sender,
            now,
            Some(submission),
        )
    }

    /// Rejects a replay of `previous` and tells the PST, once per replayed
    /// message (further replays of it are only audited): a replay the PST
    /// did not send means someone holds a copy of its mail.
    pub(super) fn replayed(
        &self,
        envelope: &Envelope,
        previous: &str,
        sender: &Sender,
        now: DateTime<Utc>,
    ) -> Reply {
        let text = format!(
            "A mail carrying the signature of your message {previous} reached the list again, \
from {} (envelope sender <{}>), and was rejected as a replay. Nothing was relayed.\n\n\
If you did not resend it, someone holds a copy of your signed mail. Further replays of \
this message are rejected without another notice; `embargo-relay audit` on the list \
host lists them.\n",
            envelope.peer, envelope.mail_from
        );
        let subject = format!("Replay rejected: {}", sender.subject);
        let _ = self.notify_pst(
            &format!("{previous}-replay"),
            sender,
            &subject,
            &text,
            &[],
            None,
            now,
        );
        self.reject(envelope, &Rejection::Replay(previous.to_owned()), now)
    }

    /// Queues a signed, encrypted notice to the PST who sent a mail. A
    /// notice whose id is already queued is not queued again. A spool
    /// error is the caller's to answer (`Intake::answer`: 451 for the
    /// sender to try again), never dropped.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn notify_pst(
        &self,
        id: &str,
        sender: &Sender,
        subject: &str,
        text: &str,
        digests: &[String],
        submission: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        let relay = &self.relay;
        let notice = Record::unembargoed(
            sender.signer.clone(),
            sender.from.clone(),
            subject.to_owned(),
            Secret::new(text.as_bytes().to_vec()),
            now,
        );
        let Some(sealed) = self.seal(&notice) else {
            return Ok(());
        };
        relay.spool.queue_notice_to_pst(
            id,
            &sender.signer,
            &sender.from,
            &sealed,
            digests,
            submission,
            now,
        )?;
        relay.wake.notify_one();
        Ok(())
    }
}
