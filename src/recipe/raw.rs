//! Stage one of recipe loading: the TOML exactly as written, with source spans
//! on every value that later validation may complain about.

use serde::Deserialize;
use toml::Spanned;

/// A recipe file as parsed, before defaults and validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecipe {
    pub image: Spanned<RawImage>,
    pub kernel: Option<Spanned<RawKernel>>,
    #[serde(default)]
    pub rootfs: RawRootfs,
    #[serde(default)]
    pub service: Vec<Spanned<RawService>>,
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub disk: RawDisk,
    #[serde(default)]
    pub update: RawUpdate,
    #[serde(default)]
    pub apt: RawApt,
    #[serde(default)]
    pub user: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub group: Vec<Spanned<RawGroup>>,
    pub network: Option<super::runtime::RawNetwork>,
    pub debug: Option<Spanned<super::runtime::RawDebug>>,
    #[serde(default)]
    pub state: super::runtime::RawState,
    pub secure_boot: Option<Spanned<RawSecureBoot>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecureBoot {
    pub key: Spanned<String>,
    pub cert: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Spanned<String>,
    pub uid: Spanned<u32>,
    pub group: Option<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    pub home: Option<Spanned<String>>,
    pub shell: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: Spanned<String>,
    pub gid: Spanned<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub name: Spanned<String>,
    pub version: Spanned<String>,
    pub compatible: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKernel {
    pub package: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub modules_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub cmdline: Option<Spanned<String>>,
    #[serde(default)]
    pub modules: Vec<Spanned<String>>,
    pub uki: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRootfs {
    pub size: Option<Spanned<String>>,
    #[serde(default)]
    pub packages: Vec<Spanned<String>>,
    #[serde(default)]
    pub files: Vec<Spanned<RawFile>>,
    #[serde(default)]
    pub binaries: Vec<Spanned<String>>,
    #[serde(default)]
    pub debs: Vec<Spanned<String>>,
    pub base: Option<Spanned<String>>,
    #[serde(default)]
    pub layers: Vec<Spanned<String>>,
    #[serde(default)]
    pub overlays: Vec<Spanned<RawOverlay>>,
}

/// `overlays = ["dir/", { src = "dir/", owner = "app", ... }]`
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawOverlay {
    Path(String),
    Table(RawOverlayTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
// Plain strings: inside an untagged enum, toml cannot give spans (errors
// point at the whole entry instead).
pub struct RawOverlayTable {
    pub src: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub manifest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub src: Option<Spanned<String>>,
    pub content: Option<String>,
    pub dst: Spanned<String>,
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Spanned<String>,
    pub exec: Spanned<String>,
    pub restart: Option<Spanned<String>>,
    #[serde(default)]
    pub wait: bool,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    pub user: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub command: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
    pub watchdog: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub interval: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    pub esp: Option<Spanned<String>>,
    pub slot: Option<Spanned<String>>,
    pub data: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpdate {
    pub enabled: Option<Spanned<bool>>,
    #[serde(default)]
    pub public_keys: Vec<Spanned<String>>,
    pub threshold: Option<Spanned<u32>>,
    pub security_version: Option<Spanned<i64>>,
    pub tries: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApt {
    pub mirror: Option<Spanned<String>>,
    pub security_mirror: Option<Spanned<String>>,
    pub suite: Option<Spanned<String>>,
    pub components: Option<Vec<Spanned<String>>>,
    pub keyring: Option<Spanned<String>>,
    pub architecture: Option<Spanned<String>>,
    pub snapshot: Option<Spanned<String>>,
    pub snapshot_mirror: Option<Spanned<String>>,
    pub vendor: Option<Spanned<String>>,
}
