//! A guest's bytes made safe to show on a terminal: `vm logs` prints what
//! a guest wrote to its console, and raw escape sequences from a hostile
//! guest could retitle the window, rewrite what was shown, or answer a
//! terminal query as if typed. Control characters are shown in caret
//! notation (`^[` for ESC), other C1 controls and bytes that are not
//! UTF-8 as `\xNN`; text, tabs and line ends pass (a CR before a LF is
//! dropped, so CRLF lines read as lines). Chunks may split a character or
//! a CRLF: the tail is kept for the next one.

/// Turns a stream of guest bytes into visible text, chunk by chunk.
#[derive(Debug, Default)]
pub struct Visible {
    /// An incomplete UTF-8 sequence, or a CR, from the previous chunk.
    carry: Vec<u8>,
}

impl Visible {
    /// The visible text of `chunk` (with what was carried before it).
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.text(text, &mut out);
                    rest = &[];
                }
                Err(err) => {
                    let (good, bad) = rest.split_at(err.valid_up_to());
                    self.text(std::str::from_utf8(good).unwrap_or_default(), &mut out);
                    match err.error_len() {
                        Some(n) => {
                            for byte in &bad[..n] {
                                out.push_str(&format!("\\x{byte:02x}"));
                            }
                            rest = &bad[n..];
                        }
                        None => {
                            // Cut inside a character: the rest comes next.
                            self.carry.extend_from_slice(bad);
                            rest = &[];
                        }
                    }
                }
            }
        }
        // A CR at the very end may be half of a CRLF.
        if self.carry.is_empty() && out.ends_with("^M") && bytes.last() == Some(&b'\r') {
            out.truncate(out.len() - 2);
            self.carry.push(b'\r');
        }
        out
    }

    /// What is still carried, shown (at the end of the stream).
    pub fn finish(&mut self) -> String {
        let carried = std::mem::take(&mut self.carry);
        carried
            .iter()
            .map(|b| match b {
                b'\r' => "^M".to_string(),
                b => format!("\\x{b:02x}"),
            })
            .collect()
    }

    fn text(&self, text: &str, out: &mut String) {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' | '\t' => out.push(c),
                '\r' if chars.peek() == Some(&'\n') => {}
                '\u{7f}' => out.push_str("^?"),
                c if (c as u32) < 0x20 => {
                    out.push('^');
                    out.push(char::from(b'@' + c as u8));
                }
                c if ('\u{80}'..='\u{9f}').contains(&c) => {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32));
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(chunks: &[&[u8]]) -> String {
        let mut visible = Visible::default();
        let mut out: String = chunks.iter().map(|c| visible.push(c)).collect();
        out.push_str(&visible.finish());
        out
    }

    #[test]
    fn escapes_are_shown_not_obeyed() {
        // A window title, a screen clear, a terminal query, a bell.
        let hostile = b"\x1b]0;pwned\x07\x1b[2J\x1b[6n ok\r\n";
        assert_eq!(shown(&[hostile]), "^[]0;pwned^G^[[2J^[[6n ok\n");
        // C1 CSI as UTF-8, and a byte that is not UTF-8.
        assert_eq!(
            shown(&["a\u{9b}2Jb".as_bytes(), b"\xff"]),
            "a\\u{9b}2Jb\\xff"
        );
        assert_eq!(shown(&[b"del\x7f"]), "del^?");
    }

    #[test]
    fn text_and_line_ends_pass_even_when_split() {
        assert_eq!(
            shown(&["héllo\tthere\r\nnext\n".as_bytes()]),
            "héllo\tthere\nnext\n"
        );
        let e = "é".as_bytes();
        assert_eq!(shown(&[b"a", &e[..1], &e[1..], b"b"]), "aéb");
        assert_eq!(shown(&[b"line\r", b"\nnext\r"]), "line\nnext^M");
        assert_eq!(shown(&[b"cut ", &e[..1]]), "cut \\xc3");
    }
}
