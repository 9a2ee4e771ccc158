//! A wrapper for plaintext and other secrets: its `Debug` never shows the bytes.

use std::fmt;

/// Bytes that must never reach a log line, an error or a panic message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {} bytes]", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = Secret::new(b"CANARY-top-secret".to_vec());
        let shown = format!("{s:?}");
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(shown.contains("17 bytes"));
    }
}
