//! Command-line definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// embargo-relay: an embargoed security-disclosure mailing list.
///
/// Accepts announcements signed by the Product Security Team (PGP/MIME) and
/// sends every member its own copy, signed by the list key and encrypted to
/// that member's key alone.
#[derive(Debug, Parser)]
#[command(name = "embargo-relay", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: listen for SMTP, verify, relay encrypted copies.
    ///
    /// Example: embargo-relay run --config /etc/embargo-relay/config.toml
    Run {
        /// The configuration file (see config/embargo-relay.example.toml).
        #[arg(long, short, default_value = "/etc/embargo-relay/config.toml")]
        config: PathBuf,
        /// Set the spool aside (renamed, never deleted) and start with a new
        /// one. Only after damage no backup can mend: held releases, the
        /// audit trail and replay protection start over.
        #[arg(long)]
        new_spool: bool,
    },
    /// Take one message on standard input, as an MTA's pipe transport delivers it.
    ///
    /// The message is verified and committed like one received over SMTP.
    /// Exit codes (sysexits): 0 accepted; 75 temporary failure, the MTA
    /// should retry (spool or configuration unavailable); 65 malformed or
    /// invalid mail; 77 not authorized (signature, From, replay); 67 the
    /// recipient is no list's address or request address. The
    /// reason is printed on standard error. The running daemon relays it
    /// within a second. See deploy/postfix/ for the Postfix wiring.
    ///
    /// Example (Postfix master.cf):
    ///   argv=/usr/bin/embargo-relay submit --config /etc/embargo-relay/config.toml
    ///        --sender=${sender} --recipient=${recipient}
    #[command(verbatim_doc_comment)]
    Submit {
        /// The configuration file of the list.
        #[arg(long, short, default_value = "/etc/embargo-relay/config.toml")]
        config: PathBuf,
        /// The envelope sender the MTA passes, recorded in the audit log.
        #[arg(long)]
        sender: Option<String>,
        /// The recipient the MTA delivers to: a list's address or its
        /// request address (a join request); it chooses the list. Needed
        /// when the file serves several lists; default: the only list.
        #[arg(long)]
        recipient: Option<String>,
        /// The address the MTA received the mail from (Postfix
        /// `${client_address}`): rejections are counted and join requests
        /// limited per client. Empty or absent: local submission.
        #[arg(long)]
        client: Option<String>,
    },
    /// Inspect and change embargoes; works while the daemon runs (it notices within a second).
    ///
    /// With several lists in the file, name one with --list.
    ///
    /// Examples:
    ///   embargo-relay embargo list
    ///   embargo-relay embargo --list vendors@example.org list
    ///   embargo-relay embargo extend 5c74c187e80a969c 2026-12-10T16:00:00Z
    ///   embargo-relay embargo release-now 5c74c187e80a969c
    #[command(verbatim_doc_comment)]
    Embargo {
        /// The configuration file of the list.
        #[arg(long, short, default_value = "/etc/embargo-relay/config.toml")]
        config: PathBuf,
        /// The list, by its address, when the file serves several ([[list]] tables).
        #[arg(long, value_name = "ADDRESS")]
        list: Option<String>,
        #[command(subcommand)]
        action: EmbargoAction,
    },
    /// Load everything the daemon would and report each problem with the file, field and fix.
    ///
    /// Checks the configuration (unknown keys, bad values), the list key, and
    /// every member certificate: unreadable, expired, revoked, no encryption
    /// subkey, expiring within 30 days, SHA-1 self-signatures, RSA under 2048
    /// bits, DSA/ElGamal, a PST certificate that cannot sign, one certificate
    /// shared by two members. Exit status 0 only when clean, 1 otherwise.
    ///
    /// Reads both forms of the file, one list (`[list]`) or several
    /// (`[[list]]` tables over shared `[defaults]`, `[policy]`, `[public]`,
    /// `[[member]]`), checks every list, and says which form it read.
    ///
    /// Example: embargo-relay check --config /etc/embargo-relay/config.toml --format json
    Check {
        /// The configuration file of the list.
        #[arg(long, short, default_value = "/etc/embargo-relay/config.toml")]
        config: PathBuf,
        /// `text` for people, `json` for monitoring.
        #[arg(long, value_enum, default_value = "text")]
        format: crate::check::Format,
    },
    /// The delivery queue, held embargoes, recent rejections and keys needing attention.
    ///
    /// Reads the running daemon's state directory; changes nothing. Every
    /// list of the file, each under its address, unless --list names one.
    Status {
        /// The configuration file of the list.
        #[arg(long, short, default_value = "/etc/embargo-relay/config.toml")]
        config: PathBuf,
        /// Only this list (by its address); without it, every list of the file.
        #[arg(long, value_name = "ADDRESS")]
        list: Option<String>,
    },
    /// List and change the roster (members added here live in list.roster_file).
    ///
    /// A running daemon picks up a change within two seconds.
    ///
    /// Examples:
    ///   embargo-relay roster list
    ///   embargo-relay roster add secalert@distro.example --organization "Distro" --key distro.asc
    ///   embargo-relay roster import-markdown private-distributors-list.md
    Roster {
        /// The configuration file of the list.
        #[arg(long, short, default_value = "/etc/embargo-relay/config.toml")]
        config: PathBuf,
        /// The list, by its address, when the file serves several ([[list]] tables).
        #[arg(long, value_name = "ADDRESS")]
        list: Option<String>,
        #[command(subcommand)]
        action: RosterAction,
    },
    /// Who was sent what and when, delivered or not (for a post-leak retrospective).
    ///
    /// Without options: every delivery and the whole audit trail.
    ///
    /// Examples:
    ///   embargo-relay audit --embargo 5c74c187e80a969c
    ///   embargo-relay audit --member secalert@distro.example
    Audit {
        /// The configuration file of the list.
        #[arg(long, short, default_value = "/etc/embargo-relay/config.toml")]
        config: PathBuf,
        /// The list, by its address, when the file serves several ([[list]] tables).
        #[arg(long, value_name = "ADDRESS")]
        list: Option<String>,
        /// Only this embargo (announcement) id.
        #[arg(long)]
        embargo: Option<String>,
        /// Only deliveries to and records about this address.
        #[arg(long)]
        member: Option<String>,
    },
    /// Run a whole list on loopback with generated keys and show what members get.
    ///
    /// Generates a list key, a PST key and member keys in a temporary
    /// directory, starts the daemon with a loopback capture sink as its
    /// smarthost, sends a signed announcement over SMTP, and decrypts and
    /// verifies every member's copy. Exits 0 only if every copy checks out.
    Demo {
        /// Keep the demo's keys (secret ones mode 0600), config, spool and the
        /// members' copies in this directory instead of a temporary one. Run
        /// again with the same directory to send another announcement to the
        /// kept list; it prints how to read a copy with gpg.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Write the manual pages and shell completions, generated from these
    /// definitions, under a directory (for scripts/package; not for users).
    #[command(hide = true)]
    GenerateDocs {
        /// Where `man8/` and `completions/` go.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum EmbargoAction {
    /// Every embargo with its time, time left and state.
    List,
    /// One embargo: times, public releases, member copies and its audit trail.
    Show { id: String },
    /// Move a held embargo to a later time (RFC 3339 with offset, e.g. 2026-12-10T16:00:00Z).
    Extend { id: String, time: String },
    /// Cancel a held embargo: the public advisory is discarded and members are told.
    Cancel { id: String },
    /// Lift a held embargo now, e.g. after a leak ("when in doubt, go public").
    ReleaseNow { id: String },
}

#[derive(Debug, Subcommand)]
pub enum RosterAction {
    /// Every member: address, organization, where it is configured, PST, key state.
    List,
    /// Add a member (or replace its organization and certificate) in the roster file.
    ///
    /// The certificate comes from a file (--key) or is looked up (--discover):
    /// by Web Key Directory (advanced, then direct method), then the
    /// keyserver of [discovery]. A discovered certificate must carry the
    /// address as a user ID; from an HKP keyserver (which checks no
    /// address) only with --fingerprint.
    ///
    /// Examples:
    ///   embargo-relay roster add secalert@distro.example --organization "Distro" --key distro.asc
    ///   embargo-relay roster add secalert@distro.example --organization "Distro" --discover
    ///   embargo-relay roster add secalert@distro.example --organization "Distro" --discover \
    ///       --fingerprint 0123456789ABCDEF0123456789ABCDEF01234567
    #[command(verbatim_doc_comment)]
    Add {
        email: String,
        /// The member's organization, as the PST knows it.
        #[arg(long)]
        organization: String,
        /// The member's armored public certificate; it must be able to receive encrypted mail.
        #[arg(
            long,
            required_unless_present = "discover",
            conflicts_with = "discover"
        )]
        key: Option<PathBuf>,
        /// Look the certificate up by WKD and the keyserver ([discovery] in the configuration).
        #[arg(long)]
        discover: bool,
        /// Take only the certificate with this fingerprint (hex, 40 or 64 digits).
        #[arg(long, value_name = "HEX")]
        fingerprint: Option<String>,
    },
    /// Fetch every member's certificate again from where it is published.
    ///
    /// Updates of the same certificate (a new expiry, new subkeys, a
    /// revocation) are merged and used at once (kept under the state
    /// directory, key-updates/; a running daemon takes them within two
    /// seconds). Another certificate found for an address is held, never
    /// used: the PST takes it with a signed Roster-Add. The daemon does
    /// this weekly by itself; this runs it now and prints the report.
    Refresh,
    /// Remove a member from the roster file.
    Remove { email: String },
    /// Import a Markdown membership table (| Email | Organization |), as in the policy document.
    ///
    /// Members not yet on the roster are added without a certificate (they
    /// receive nothing until one is added); the report lists who lacks one.
    ImportMarkdown { file: PathBuf },
}
