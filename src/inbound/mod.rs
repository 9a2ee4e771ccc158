//! Ways mail arrives. Each one commits a message durably before it says yes.

pub mod imap;
pub mod pipe;
pub mod smtp;
