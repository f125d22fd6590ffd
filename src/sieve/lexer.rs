//! Sieve's lexical tokens (RFC 5228 section 8.1): identifiers, tags, numbers with K/M/G, quoted and
//! multi-line strings, brackets and separators; comments skipped. Every token keeps where it started, so
//! every later error can name a line and a column.

use super::CompileError;

/// Where a token starts: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A command or test name, as written (compared case-insensitively).
    Identifier(String),
    /// `:is`, without the colon, lower-cased.
    Tag(String),
    Number(u64),
    /// A quoted or multi-line string, escapes and dot-stuffing undone.
    String(String),
    LBracket,
    RBracket,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Semicolon,
}

/// Splits a script into tokens. Scripts are UTF-8 (RFC 5228 section 2.2).
pub fn tokens(source: &str) -> Result<Vec<(Token, Pos)>, CompileError> {
    let mut lx = Lexer {
        chars: source.chars().collect(),
        at: 0,
        line: 1,
        column: 1,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_blank()?;
        let pos = lx.pos();
        let Some(c) = lx.peek() else { break };
        let token = match c {
            '[' => lx.single(Token::LBracket),
            ']' => lx.single(Token::RBracket),
            '(' => lx.single(Token::LParen),
            ')' => lx.single(Token::RParen),
            '{' => lx.single(Token::LBrace),
            '}' => lx.single(Token::RBrace),
            ',' => lx.single(Token::Comma),
            ';' => lx.single(Token::Semicolon),
            '"' => lx.quoted()?,
            ':' => {
                lx.bump();
                let word = lx.word();
                if word.is_empty() {
                    return Err(CompileError::at(pos, "a tag needs a name after ':'"));
                }
                Token::Tag(word.to_ascii_lowercase())
            }
            '0'..='9' => lx.number(pos)?,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let word = lx.word();
                if word.eq_ignore_ascii_case("text") && lx.peek() == Some(':') {
                    lx.bump();
                    lx.multiline(pos)?
                } else {
                    Token::Identifier(word)
                }
            }
            c => {
                return Err(CompileError::at(
                    pos,
                    format!("unexpected character {:?}", c.to_string()),
                ));
            }
        };
        out.push((token, pos));
    }
    Ok(out)
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: u32,
    column: u32,
}

impl Lexer {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.at + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn single(&mut self, t: Token) -> Token {
        self.bump();
        t
    }

    fn skip_blank(&mut self) -> Result<(), CompileError> {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r' | '\n') => {
                    self.bump();
                }
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some('/') if self.peek_at(1) == Some('*') => {
                    let pos = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(CompileError::at(pos, "unterminated comment")),
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                w.push(c);
                self.bump();
            } else {
                break;
            }
        }
        w
    }

    fn number(&mut self, pos: Pos) -> Result<Token, CompileError> {
        let mut n: u64 = 0;
        while let Some(c @ '0'..='9') = self.peek() {
            self.bump();
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(c as u8 - b'0')))
                .ok_or_else(|| CompileError::at(pos, "number too large"))?;
        }
        let shift = match self.peek() {
            Some('K' | 'k') => 10,
            Some('M' | 'm') => 20,
            Some('G' | 'g') => 30,
            _ => 0,
        };
        if shift > 0 {
            self.bump();
            n = n
                .checked_mul(1 << shift)
                .ok_or_else(|| CompileError::at(pos, "number too large"))?;
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(CompileError::at(pos, "a number must not run into a word"));
        }
        Ok(Token::Number(n))
    }

    fn quoted(&mut self) -> Result<Token, CompileError> {
        let pos = self.pos();
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(CompileError::at(pos, "unterminated string")),
                Some('"') => break,
                // RFC 5228 2.4.2: "\" escapes the next character; an undefined escape is the character.
                Some('\\') => match self.bump() {
                    Some(c) => s.push(c),
                    None => return Err(CompileError::at(pos, "unterminated string")),
                },
                // Line ends inside strings are CRLF (section 2.4.2), whatever the script file uses.
                Some('\n') => {
                    if !s.ends_with('\r') {
                        s.push('\r');
                    }
                    s.push('\n');
                }
                Some(c) => s.push(c),
            }
        }
        Ok(Token::String(s))
    }

    /// `text:` [comment] CRLF, lines, "." CRLF; a leading ".." is a "." (section 2.4.2).
    fn multiline(&mut self, pos: Pos) -> Result<Token, CompileError> {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
        if self.peek() == Some('#') {
            while let Some(c) = self.peek() {
                if c == '\n' {
                    break;
                }
                self.bump();
            }
        }
        if self.peek() == Some('\r') {
            self.bump();
        }
        if self.bump() != Some('\n') {
            return Err(CompileError::at(
                pos,
                "text: must be followed by the end of the line",
            ));
        }
        let mut s = String::new();
        loop {
            let mut line = String::new();
            let mut ended = false;
            while let Some(c) = self.bump() {
                if c == '\n' {
                    ended = true;
                    break;
                }
                line.push(c);
            }
            if line.ends_with('\r') {
                line.pop();
            }
            if line == "." {
                return Ok(Token::String(s));
            }
            if !ended {
                return Err(CompileError::at(
                    pos,
                    "multi-line string does not end with a line holding \".\"",
                ));
            }
            let line = line.strip_prefix('.').map_or(line.as_str(), |rest| {
                if rest.starts_with('.') { rest } else { &line }
            });
            s.push_str(line);
            s.push_str("\r\n");
        }
    }
}
