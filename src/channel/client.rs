//! One poll of a channel, as a device runs it: update the trusted
//! metadata, pick the next bundle, fetch its head target and check that
//! the bundle on the server starts with exactly that head. What the device
//! then installs is the bundle at [`Offer::bundle_url`], through the normal
//! install path (chunk reuse, checks, trial, commit), with its signed
//! manifest already bound to TUF by the head.

use super::TufError;
use super::http::HttpRepository;
use super::select::{Device, Selection, select};
use super::trust::{Limits, Refresh, TrustedSet};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// Where to poll and what the device is.
#[derive(Debug, Clone)]
pub struct PollSpec<'a> {
    /// The repository's base URL.
    pub url: &'a str,
    /// The root metadata shipped in the image.
    pub image_root: &'a [u8],
    /// The state directory (on /data on a device).
    pub state: &'a Path,
    /// The device.
    pub device: Device,
    /// The device's clock (seconds since the epoch).
    pub clock: i64,
    /// The earliest time the device can be at (its image's build time).
    pub floor: i64,
}

/// The bundle a device should install.
#[derive(Debug, Clone, Serialize)]
pub struct Offer {
    /// Its target name.
    pub target: String,
    /// Its version.
    pub version: String,
    /// Where to fetch it.
    pub bundle_url: String,
    /// Its length and SHA-256, from the targets metadata.
    pub length: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// The head's length (header, manifest, signatures).
    pub head_length: u64,
}

/// What one poll found.
#[derive(Debug, Clone, Serialize)]
pub struct Poll {
    /// The time expiry was checked against.
    pub now: String,
    /// Trusted versions after the poll: root, timestamp, snapshot, targets.
    pub trusted: TrustedVersions,
    /// What the metadata update did.
    pub refresh: Refresh,
    /// The selection and its reasons.
    pub selection: Selection,
    /// The bundle to install, if any.
    pub offer: Option<Offer>,
    /// Requests sent and body bytes received in this poll.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
}

/// Trusted metadata versions.
#[derive(Debug, Clone, Serialize)]
pub struct TrustedVersions {
    /// Root.
    pub root: u64,
    /// Timestamp.
    pub timestamp: Option<u64>,
    /// Snapshot.
    pub snapshot: Option<u64>,
    /// Targets.
    pub targets: Option<u64>,
}

/// Polls the channel once. Any failure leaves the trusted state as it
/// was before the failing step and offers nothing.
pub fn poll(spec: &PollSpec<'_>) -> Result<Poll, TufError> {
    let mut set = TrustedSet::load(spec.image_root, spec.state, Limits::default())?;
    let mut http = HttpRepository::new(spec.url, Duration::from_secs(120))?;
    let now = set.effective_now(spec.clock, spec.floor)?;
    let refresh = set.update(&mut http, now)?;
    let targets = set.targets().expect("an update leaves targets");
    let selection = select(&targets.targets, &spec.device);
    let offer = match &selection.chosen {
        Some(name) => Some(check_offer(&set, &mut http, name)?),
        None => None,
    };
    let (root, timestamp, snapshot, targets) = set.versions();
    Ok(Poll {
        now: crate::utc::format(now),
        trusted: TrustedVersions {
            root,
            timestamp,
            snapshot,
            targets,
        },
        refresh,
        selection,
        offer,
        requests: http.requests,
        bytes: http.received,
    })
}

/// Fetches the head target of bundle `name` (bounded, hash-checked) and
/// the same number of bytes from the start of the bundle: they must be
/// equal, so the manifest the device will verify is the one TUF signed.
fn check_offer(set: &TrustedSet, http: &mut HttpRepository, name: &str) -> Result<Offer, TufError> {
    let targets = set.targets().expect("targets");
    let bundle = targets.targets[name].clone();
    let slate = super::select::SlateTarget::of(&bundle).expect("selected targets carry slate data");
    let (head, _) = set.fetch_target(http, &slate.pair)?;
    let parsed = crate::bundle::reader::read_head_unverified(head.as_slice())
        .map_err(|e| TufError::bad(&slate.pair, format!("not a bundle head: {e}")))?;
    if (
        parsed.manifest.compatible.as_str(),
        parsed.manifest.version.as_str(),
    ) != (slate.compatible.as_str(), slate.version.as_str())
    {
        return Err(TufError::Mismatch {
            name: slate.pair.clone(),
            reason: format!(
                "its manifest is {} {}, the target says {} {}",
                parsed.manifest.compatible,
                parsed.manifest.version,
                slate.compatible,
                slate.version
            ),
        });
    }
    let sha = bundle.sha256(name)?.to_string();
    let bundle_url = http.target_url(&set.stored_path(name, &sha));
    let served = http.read_prefix(&bundle_url, head.len() as u64)?;
    if served != head {
        return Err(TufError::Mismatch {
            name: name.to_string(),
            reason: format!(
                "the bundle's first {} bytes differ from its signed head target {}",
                head.len(),
                slate.pair
            ),
        });
    }
    Ok(Offer {
        target: name.to_string(),
        version: slate.version,
        bundle_url,
        length: bundle.length,
        sha256: sha,
        head_length: head.len() as u64,
    })
}
