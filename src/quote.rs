//! Text quoted from a mail inside an error message: withheld wherever the
//! error is shown in the clear (SMTP replies, `submit`'s stderr and so an
//! MTA's bounce, logs, the audit trail) and shown only where it is
//! rendered inside [`revealed`], which the signed, encrypted refusal to the
//! PST does. Safe by default: an error formatted anywhere else, or formatted
//! early into a `String`, names the field and the line but not the text.

use std::cell::Cell;

thread_local! {
    static REVEAL: Cell<bool> = const { Cell::new(false) };
}

/// At most 64 characters of a mail's text, without control characters,
/// for an error message. `Display` writes nothing, or `` `text` `` (with a
/// leading space) inside [`revealed`]: put it right after the noun it
/// names ("the address{quoted} is not …").
#[derive(Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    pub fn new(text: &str) -> Quoted {
        Quoted(text.chars().filter(|c| !c.is_control()).take(64).collect())
    }

    /// For the end of a message: nothing, or `` (you wrote `text`)``
    /// inside [`revealed`].
    pub fn wrote(&self) -> YouWrote<'_> {
        YouWrote(self)
    }
}

/// See [`Quoted::wrote`].
pub struct YouWrote<'a>(&'a Quoted);

impl std::fmt::Display for YouWrote<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if REVEAL.with(Cell::get) {
            write!(f, " (you wrote `{}`)", self.0.0)
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Display for Quoted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing quoted (an optional detail left out): nothing shown.
        if REVEAL.with(Cell::get) && !self.0.is_empty() {
            write!(f, " `{}`", self.0)
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Quoted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Quoted(withheld)")
    }
}

/// Runs `f` with quoted text shown: for the encrypted refusal only.
pub(crate) fn revealed<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REVEAL.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REVEAL.with(|r| r.replace(true)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_shows_only_when_revealed() {
        let q = Quoted::new("CANARY\u{7}-x");
        assert_eq!(format!("the value{q} is bad"), "the value is bad");
        assert_eq!(format!("{q:?}"), "Quoted(withheld)");
        assert_eq!(
            revealed(|| format!("the value{q} is bad")),
            "the value `CANARY-x` is bad"
        );
        assert_eq!(format!("{q}"), "", "withheld again afterwards");
        assert_eq!(format!("bad.{}", q.wrote()), "bad.");
        assert_eq!(
            revealed(|| format!("bad.{}", q.wrote())),
            "bad. (you wrote `CANARY-x`)"
        );
        assert_eq!(Quoted::new(&"x".repeat(100)).0.len(), 64);
        assert_eq!(revealed(|| format!("x{}", Quoted::new(""))), "x");
    }
}
