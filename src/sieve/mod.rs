//! Sieve (RFC 5228) and its extensions: a lexer and parser that compile a script once into a typed
//! program (`compile`), an interpreter that runs it on a message and returns actions (`interp`), and the
//! store of users' scripts (`store`). Nothing here delivers, sends or replies: local delivery carries out
//! the actions, through the mailbox index and the queue's intake.

pub mod ast;
pub mod compile;
pub mod date;
pub mod interp;
pub mod lexer;
pub mod matching;
pub mod message;
pub mod store;
pub mod strings;
pub mod syntax;
pub mod try_run;
pub mod vacation;

#[cfg(test)]
mod tests;

pub use ast::Program;
pub use compile::compile;
pub use interp::{Action, Envelope, Environment, Limits, Outcome};

/// A compile error, naming where it is: `line 4, column 9: unknown test "headr"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct CompileError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl CompileError {
    pub fn at(pos: lexer::Pos, message: impl Into<String>) -> CompileError {
        CompileError {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

/// The extensions ManageSieve's SIEVE capability lists: exactly those `require` accepts.
pub fn capability() -> String {
    compile::EXTENSIONS.join(" ")
}

/// The actions of an outcome as one line each, sorted: the form `tern sieve test` prints and the
/// differential tests compare (`store FOLDER [flags=a,b]`, `redirect ADDR`, `reject`, `ereject`,
/// `vacation seconds=N [subject=...]`, `error runtime`).
pub fn normalized(outcome: &Outcome) -> Vec<String> {
    let mut lines: Vec<String> = outcome
        .actions
        .iter()
        .map(|a| match a {
            Action::Store { folder, flags, .. } => {
                if flags.is_empty() {
                    format!("store {folder}")
                } else {
                    let mut f: Vec<String> = flags.iter().map(|f| f.to_lowercase()).collect();
                    f.sort();
                    f.dedup();
                    format!("store {folder} flags={}", f.join(","))
                }
            }
            Action::Redirect { address } => format!("redirect {address}"),
            Action::Reject {
                extended: false, ..
            } => "reject".into(),
            Action::Reject { extended: true, .. } => "ereject".into(),
            Action::Vacation(r) => {
                if r.subject_explicit {
                    format!("vacation seconds={} subject={}", r.seconds, r.subject)
                } else {
                    format!("vacation seconds={}", r.seconds)
                }
            }
        })
        .collect();
    if outcome.error.is_some() {
        lines.push("error runtime".into());
    }
    lines.sort();
    lines
}
