//! Operations: the local control socket that `tern queue` commands use to act on the running daemon.

pub mod control;
