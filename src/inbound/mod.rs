//! Ways mail arrives. Each one commits a message durably before it says yes.

pub(crate) mod imap;
pub mod pipe;
pub mod smtp;

pub use crate::mail::{is_trusted, peer_key, peer_key_label};
