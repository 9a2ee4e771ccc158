//! embargo-relay: an embargoed security-disclosure mailing list.
//!
//! Data flows one way:
//!
//! ```text
//! inbound::smtp ─┐
//! inbound::imap ─┼─► intake ──────────────► spool (SQLite: sealed announcement,
//! inbound::pipe ─┘   (mime → verify:         one delivery row per member, audit)
//!                     PST signature check)
//!                                                     │
//!                                   fanout ◄──────────┘  one copy per member:
//!                                     │                  signed by the list key,
//!                                     ▼                  encrypted to that member alone
//!                                 outbound (PGP/MIME assembly, SMTP to the smarthost)
//! ```
//!
//! Modules:
//! - [`cli`]: command-line definitions; [`demo`]: the self-contained demo;
//!   [`operator`]: the `embargo` commands an operator runs beside the daemon.
//! - [`config`]: TOML → validated [`config::Config`]; [`roster`]: members and PST keys;
//!   [`address`]: the rules of a member entry (address, organization), written once.
//! - [`clock`]: the only source of the current time.
//! - [`inbound::smtp`]: RFC 5321 listener, generic over the stream and the handler.
//! - [`inbound::imap`]: mailbox poller (IDLE where offered); [`inbound::pipe`]: `submit`.
//! - [`failpoint`]: named crash points for the crash tests.
//! - [`membership`]: the membership criteria and the join-request checklist.
//! - [`intake`]: parses (bounded) and verifies an incoming mail; decides accept/reject.
//! - [`crypto`]: every OpenPGP operation (verify, seal to the spool, seal per member);
//!   [`armor`]: the member copies' ASCII armor, with its CRC-24 line.
//! - [`record`]: what the spool keeps of each message, sealed (announcement, post,
//!   refusal, notice) and its framing.
//! - [`spool`]: durable state; [`fanout`]: turns spooled announcements into deliveries.
//! - [`outbound`]: RFC 3156 member copies and the SMTP transport to the smarthost.
//! - [`compose`]: builds PGP/MIME signed mail as a PST client would (demo and tests).
//! - [`sink`]: a loopback SMTP capture sink (demo and tests).
//! - [`context`]: one list's shared context ([`context::Relay`]): config and roster
//!   snapshots, spool, clock, seal cache, health; below everything that uses it.
//! - [`daemon`]: wires the tasks together with one shutdown token.
#![forbid(unsafe_code)]

pub mod address;
pub mod armor;
pub mod check;
pub mod cli;
pub mod clock;
pub mod compose;
pub mod config;
pub mod context;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod embargo;
pub mod entity;
pub mod failpoint;
pub mod fanout;
pub mod inbound;
pub mod intake;
pub mod keycheck;
pub mod membership;
pub mod operator;
pub mod outbound;
pub mod quote;
pub mod record;
pub mod roster;
pub mod secret;
pub mod service;
pub mod sink;
pub mod spool;
