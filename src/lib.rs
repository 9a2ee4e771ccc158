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
//! Modules, in layers: each uses only those above it in this list
//! (`scripts/check-layers` fails on an import cycle). `pub` where the
//! binary, the tests, the benchmarks or the fuzz targets reach in;
//! `pub(crate)` otherwise.
//!
//! 1. Leaves, importing nothing of the crate: [`clock`] (the only source of
//!    the current time), `secret` (bytes that never print), [`failpoint`]
//!    (named crash points for the crash tests), `quote` (mail text
//!    withheld from every cleartext output), `address` (the rules of a
//!    member entry), `armor` (the member copies' armor, with its CRC-24
//!    line), `membership` (the membership criteria and the join-request
//!    checklist), `mail` (the contract between `inbound` and `intake`:
//!    `Reply`, `Envelope`, `MailHandler`, peer keys), `lines` (line ends
//!    counted at memory speed).
//! 2. Data and its rules: [`crypto`] (every OpenPGP operation: `verify`,
//!    `census` (with the signature precheck), `seipd` (SEIPDv1 with AES,
//!    for the census), `cleartext` (a cleartext-signed text read in one
//!    pass, for the census), `problem` (the verdicts),
//!    `seal`, and `client` helpers for the demo and tests),
//!    `roster` (members, PST keys, the roster file), [`config`] (TOML →
//!    validated [`config::Config`], one per list: `raw`, `lists`, `validate`, `units`), [`embargo`] (the announcement's field
//!    block and the PST's commands), `record` (what the spool keeps of
//!    each message, sealed), [`entity`] (the MIME entities the relay writes).
//! 3. [`spool`]: durable state (SQLite): `schema`, `types`, `incoming`,
//!    `deliveries`, `lists`, `embargoes`, `audit`, `reports`.
//! 4. [`context`]: one list's shared context, [`context::Relay`] (a daemon
//!    has one per list, on one spool): config and roster snapshots, spool,
//!    clock, seal cache, health.
//! 5. The work, each on the context: [`inbound`] (`smtp` listener: `admission`,
//!    `command`, `wire`, `session`; `imap` poller, `pipe` for `submit`), [`intake`] (`examine` decides, `mime`
//!    and `verify` read, `rejection` says why not, `commands`, `posts`,
//!    `tally`, `roster_edit`, `bounces` with `dsn`; the handler in `mod.rs`, `router` for several lists), `fanout` (the scheduler, `deliver`, `build`),
//!    `outbound` (RFC 3156 copies, SMTP to the smarthost), `keycheck`
//!    (the weekly key check), `upkeep` (the roster-file watcher, tally
//!    flush and spool pruning, the leap base kept, skipped members named).
//! 6. Wiring and front ends: [`daemon`] (starts the tasks under one shutdown
//!    token), `service` (systemd notify and watchdog), [`operator`] (`embargo`,
//!    `roster`, `audit`, `status`) and [`check`] (the CLI's commands), [`cli`] (clap definitions), [`demo`],
//!    and for the demo and tests [`compose`] (mail as a PST client makes it)
//!    and [`sink`] (a loopback SMTP capture sink).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub(crate) mod address;
pub(crate) mod armor;
pub mod check;
pub mod cli;
pub mod clock;
pub mod compose;
pub mod config;
pub mod context;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod discovery;
pub mod embargo;
pub mod entity;
pub mod failpoint;
pub(crate) mod fanout;
pub mod inbound;
pub mod intake;
pub(crate) mod keycheck;
pub(crate) mod keyrefresh;
pub(crate) mod lines;
pub(crate) mod mail;
pub mod manual;
pub(crate) mod membership;
pub mod operator;
pub(crate) mod outbound;
pub(crate) mod quote;
pub(crate) mod record;
pub(crate) mod roster;
pub(crate) mod secret;
pub(crate) mod service;
pub mod sink;
pub mod spool;
pub(crate) mod upkeep;
pub(crate) mod web;
