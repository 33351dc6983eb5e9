//! The fleet update channel (docs/channel.md): TUF metadata on any static
//! HTTP server, written by `slate channel` and followed by devices.
//!
//! - [`canonical`]: the canonical JSON TUF signs.
//! - [`metadata`]: the four roles, keys, envelopes, signing.
//! - [`trust`]: the client's update of its trusted metadata (TUF
//!   specification 1.0, section 5), over any [`trust::Fetcher`].
//! - [`http`]: the fetcher for HTTP(S) repositories: bounded bodies,
//!   conditional requests.
//! - [`client`]: one poll as a device runs it (update, select, check
//!   the offered bundle's head).
//! - [`select`]: which target a device installs next, and why.
//! - [`repo`]: the publisher's side: init, publish, promote, withdraw,
//!   refresh and key rotation.

pub mod canonical;
pub mod client;
pub mod http;
pub mod metadata;
pub mod repo;
pub mod select;
pub mod trust;

/// Why channel metadata or a target was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TufError {
    /// Reading or writing local files.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server could not be asked or did not answer usefully.
    #[error("{url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// A response longer than the metadata allow (an endless-data attack
    /// or a wrong file).
    #[error("{name}: the response exceeds the {limit} bytes it may have")]
    TooLong {
        /// The file.
        name: String,
        /// Its bound.
        limit: u64,
    },
    /// Malformed metadata or a field that cannot be.
    #[error("{name}: {reason}")]
    Bad {
        /// The file.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Too few valid signatures of the role's keys.
    #[error("{name}: {good} valid signature(s) of its role's keys, {threshold} needed")]
    Signatures {
        /// The file.
        name: String,
        /// Valid signatures by distinct keys of the role.
        good: usize,
        /// The role's threshold.
        threshold: u64,
    },
    /// Metadata past its expiry (a freeze attack, or a stale repository).
    #[error("{name}: expired at {expires} (the device's time is {now})")]
    Expired {
        /// The file.
        name: String,
        /// Its expiry.
        expires: String,
        /// The time it was checked against.
        now: String,
    },
    /// A version lower than one already trusted (a rollback attack).
    #[error("{name}: version {got} is older than the trusted version {trusted}")]
    Rollback {
        /// The file.
        name: String,
        /// The version trusted.
        trusted: u64,
        /// The version offered.
        got: u64,
    },
    /// A version other than the one the referring metadata name (mix and
    /// match).
    #[error("{name}: version {got}, but {by} names version {expected}")]
    VersionMismatch {
        /// The file.
        name: String,
        /// The metadata naming it.
        by: String,
        /// The version named.
        expected: u64,
        /// The version found.
        got: u64,
    },
    /// Length or hash other than the metadata say.
    #[error("{name}: {reason}")]
    Mismatch {
        /// The file.
        name: String,
        /// What differs.
        reason: String,
    },
    /// Something TUF allows that slate does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl TufError {
    pub(crate) fn bad(name: &str, reason: impl std::fmt::Display) -> TufError {
        TufError::Bad {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(what: impl std::fmt::Display, source: std::io::Error) -> TufError {
        TufError::Io {
            what: what.to_string(),
            source,
        }
    }

    /// A short machine-readable kind, for events and `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            TufError::Io { .. } => "io",
            TufError::Http { .. } => "http",
            TufError::TooLong { .. } => "too_long",
            TufError::Bad { .. } => "bad_metadata",
            TufError::Signatures { .. } => "signatures",
            TufError::Expired { .. } => "expired",
            TufError::Rollback { .. } => "rollback",
            TufError::VersionMismatch { .. } => "version_mismatch",
            TufError::Mismatch { .. } => "target_mismatch",
            TufError::Unsupported(_) => "unsupported",
        }
    }
}
