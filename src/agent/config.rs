//! `/etc/slate/agent.json`: what the image tells its agent (written by
//! `slate build` from the recipe).

use crate::boot_env::systemd_boot;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the config lives in the image.
pub const CONFIG_PATH: &str = "/etc/slate/agent.json";

/// The agent's view of its own image and policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Image name.
    pub name: String,
    /// This image's version.
    pub version: String,
    /// Bundles must carry exactly this compatible string.
    pub compatible: String,
    /// This image's anti-rollback level.
    pub security_version: u64,
    /// Health check command (`/bin/sh -c`).
    pub health_command: String,
    /// Health check timeout in milliseconds (per attempt).
    pub health_timeout_ms: u64,
    /// Further attempts after a failed health check.
    #[serde(default)]
    pub health_retries: u32,
    /// Pause between health check attempts, milliseconds.
    #[serde(default)]
    pub health_interval_ms: u64,
    /// Boot attempts a new slot gets.
    pub tries: u32,
    /// Trusted public keys (SPKI PEM files in the image).
    pub public_keys: Vec<PathBuf>,
    /// Signatures required from distinct trusted keys.
    pub threshold: u32,
    /// Directory of persistent agent state (on the data partition).
    pub state_dir: PathBuf,
    /// Where the agent mounts the ESP while it changes boot entries.
    pub esp_mount: PathBuf,
    /// Boot loader backend (`systemd-boot`).
    pub boot_loader: String,
    /// Watchdog period the initramfs armed, in seconds.
    pub watchdog_secs: u64,
    /// The Secure Boot db certificate (PEM, in the image) every unified
    /// kernel image an update installs must be signed with; `None`: the
    /// image is not built for Secure Boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot_cert: Option<PathBuf>,
}

/// Where an image built with `[secure_boot]` carries its db certificate.
pub const SECURE_BOOT_CERT_PATH: &str = "/etc/slate/secure-boot/db.crt";

impl AgentConfig {
    /// Reads the config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Pretty JSON for the image.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The boot loader files kernels and entries live under (for messages).
    pub fn loader_binary() -> &'static str {
        systemd_boot::LOADER_PATH
    }
}
