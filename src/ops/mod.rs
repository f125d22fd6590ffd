//! Operations: the control socket behind `tern queue` commands, systemd notification, privilege dropping,
//! the admin listener's metrics, and what `tern dns` and `tern doctor` say of DNS.

pub mod admin;
pub mod control;
pub mod doctor;
pub mod metrics;
pub mod privileges;
pub mod systemd;
pub mod zone;
