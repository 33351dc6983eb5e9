//! The on-device agent: boot verdicts, commits, rollbacks and installs.
//!
//! It runs from the image's init as `slate-agent boot`, and on demand as
//! `slate-agent install ...` / `slate-agent status --json`.

pub mod boot;
pub mod cmdline;
pub mod config;
pub mod delta;
pub mod discoverable;
pub mod events;
pub mod fault;
pub mod firmware;
pub mod grow;
pub mod health;
pub mod install;
pub mod lock;
pub mod lockdown;
pub mod media;
pub mod state;
pub mod status;
pub mod system;
pub mod verity;
pub mod watchdog;
