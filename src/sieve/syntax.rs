//! The generic Sieve grammar (RFC 5228 section 8.2): commands with arguments, tests and blocks, before any
//! command is known. `compile` gives each its meaning.

use super::CompileError;
use super::lexer::{Pos, Token};

/// Nesting of blocks and test lists, at most: hostile scripts cannot make the parser recurse deep.
pub const MAX_NESTING: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Tag(String, Pos),
    Number(u64, Pos),
    /// A single string (`"a"`), `list` false; or a string list (`["a", "b"]`).
    Strings {
        values: Vec<String>,
        list: bool,
        pos: Pos,
    },
}

impl Arg {
    pub fn pos(&self) -> Pos {
        match self {
            Arg::Tag(_, p) | Arg::Number(_, p) => *p,
            Arg::Strings { pos, .. } => *pos,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub name: String,
    pub pos: Pos,
    pub args: Vec<Arg>,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub pos: Pos,
    pub args: Vec<Arg>,
    pub tests: Vec<Test>,
    pub block: Option<Vec<Command>>,
}

pub fn parse(tokens: &[(Token, Pos)]) -> Result<Vec<Command>, CompileError> {
    let mut p = Parser { tokens, at: 0 };
    let commands = p.commands(0)?;
    if let Some((_, pos)) = p.tokens.get(p.at) {
        return Err(CompileError::at(*pos, "unexpected '}'"));
    }
    Ok(commands)
}

struct Parser<'a> {
    tokens: &'a [(Token, Pos)],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn pos(&self) -> Pos {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map(|(_, p)| *p)
            .unwrap_or_default()
    }

    fn next(&mut self) -> Option<(Token, Pos)> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn commands(&mut self, depth: usize) -> Result<Vec<Command>, CompileError> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            match t {
                Token::RBrace => break,
                Token::Identifier(_) => out.push(self.command(depth)?),
                other => {
                    return Err(CompileError::at(
                        self.pos(),
                        format!("expected a command, found {}", describe(other)),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn command(&mut self, depth: usize) -> Result<Command, CompileError> {
        let Some((Token::Identifier(name), pos)) = self.next() else {
            return Err(CompileError::at(self.pos(), "expected a command"));
        };
        let (args, tests) = self.arguments(depth)?;
        let block = match self.next() {
            Some((Token::Semicolon, _)) => None,
            Some((Token::LBrace, bpos)) => {
                if depth >= MAX_NESTING {
                    return Err(CompileError::at(bpos, "blocks nested too deep"));
                }
                let body = self.commands(depth + 1)?;
                match self.next() {
                    Some((Token::RBrace, _)) => Some(body),
                    _ => return Err(CompileError::at(bpos, "block is not closed with '}'")),
                }
            }
            Some((t, p)) => {
                return Err(CompileError::at(
                    p,
                    format!(
                        "expected ';' or a block after {name:?}, found {}",
                        describe(&t)
                    ),
                ));
            }
            None => {
                return Err(CompileError::at(
                    pos,
                    format!("command {name:?} does not end with ';'"),
                ));
            }
        };
        Ok(Command {
            name: name.to_ascii_lowercase(),
            pos,
            args,
            tests,
            block,
        })
    }

    fn arguments(&mut self, depth: usize) -> Result<(Vec<Arg>, Vec<Test>), CompileError> {
        let mut args = Vec::new();
        loop {
            let pos = self.pos();
            match self.peek() {
                Some(Token::Tag(t)) => {
                    args.push(Arg::Tag(t.clone(), pos));
                    self.at += 1;
                }
                Some(Token::Number(n)) => {
                    args.push(Arg::Number(*n, pos));
                    self.at += 1;
                }
                Some(Token::String(s)) => {
                    args.push(Arg::Strings {
                        values: vec![s.clone()],
                        list: false,
                        pos,
                    });
                    self.at += 1;
                }
                Some(Token::LBracket) => {
                    self.at += 1;
                    let mut values = Vec::new();
                    loop {
                        match self.next() {
                            Some((Token::String(s), _)) => values.push(s),
                            Some((t, p)) => {
                                return Err(CompileError::at(
                                    p,
                                    format!(
                                        "expected a string in the list, found {}",
                                        describe(&t)
                                    ),
                                ));
                            }
                            None => return Err(CompileError::at(pos, "string list is not closed")),
                        }
                        match self.next() {
                            Some((Token::Comma, _)) => {}
                            Some((Token::RBracket, _)) => break,
                            Some((t, p)) => {
                                return Err(CompileError::at(
                                    p,
                                    format!("expected ',' or ']', found {}", describe(&t)),
                                ));
                            }
                            None => return Err(CompileError::at(pos, "string list is not closed")),
                        }
                    }
                    args.push(Arg::Strings {
                        values,
                        list: true,
                        pos,
                    });
                }
                _ => break,
            }
        }
        let tests = match self.peek() {
            Some(Token::Identifier(_)) => vec![self.test(depth)?],
            Some(Token::LParen) => self.test_list(depth)?,
            _ => Vec::new(),
        };
        Ok((args, tests))
    }

    fn test(&mut self, depth: usize) -> Result<Test, CompileError> {
        let Some((Token::Identifier(name), pos)) = self.next() else {
            return Err(CompileError::at(self.pos(), "expected a test"));
        };
        if depth >= MAX_NESTING {
            return Err(CompileError::at(pos, "tests nested too deep"));
        }
        let (args, tests) = self.arguments(depth + 1)?;
        Ok(Test {
            name: name.to_ascii_lowercase(),
            pos,
            args,
            tests,
        })
    }

    fn test_list(&mut self, depth: usize) -> Result<Vec<Test>, CompileError> {
        let open = self.pos();
        self.at += 1;
        let mut tests = Vec::new();
        loop {
            match self.peek() {
                Some(Token::Identifier(_)) => tests.push(self.test(depth)?),
                Some(t) => {
                    return Err(CompileError::at(
                        self.pos(),
                        format!("expected a test, found {}", describe(t)),
                    ));
                }
                None => return Err(CompileError::at(open, "test list is not closed with ')'")),
            }
            match self.next() {
                Some((Token::Comma, _)) => {}
                Some((Token::RParen, _)) => return Ok(tests),
                Some((t, p)) => {
                    return Err(CompileError::at(
                        p,
                        format!("expected ',' or ')', found {}", describe(&t)),
                    ));
                }
                None => return Err(CompileError::at(open, "test list is not closed with ')'")),
            }
        }
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Identifier(s) => format!("{s:?}"),
        Token::Tag(s) => format!("\":{s}\""),
        Token::Number(n) => n.to_string(),
        Token::String(_) => "a string".into(),
        Token::LBracket => "'['".into(),
        Token::RBracket => "']'".into(),
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::LBrace => "'{'".into(),
        Token::RBrace => "'}'".into(),
        Token::Comma => "','".into(),
        Token::Semicolon => "';'".into(),
    }
}
