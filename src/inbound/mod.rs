//! Ways mail arrives. Each one commits a message durably before it says yes.

pub mod pipe;
pub mod smtp;
