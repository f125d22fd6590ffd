//! Operations: the control socket behind `tern queue` commands, systemd notification, privilege dropping,
//! and the admin HTTP listener (metrics and health).

pub mod admin;
pub mod control;
pub mod metrics;
pub mod privileges;
pub mod systemd;
pub mod zone;
