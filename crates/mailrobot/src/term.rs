//! Human-readable CLI output carries text from strangers (subjects, senders,
//! file names) and from servers (error messages). A terminal obeys control
//! sequences in it — retitle the window, clear the screen, rewrite a line,
//! even paste into the shell on some terminals — so every human line goes
//! through [`clean`], which shows control characters as visible escapes.
//! `--json` output is printed exact (JSON escapes them anyway).

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character except newline and tab (C0, DEL, C1)
/// and the bidirectional overrides that reorder what a reader sees shown as
/// `\x1b`-style escapes.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            let code = c as u32;
            if code <= 0xff {
                let _ = write!(out, "\\x{code:02x}");
            } else {
                let _ = write!(out, "\\u{{{code:04x}}}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn is_unsafe(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        c if c.is_control() => true,
        // Bidi embeddings, overrides and isolates (the "Trojan Source" set).
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `println!` for human output: the formatted line is cleaned first.
#[macro_export]
macro_rules! say {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", $crate::term::clean(&format!($($arg)*))) };
}

/// `eprintln!` for human output: the formatted line is cleaned first.
#[macro_export]
macro_rules! esay {
    ($($arg:tt)*) => { eprintln!("{}", $crate::term::clean(&format!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_keeps_text() {
        assert_eq!(clean("Re: Hallo Jürgen 📎\n\tnext"), "Re: Hallo Jürgen 📎\n\tnext");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(clean("\x1b]0;pwned\x07title\x1b[2J"), "\\x1b]0;pwned\\x07title\\x1b[2J");
        assert_eq!(clean("over\rwrite\u{7f}"), "over\\x0dwrite\\x7f");
        assert_eq!(clean("\u{9b}31m"), "\\x9b31m", "C1 CSI");
        assert_eq!(clean("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
    }
}
