//! The command line's larger subcommands, one file each.

pub mod queue;
