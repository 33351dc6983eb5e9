//! Recipes: the TOML files that declare an image (docs/recipe.md).
//!
//! Loading happens in stages: [`raw`] parses the TOML as written (unknown
//! keys are errors), then [`Recipe::load`] applies defaults and validates every
//! value, reporting problems as `file:line: field: message`.

mod locate;
mod raw;
mod runtime;

pub use runtime::{
    Addressing, AuthorizedKey, DEFAULT_NET_MODULES, DebugSpec, Interface, NTP_HOME, NTP_PACKAGE,
    NTP_USER, NetworkSpec, SSH_HOST_KEYS, SSH_PACKAGE, StateSpec, VarMode, check_key_line,
};

use crate::units::Bytes;
use crate::version::Version;
use raw::RawRecipe;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A recipe problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("reading recipe {path}: {source}")]
    Io {
        /// Recipe path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Invalid TOML, an unknown key or a bad value.
    #[error("{location}: {message}")]
    Invalid {
        /// `file:line` (or just the file when no position is known).
        location: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A Debian package (a metapackage such as `linux-image-cloud-amd64` is
    /// followed to the versioned image package).
    Package(String),
    /// A kernel image on the build host, with an optional module tree
    /// (`lib/modules/<version>` layout) to take modules from.
    Path {
        /// The bzImage.
        vmlinuz: PathBuf,
        /// Directory containing `kernel/...` module files.
        modules_dir: Option<PathBuf>,
    },
}

/// `[kernel]`
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Package or file.
    pub source: KernelSource,
    /// Kernel command line (slate appends its own `slate.*` parameters).
    pub cmdline: String,
    /// Modules the initramfs loads (their dependencies are added).
    pub modules: Vec<String>,
    /// Each slot boots one unified kernel image (systemd-stub + kernel +
    /// initrd + command line) instead of a kernel and an initrd.
    pub uki: bool,
}

/// One `[[rootfs.files]]` entry.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Host file (relative paths are relative to the recipe) or inline content.
    pub source: FileSource,
    /// Absolute path in the image.
    pub dst: String,
    /// Permission bits; default 0644, or the source's executable bits.
    pub mode: Option<u16>,
}

/// Content of a [`FileSpec`].
#[derive(Debug, Clone)]
pub enum FileSource {
    /// A file on the host.
    Host(PathBuf),
    /// Literal text from the recipe.
    Inline(String),
}

/// `[rootfs]`
#[derive(Debug, Clone, Default)]
pub struct RootfsSpec {
    /// Filesystem size; default: what the content needs plus headroom.
    pub size: Option<Bytes>,
    /// Debian packages installed (with their dependency closure).
    pub packages: Vec<String>,
    /// Files copied in last (they win over package files).
    pub files: Vec<FileSpec>,
    /// Host ELF binaries copied with the shared libraries they need.
    pub binaries: Vec<PathBuf>,
    /// Local .deb files (directories expanded, sorted), resolved together
    /// with `packages` (their dependencies come from the archive).
    pub debs: Vec<PathBuf>,
    /// A tar archive or container image unpacked first, below the packages.
    pub base: Option<Layer>,
    /// Tar archives or container images unpacked over the packages, in order
    /// (OCI whiteouts honoured).
    pub layers: Vec<Layer>,
    /// Host directory trees copied over the root after the layers.
    pub overlays: Vec<Overlay>,
}

/// What a [`Layer`] path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A tar archive (plain, gzip, xz or zstd): one layer.
    Tar,
    /// An OCI image layout directory (`oci:DIR`): its image's layers.
    Oci,
    /// A `docker save` tarball (`docker-archive:FILE`): its image's layers.
    DockerArchive,
}

/// A base or layer input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Its format.
    pub kind: LayerKind,
    /// Host path (relative paths are relative to the recipe).
    pub path: PathBuf,
    /// The recipe field, for messages (`rootfs.layers[0]`).
    pub field: String,
}

/// One `overlays` entry: a host directory copied over the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Host directory (relative paths are relative to the recipe).
    pub src: PathBuf,
    /// Owner of every entry not named in the manifest.
    pub uid: u32,
    /// Group of every entry not named in the manifest.
    pub gid: u32,
    /// mtree-like manifest: per-path owner, group and mode.
    pub manifest: Option<PathBuf>,
    /// The recipe field, for messages (`rootfs.overlays[0]`).
    pub field: String,
}

/// What init does when a service exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Start again whenever it exits.
    Always,
    /// Run once.
    Never,
}

/// One `[[service]]`.
#[derive(Debug, Clone)]
pub struct Service {
    /// Name (letters, digits, `-`, `_`).
    pub name: String,
    /// Command line run by `/bin/sh -c`.
    pub exec: String,
    /// Restart policy.
    pub restart: Restart,
    /// Run to completion before the agent and other services start.
    pub wait: bool,
    /// Services this one starts after (init starts services in this order;
    /// `wait` services finish before any other starts).
    pub after: Vec<String>,
    /// Declared user the command runs as (`None`: root).
    pub user: Option<String>,
}

/// `[health]`
#[derive(Debug, Clone)]
pub struct HealthSpec {
    /// Shell command; exit 0 means healthy.
    pub command: String,
    /// How long one attempt may run.
    pub timeout: Duration,
    /// Further attempts after a failure.
    pub retries: u32,
    /// Pause between attempts.
    pub interval: Duration,
    /// Watchdog period armed by the initramfs; covers boot up to the verdict.
    pub watchdog: Duration,
}

/// `[disk]`
#[derive(Debug, Clone, Copy)]
pub struct DiskSpec {
    /// EFI system partition size.
    pub esp: Bytes,
    /// Size of each root slot partition.
    pub slot: Bytes,
    /// Size of the data partition.
    pub data: Bytes,
}

/// `[update]`
#[derive(Debug, Clone)]
pub struct UpdateSpec {
    /// Whether devices take updates; `false` (no public keys) builds an
    /// image that can never be updated, on purpose.
    pub enabled: bool,
    /// Public keys (SPKI PEM) whose signatures the device accepts.
    pub public_keys: Vec<PathBuf>,
    /// Signatures needed from distinct trusted keys.
    pub threshold: u32,
    /// Anti-rollback level of this image.
    pub security_version: u64,
    /// Boot attempts a new slot gets before the boot loader falls back.
    pub tries: u32,
}

/// `[apt]`: where Debian packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSpec {
    /// Main archive URL.
    pub mirror: String,
    /// Security archive URL (empty to disable).
    pub security_mirror: String,
    /// Suite, e.g. `bookworm`.
    pub suite: String,
    /// Components, e.g. `main`.
    pub components: Vec<String>,
    /// Keyring that signs the archive.
    pub keyring: PathBuf,
    /// Debian architecture.
    pub architecture: String,
    /// Snapshot timestamp (`YYYYMMDDTHHMMSSZ`) to resolve against instead of
    /// the live archive.
    pub snapshot: Option<String>,
    /// Base URL of the snapshot service (`<base>/debian/<timestamp>/`).
    pub snapshot_mirror: String,
    /// Directory of vendored .deb files (`slate vendor`), tried before the
    /// network.
    pub vendor: Option<PathBuf>,
}

/// One `[[group]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Numeric id.
    pub gid: u32,
    /// Members (users listing it in `groups`).
    pub members: Vec<String>,
}

/// One `[[user]]` (password locked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (created, owned by the user, when below /data it is
    /// created at boot).
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// A validated recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file.
    pub path: PathBuf,
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: Version,
    /// Compatibility string devices check.
    pub compatible: String,
    /// Kernel.
    pub kernel: KernelSpec,
    /// Root filesystem content.
    pub rootfs: RootfsSpec,
    /// Services started by init.
    pub services: Vec<Service>,
    /// Health check.
    pub health: HealthSpec,
    /// Partition sizes.
    pub disk: DiskSpec,
    /// Update policy.
    pub update: UpdateSpec,
    /// Package source.
    pub apt: AptSpec,
    /// Declared users.
    pub users: Vec<User>,
    /// Declared groups (including users' own primary groups).
    pub groups: Vec<Group>,
    /// Interfaces, host name, DNS, NTP.
    pub network: NetworkSpec,
    /// SSH server and console shell.
    pub debug: DebugSpec,
    /// Writable `/var` and `/etc` paths.
    pub state: StateSpec,
    /// Secure Boot signing of the boot loader and the unified kernel images.
    pub secure_boot: Option<SecureBootSpec>,
    lines: BTreeMap<String, usize>,
}

/// `[secure_boot]`: the db key and certificate the boot chain is signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureBootSpec {
    /// PKCS#8 RSA private key (PEM), relative to the recipe.
    pub key: PathBuf,
    /// Its X.509 certificate (PEM), the one enrolled in the firmware's db.
    pub cert: PathBuf,
}

impl Recipe {
    /// Reads and validates a recipe file.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates recipe text; `path` is used for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Recipe, RecipeError> {
        let cx = Cx { path, text };
        let raw: RawRecipe = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim().to_string();
            // Type errors point at the value: name its field.
            if let Some(field) = e.span().and_then(|s| locate::field_at(text, s.start)) {
                // A missing field's span is its table: naming that would mislead.
                if !message.starts_with("missing field") {
                    message = format!("{}: {message}", field);
                }
            }
            cx.err(e.span(), message)
        })?;
        cx.validate(raw)
    }

    /// The uid of a declared user name (`root` is 0) or a number.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        resolve_user(name, &self.users)
    }

    /// The gid of a declared group name (`root` is 0) or a number.
    pub fn gid_of(&self, name: &str) -> Option<u32> {
        resolve_group(name, &self.groups)
    }

    /// The directory relative paths in the recipe are resolved against.
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// `file:line` of a field (dotted name such as `disk.slot` or
    /// `rootfs.packages.2`), or just the file when it was not written.
    pub fn location(&self, field: &str) -> String {
        // The field itself, else the nearest enclosing one that was written
        // (`rootfs.files.2.src` -> `rootfs.files.2`).
        let mut key = field;
        loop {
            if let Some(line) = self.lines.get(key) {
                return format!("{}:{line}", self.path.display());
            }
            match key.rsplit_once('.') {
                Some((head, _)) => key = head,
                None => return self.path.display().to_string(),
            }
        }
    }

    /// An error for `field` in the style of all recipe errors.
    pub fn error(&self, field: &str, message: impl Into<String>) -> RecipeError {
        RecipeError::Invalid {
            location: self.location(field),
            message: format!("{}: {}", display_field(field), message.into()),
        }
    }

    /// Default `[apt]`: Debian 12 from deb.debian.org.
    pub fn default_apt() -> AptSpec {
        AptSpec {
            mirror: "http://deb.debian.org/debian".into(),
            security_mirror: "http://deb.debian.org/debian-security".into(),
            suite: "bookworm".into(),
            components: vec!["main".into()],
            keyring: "/usr/share/keyrings/debian-archive-keyring.gpg".into(),
            architecture: "amd64".into(),
            snapshot: None,
            snapshot_mirror: "http://snapshot.debian.org/archive".into(),
            vendor: None,
        }
    }
}

struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Option<Range<usize>>, message: impl Into<String>) -> RecipeError {
        let location = match span {
            Some(s) => format!("{}:{}", self.path.display(), self.line_of(s.start)),
            None => self.path.display().to_string(),
        };
        RecipeError::Invalid {
            location,
            message: message.into(),
        }
    }

    fn field_err<T>(
        &self,
        v: &Spanned<T>,
        field: &str,
        msg: impl std::fmt::Display,
    ) -> RecipeError {
        self.err(Some(v.span()), format!("{field}: {msg}"))
    }

    fn size(&self, v: &Spanned<String>, field: &str) -> Result<Bytes, RecipeError> {
        v.get_ref()
            .parse::<Bytes>()
            .map_err(|e| self.field_err(v, field, e))
    }

    fn duration(&self, v: &Spanned<String>, field: &str) -> Result<Duration, RecipeError> {
        parse_duration(v.get_ref()).ok_or_else(|| {
            self.field_err(
                v,
                field,
                format!(
                    "invalid duration {:?} (expected e.g. 30s, 2m, 500ms)",
                    v.get_ref()
                ),
            )
        })
    }

    /// Stage two: defaults applied and every value checked, section by
    /// section; each section records the lines of its fields for later errors.
    fn validate(&self, raw: RawRecipe) -> Result<Recipe, RecipeError> {
        let mut lines = Lines::default();
        let image_span = raw.image.span();
        let image = self.image(raw.image.into_inner(), &mut lines)?;
        let kernel = self.kernel(raw.kernel, image_span, &mut lines)?;
        let mut rootfs = self.rootfs(&raw.rootfs, &mut lines)?;
        let services = self.services(&raw.service)?;
        let health = self.health(raw.health.as_ref())?;
        let disk = self.disk(&raw.disk, &mut lines)?;
        let update = self.update(&raw.update, &mut lines)?;
        let apt = self.apt(&raw.apt, &mut lines)?;
        let (mut users, mut groups) = self.accounts(&raw.user, &raw.group)?;
        let network = self.network(raw.network.as_ref(), &mut lines)?;
        let debug = self.debug(raw.debug.as_ref(), &kernel.cmdline, &network, &mut lines)?;
        let ntp = raw.network.as_ref().and_then(|n| n.ntp.first());
        let state = self.state(&raw.state, &debug, ntp, &mut lines)?;
        self.ntp_account(ntp, &mut users, &mut groups)?;
        self.service_users(&raw.service, &users)?;
        rootfs.overlays = self.overlays(&raw.rootfs.overlays, &users, &groups, &mut lines)?;
        let secure_boot = self.secure_boot(raw.secure_boot.as_ref(), &kernel, &mut lines)?;
        Ok(Recipe {
            path: self.path.to_path_buf(),
            name: image.name,
            version: image.version,
            compatible: image.compatible,
            kernel,
            rootfs,
            services,
            health,
            disk,
            update,
            apt,
            users,
            groups,
            network,
            debug,
            state,
            secure_boot,
            lines: lines.0,
        })
    }

    /// `[secure_boot]`: only with unified kernel images, which carry the
    /// kernel, the initramfs and the command line under one signature.
    fn secure_boot(
        &self,
        raw: Option<&Spanned<raw::RawSecureBoot>>,
        kernel: &KernelSpec,
        lines: &mut Lines,
    ) -> Result<Option<SecureBootSpec>, RecipeError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        lines.mark(self, "secure_boot", raw.span());
        let sb = raw.get_ref();
        if !kernel.uki {
            return Err(self.err(
                Some(raw.span()),
                "secure_boot: needs kernel.uki = true (the signed unified kernel image carries \
                 the kernel, the initramfs and the command line)",
            ));
        }
        for (field, v) in [("secure_boot.key", &sb.key), ("secure_boot.cert", &sb.cert)] {
            if v.get_ref().is_empty() {
                return Err(self.field_err(v, field, "must name a file"));
            }
            lines.mark(self, field, v.span());
        }
        Ok(Some(SecureBootSpec {
            key: PathBuf::from(sb.key.get_ref()),
            cert: PathBuf::from(sb.cert.get_ref()),
        }))
    }

    /// `[image]`
    fn image(&self, image: raw::RawImage, lines: &mut Lines) -> Result<ImageSpec, RecipeError> {
        let name = image.name.get_ref().clone();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(self.field_err(
                &image.name,
                "image.name",
                "use 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        lines.mark(self, "image.name", image.name.span());
        let version: Version = image
            .version
            .get_ref()
            .parse()
            .map_err(|e| self.field_err(&image.version, "image.version", e))?;
        lines.mark(self, "image.version", image.version.span());
        let compatible = match &image.compatible {
            Some(c) if c.get_ref().trim().is_empty() || c.get_ref().len() > 128 => {
                return Err(self.field_err(c, "image.compatible", "must be 1-128 characters"));
            }
            Some(c) => c.get_ref().clone(),
            None => format!("slate-{name}"),
        };

        Ok(ImageSpec {
            name,
            version,
            compatible,
        })
    }

    /// `[kernel]` (required; `image_span` locates the error when it is missing)
    fn kernel(
        &self,
        raw: Option<Spanned<raw::RawKernel>>,
        image_span: Range<usize>,
        lines: &mut Lines,
    ) -> Result<KernelSpec, RecipeError> {
        let Some(k) = raw else {
            return Err(self.err(
                Some(image_span),
                "kernel: missing [kernel] section (set kernel.package or kernel.path)",
            ));
        };
        let span = k.span();
        let k = k.into_inner();
        lines.mark(self, "kernel", span.clone());
        let source = match (&k.package, &k.path) {
            (Some(p), None) => {
                if !is_package_name(p.get_ref()) {
                    return Err(self.field_err(p, "kernel.package", "not a Debian package name"));
                }
                lines.mark(self, "kernel.package", p.span());
                KernelSource::Package(p.get_ref().clone())
            }
            (None, Some(p)) => {
                lines.mark(self, "kernel.path", p.span());
                KernelSource::Path {
                    vmlinuz: PathBuf::from(p.get_ref()),
                    modules_dir: k.modules_dir.as_ref().map(|m| PathBuf::from(m.get_ref())),
                }
            }
            (Some(p), Some(_)) => {
                return Err(self.field_err(p, "kernel", "set either package or path, not both"));
            }
            (None, None) => {
                return Err(self.err(
                    Some(span),
                    "kernel: missing kernel (set kernel.package or kernel.path)",
                ));
            }
        };
        let cmdline = k
            .cmdline
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_else(|| "console=ttyS0".into());
        if let Some(c) = &k.cmdline {
            if c.get_ref().contains('\n') || c.get_ref().len() > 2048 {
                return Err(self.field_err(
                    c,
                    "kernel.cmdline",
                    "must be one line of at most 2048 bytes",
                ));
            }
            lines.mark(self, "kernel.cmdline", c.span());
        }
        let mut modules = Vec::new();
        for (i, m) in k.modules.iter().enumerate() {
            let ok = !m.get_ref().is_empty()
                && m.get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(self.field_err(
                    m,
                    &format!("kernel.modules[{i}]"),
                    "not a module name",
                ));
            }
            lines.mark(self, &format!("kernel.modules.{i}"), m.span());
            modules.push(m.get_ref().replace('-', "_"));
        }
        if let Some(u) = &k.uki {
            lines.mark(self, "kernel.uki", u.span());
        }
        Ok(KernelSpec {
            source,
            cmdline,
            modules,
            uki: k.uki.as_ref().is_some_and(|u| *u.get_ref()),
        })
    }

    /// `[rootfs]`
    fn rootfs(&self, raw: &raw::RawRootfs, lines: &mut Lines) -> Result<RootfsSpec, RecipeError> {
        let mut rootfs = RootfsSpec::default();
        if let Some(s) = &raw.size {
            rootfs.size = Some(self.size(s, "rootfs.size")?);
            lines.mark(self, "rootfs.size", s.span());
        }
        for (i, p) in raw.packages.iter().enumerate() {
            if !is_package_name(p.get_ref()) {
                return Err(self.field_err(
                    p,
                    &format!("rootfs.packages[{i}]"),
                    "not a Debian package name",
                ));
            }
            lines.mark(self, &format!("rootfs.packages.{i}"), p.span());
            rootfs.packages.push(p.get_ref().clone());
        }
        for (i, f) in raw.files.iter().enumerate() {
            let field = format!("rootfs.files[{i}]");
            let fr = f.get_ref();
            lines.mark(self, &format!("rootfs.files.{i}"), f.span());
            let dst = fr.dst.get_ref();
            if !dst.starts_with('/') || dst.split('/').any(|c| c == "..") || dst == "/" {
                return Err(self.field_err(
                    &fr.dst,
                    &format!("{field}.dst"),
                    "must be an absolute path below / without '..'",
                ));
            }
            let source = match (&fr.src, &fr.content) {
                (Some(s), None) => FileSource::Host(PathBuf::from(s.get_ref())),
                (None, Some(c)) => FileSource::Inline(c.clone()),
                _ => return Err(self.field_err(f, &field, "set exactly one of src and content")),
            };
            let mode = match &fr.mode {
                Some(m) => Some(
                    u16::from_str_radix(m.get_ref().trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|v| *v <= 0o7777)
                        .ok_or_else(|| {
                            self.field_err(
                                m,
                                &format!("{field}.mode"),
                                format!("invalid octal mode {:?}", m.get_ref()),
                            )
                        })?,
                ),
                None => None,
            };
            rootfs.files.push(FileSpec {
                source,
                dst: dst.clone(),
                mode,
            });
        }
        for (i, b) in raw.binaries.iter().enumerate() {
            if !b.get_ref().starts_with('/') {
                return Err(self.field_err(
                    b,
                    &format!("rootfs.binaries[{i}]"),
                    "must be an absolute host path",
                ));
            }
            lines.mark(self, &format!("rootfs.binaries.{i}"), b.span());
            rootfs.binaries.push(PathBuf::from(b.get_ref()));
        }
        for (i, d) in raw.debs.iter().enumerate() {
            lines.mark(self, &format!("rootfs.debs.{i}"), d.span());
            rootfs
                .debs
                .extend(self.local_debs(d, &format!("rootfs.debs[{i}]"))?);
        }
        if let Some(b) = &raw.base {
            lines.mark(self, "rootfs.base", b.span());
            rootfs.base = Some(self.layer(b, "rootfs.base")?);
        }
        for (i, l) in raw.layers.iter().enumerate() {
            lines.mark(self, &format!("rootfs.layers.{i}"), l.span());
            rootfs
                .layers
                .push(self.layer(l, &format!("rootfs.layers[{i}]"))?);
        }

        Ok(rootfs)
    }

    /// One `debs` entry: a .deb file, or a directory whose `*.deb` files are
    /// taken in name order.
    fn local_debs(&self, d: &Spanned<String>, field: &str) -> Result<Vec<PathBuf>, RecipeError> {
        let rel = PathBuf::from(d.get_ref());
        let host = self.host_path(&rel);
        let md = std::fs::metadata(&host).map_err(|e| {
            self.field_err(d, field, format!("cannot read {}: {e}", host.display()))
        })?;
        if md.is_file() {
            if host.extension().is_none_or(|x| x != "deb") {
                return Err(self.field_err(d, field, format!("{} is not a .deb", host.display())));
            }
            return Ok(vec![rel]);
        }
        let listing = std::fs::read_dir(&host).map_err(|e| {
            self.field_err(d, field, format!("cannot list {}: {e}", host.display()))
        })?;
        let mut names: Vec<PathBuf> = listing
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(".deb"))
            .map(|n| rel.join(n))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(self.field_err(
                d,
                field,
                format!("{} holds no .deb files", host.display()),
            ));
        }
        Ok(names)
    }

    /// A `base` or `layers` entry: `oci:DIR`, `docker-archive:FILE` or a tar
    /// file; the path must exist.
    fn layer(&self, l: &Spanned<String>, field: &str) -> Result<Layer, RecipeError> {
        let v = l.get_ref();
        let (kind, path) = if let Some(p) = v.strip_prefix("oci:") {
            (LayerKind::Oci, p)
        } else if let Some(p) = v.strip_prefix("docker-archive:") {
            (LayerKind::DockerArchive, p)
        } else {
            (LayerKind::Tar, v.as_str())
        };
        let path = PathBuf::from(path);
        let host = self.host_path(&path);
        let md = std::fs::metadata(&host).map_err(|e| {
            self.field_err(l, field, format!("cannot read {}: {e}", host.display()))
        })?;
        let want_dir = kind == LayerKind::Oci;
        if md.is_dir() != want_dir {
            let what = if want_dir {
                "an OCI image layout directory"
            } else {
                "a file"
            };
            return Err(self.field_err(l, field, format!("{} is not {what}", host.display())));
        }
        Ok(Layer {
            kind,
            path,
            field: field.to_string(),
        })
    }

    /// `overlays`: directories with their default owner and manifest.
    fn overlays(
        &self,
        raw: &[Spanned<raw::RawOverlay>],
        users: &[User],
        groups: &[Group],
        lines: &mut Lines,
    ) -> Result<Vec<Overlay>, RecipeError> {
        let mut out = Vec::new();
        for (i, o) in raw.iter().enumerate() {
            let field = format!("rootfs.overlays[{i}]");
            lines.mark(self, &format!("rootfs.overlays.{i}"), o.span());
            let (src, owner, group, manifest) = match o.get_ref() {
                raw::RawOverlay::Path(p) => (p.clone(), None, None, None),
                raw::RawOverlay::Table(t) => (
                    t.src.clone(),
                    t.owner.as_deref(),
                    t.group.as_deref(),
                    t.manifest.as_deref(),
                ),
            };
            let host = self.host_path(Path::new(&src));
            if !host.is_dir() {
                return Err(self.field_err(
                    o,
                    &field,
                    format!("{} is not a directory", host.display()),
                ));
            }
            let uid = match owner {
                Some(u) => resolve_user(u, users).ok_or_else(|| {
                    self.field_err(
                        o,
                        &format!("{field}.owner"),
                        format!("no [[user]] named {u:?} (or a number)"),
                    )
                })?,
                None => 0,
            };
            let gid = match (group, owner) {
                (Some(g), _) => resolve_group(g, groups).ok_or_else(|| {
                    self.field_err(
                        o,
                        &format!("{field}.group"),
                        format!("no [[group]] named {g:?} (or a number)"),
                    )
                })?,
                // The owner's primary group, as every overlay author expects.
                (None, Some(u)) => users
                    .iter()
                    .find(|x| x.name == u)
                    .map(|x| x.gid)
                    .unwrap_or(uid),
                (None, None) => 0,
            };
            let manifest = match manifest {
                Some(m) => {
                    let p = PathBuf::from(m);
                    let h = self.host_path(&p);
                    if !h.is_file() {
                        return Err(self.field_err(
                            o,
                            &format!("{field}.manifest"),
                            format!("cannot read {}", h.display()),
                        ));
                    }
                    Some(p)
                }
                None => None,
            };
            out.push(Overlay {
                src: PathBuf::from(src),
                uid,
                gid,
                manifest,
                field,
            });
        }
        Ok(out)
    }

    /// Every `[[service]] user` names a declared user (or root).
    fn service_users(
        &self,
        raw: &[Spanned<raw::RawService>],
        users: &[User],
    ) -> Result<(), RecipeError> {
        for (i, s) in raw.iter().enumerate() {
            if let Some(u) = &s.get_ref().user {
                if u.get_ref() != "root" && !users.iter().any(|x| &x.name == u.get_ref()) {
                    return Err(self.field_err(
                        u,
                        &format!("service[{i}].user"),
                        format!("no [[user]] named {:?}", u.get_ref()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A recipe path on the host: absolute, or relative to the recipe.
    fn host_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            match self.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.join(p),
                _ => p.to_path_buf(),
            }
        }
    }

    /// `[[service]]`
    fn services(&self, raw: &[Spanned<raw::RawService>]) -> Result<Vec<Service>, RecipeError> {
        let mut services = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let sr = s.get_ref();
            let field = format!("service[{i}]");
            let name = sr.name.get_ref();
            let ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(self.field_err(
                    &sr.name,
                    &format!("{field}.name"),
                    "use 1-32 letters, digits, '-' or '_'",
                ));
            }
            if services.iter().any(|x: &Service| &x.name == name) {
                return Err(self.field_err(
                    &sr.name,
                    &format!("{field}.name"),
                    format!("duplicate service {name:?}"),
                ));
            }
            if sr.exec.get_ref().trim().is_empty() || sr.exec.get_ref().contains('\n') {
                return Err(self.field_err(
                    &sr.exec,
                    &format!("{field}.exec"),
                    "must be one non-empty line",
                ));
            }
            let restart = match sr.restart.as_ref().map(|r| r.get_ref().as_str()) {
                None | Some("always") => Restart::Always,
                Some("never") => Restart::Never,
                Some(other) => {
                    return Err(self.field_err(
                        sr.restart.as_ref().unwrap_or(&sr.name),
                        &format!("{field}.restart"),
                        format!("unknown policy {other:?} (always or never)"),
                    ));
                }
            };
            if sr.wait && restart == Restart::Always && sr.restart.is_some() {
                return Err(self.field_err(s, &field, "wait = true needs restart = \"never\""));
            }
            services.push(Service {
                name: name.clone(),
                exec: sr.exec.get_ref().clone(),
                restart: if sr.wait { Restart::Never } else { restart },
                wait: sr.wait,
                after: sr.after.iter().map(|a| a.get_ref().clone()).collect(),
                user: sr.user.as_ref().map(|u| u.get_ref().clone()),
            });
        }
        for (i, s) in raw.iter().enumerate() {
            let sr = s.get_ref();
            for (j, a) in sr.after.iter().enumerate() {
                let field = format!("service[{i}].after[{j}]");
                let Some(dep) = services.iter().find(|x| &x.name == a.get_ref()) else {
                    return Err(self.field_err(
                        a,
                        &field,
                        format!("no service named {:?}", a.get_ref()),
                    ));
                };
                if dep.name == services[i].name {
                    return Err(self.field_err(a, &field, "a service cannot start after itself"));
                }
                if services[i].wait && !dep.wait {
                    return Err(self.field_err(
                        a,
                        &field,
                        format!(
                            "wait = true services finish before the others start, so it cannot start after {:?} (no wait)",
                            dep.name
                        ),
                    ));
                }
            }
        }
        let services = order_services(services).map_err(|name| {
            let span = raw
                .iter()
                .find(|s| s.get_ref().name.get_ref() == &name)
                .map(|s| s.span());
            self.err(
                span,
                format!("service: {name:?} is part of an `after` cycle"),
            )
        })?;

        Ok(services)
    }

    /// `[health]`
    fn health(&self, raw: Option<&raw::RawHealth>) -> Result<HealthSpec, RecipeError> {
        Ok(match raw {
            Some(h) => {
                if h.command.get_ref().trim().is_empty() {
                    return Err(self.field_err(&h.command, "health.command", "must not be empty"));
                }
                let timeout = match &h.timeout {
                    Some(t) => self.duration(t, "health.timeout")?,
                    None => Duration::from_secs(30),
                };
                let watchdog = match &h.watchdog {
                    Some(t) => self.duration(t, "health.watchdog")?,
                    None => {
                        let retries = h
                            .retries
                            .as_ref()
                            .map_or(0, |r| (*r.get_ref()).clamp(0, 100) as u32);
                        let interval = h
                            .interval
                            .as_ref()
                            .and_then(|i| parse_duration(i.get_ref()))
                            .unwrap_or(Duration::from_secs(1));
                        timeout * (retries + 1) + interval * retries + Duration::from_secs(60)
                    }
                };
                if watchdog <= timeout {
                    let span = h.watchdog.as_ref().map(|w| w.span());
                    return Err(
                        self.err(span, "health.watchdog: must be longer than health.timeout")
                    );
                }
                let retries = match &h.retries {
                    Some(r) if !(0..=100).contains(r.get_ref()) => {
                        return Err(self.field_err(r, "health.retries", "must be 0-100"));
                    }
                    Some(r) => *r.get_ref() as u32,
                    None => 0,
                };
                let interval = match &h.interval {
                    Some(t) => self.duration(t, "health.interval")?,
                    None => Duration::from_secs(1),
                };
                // The watchdog covers the whole verdict: every attempt and pause.
                let worst = timeout * (retries + 1) + interval * retries;
                if watchdog <= worst {
                    let span = h
                        .watchdog
                        .as_ref()
                        .map(|w| w.span())
                        .or(h.retries.as_ref().map(|r| r.span()));
                    return Err(self.err(
                        span,
                        format!(
                            "health.watchdog: must be longer than all attempts of the check ({} s = {} x timeout + {} x interval)",
                            worst.as_secs_f64(),
                            retries + 1,
                            retries
                        ),
                    ));
                }
                HealthSpec {
                    command: h.command.get_ref().clone(),
                    timeout,
                    retries,
                    interval,
                    watchdog,
                }
            }
            None => HealthSpec {
                command: "true".into(),
                timeout: Duration::from_secs(30),
                retries: 0,
                interval: Duration::from_secs(1),
                watchdog: Duration::from_secs(90),
            },
        })
    }

    /// `[disk]`
    fn disk(&self, raw: &raw::RawDisk, lines: &mut Lines) -> Result<DiskSpec, RecipeError> {
        let mut disk = DiskSpec {
            esp: Bytes(64 << 20),
            slot: Bytes(512 << 20),
            data: Bytes(256 << 20),
        };
        for (field, v, slot) in [
            ("disk.esp", &raw.esp, &mut disk.esp),
            ("disk.slot", &raw.slot, &mut disk.slot),
            ("disk.data", &raw.data, &mut disk.data),
        ] {
            if let Some(v) = v {
                let b = self.size(v, field)?;
                if b.get() < (1 << 20) {
                    return Err(self.field_err(v, field, "must be at least 1M"));
                }
                *slot = b;
                lines.mark(self, field, v.span());
            }
        }

        Ok(disk)
    }

    /// `[update]`
    fn update(&self, raw: &raw::RawUpdate, lines: &mut Lines) -> Result<UpdateSpec, RecipeError> {
        let mut update = UpdateSpec {
            enabled: true,
            public_keys: Vec::new(),
            threshold: 1,
            security_version: 0,
            tries: 3,
        };
        for (i, k) in raw.public_keys.iter().enumerate() {
            lines.mark(self, &format!("update.public_keys.{i}"), k.span());
            update.public_keys.push(PathBuf::from(k.get_ref()));
        }
        if let Some(e) = &raw.enabled {
            lines.mark(self, "update.enabled", e.span());
            update.enabled = *e.get_ref();
            if !update.enabled && !update.public_keys.is_empty() {
                return Err(self.field_err(
                    e,
                    "update.enabled",
                    "false, but public_keys are listed: remove them or the enabled = false",
                ));
            }
        }
        if let Some(t) = &raw.threshold {
            if *t.get_ref() == 0 || *t.get_ref() as usize > update.public_keys.len().max(1) {
                return Err(self.field_err(
                    t,
                    "update.threshold",
                    "must be between 1 and the number of public keys",
                ));
            }
            update.threshold = *t.get_ref();
        }
        if let Some(s) = &raw.security_version {
            update.security_version = u64::try_from(*s.get_ref()).map_err(|_| {
                self.field_err(s, "update.security_version", "must not be negative")
            })?;
        }
        if let Some(t) = &raw.tries {
            if !(1..=9).contains(t.get_ref()) {
                return Err(self.field_err(t, "update.tries", "must be 1-9"));
            }
            update.tries = *t.get_ref() as u32;
        }

        Ok(update)
    }

    /// `[apt]`
    fn apt(&self, a: &raw::RawApt, lines: &mut Lines) -> Result<AptSpec, RecipeError> {
        let mut apt = Recipe::default_apt();
        for (v, slot) in [
            (&a.mirror, &mut apt.mirror),
            (&a.security_mirror, &mut apt.security_mirror),
            (&a.suite, &mut apt.suite),
            (&a.architecture, &mut apt.architecture),
        ] {
            if let Some(v) = v {
                *slot = v.get_ref().clone();
            }
        }
        if let Some(c) = &a.components {
            apt.components = c.iter().map(|c| c.get_ref().clone()).collect();
        }
        if let Some(k) = &a.keyring {
            apt.keyring = PathBuf::from(k.get_ref());
        }

        for (field, v) in [
            ("apt.mirror", &a.mirror),
            ("apt.security_mirror", &a.security_mirror),
            ("apt.snapshot_mirror", &a.snapshot_mirror),
        ] {
            if let Some(v) = v {
                let ok = v.get_ref().is_empty() && field == "apt.security_mirror"
                    || (v.get_ref().starts_with("http://") || v.get_ref().starts_with("https://"))
                        && !v.get_ref().contains(char::is_whitespace);
                if !ok {
                    return Err(self.field_err(v, field, "must be an http:// or https:// URL"));
                }
                lines.mark(self, field, v.span());
            }
        }
        if let Some(m) = &a.snapshot_mirror {
            apt.snapshot_mirror = m.get_ref().trim_end_matches('/').to_string();
        }
        if let Some(t) = &a.snapshot {
            if !is_snapshot_timestamp(t.get_ref()) {
                return Err(self.field_err(
                    t,
                    "apt.snapshot",
                    format!(
                        "invalid timestamp {:?} (expected YYYYMMDDTHHMMSSZ, e.g. 20261125T000000Z)",
                        t.get_ref()
                    ),
                ));
            }
            lines.mark(self, "apt.snapshot", t.span());
            apt.snapshot = Some(t.get_ref().clone());
        }
        if let Some(v) = &a.vendor {
            if v.get_ref().is_empty() {
                return Err(self.field_err(v, "apt.vendor", "must not be empty"));
            }
            lines.mark(self, "apt.vendor", v.span());
            apt.vendor = Some(PathBuf::from(v.get_ref()));
        }
        Ok(apt)
    }
}

impl Cx<'_> {
    /// `[[user]]` and `[[group]]`: names unique and valid, ids unique and not
    /// 0 (root exists already), groups referenced exist.
    fn accounts(
        &self,
        raw_users: &[Spanned<raw::RawUser>],
        raw_groups: &[Spanned<raw::RawGroup>],
    ) -> Result<(Vec<User>, Vec<Group>), RecipeError> {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 32
                && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c))
        };
        let mut groups: Vec<Group> = Vec::new();
        for (i, g) in raw_groups.iter().enumerate() {
            let g = g.get_ref();
            let field = format!("group[{i}]");
            if !valid_name(g.name.get_ref()) || ["root", "tty"].contains(&g.name.get_ref().as_str())
            {
                return Err(self.field_err(
                    &g.name,
                    &format!("{field}.name"),
                    "use 1-32 of a-z, 0-9, '-', '_' starting with a letter (not root or tty)",
                ));
            }
            if groups.iter().any(|x| &x.name == g.name.get_ref()) {
                return Err(self.field_err(&g.name, &format!("{field}.name"), "duplicate group"));
            }
            if [0, 5].contains(g.gid.get_ref()) || groups.iter().any(|x| x.gid == *g.gid.get_ref())
            {
                return Err(self.field_err(
                    &g.gid,
                    &format!("{field}.gid"),
                    "must be unique and not 0 (root) or 5 (tty)",
                ));
            }
            groups.push(Group {
                name: g.name.get_ref().clone(),
                gid: *g.gid.get_ref(),
                members: Vec::new(),
            });
        }
        let mut users: Vec<User> = Vec::new();
        for (i, u) in raw_users.iter().enumerate() {
            let u = u.get_ref();
            let field = format!("user[{i}]");
            let name = u.name.get_ref();
            if !valid_name(name) || name == "root" {
                return Err(self.field_err(
                    &u.name,
                    &format!("{field}.name"),
                    "use 1-32 of a-z, 0-9, '-', '_' starting with a letter (not root)",
                ));
            }
            if users.iter().any(|x| &x.name == name) {
                return Err(self.field_err(&u.name, &format!("{field}.name"), "duplicate user"));
            }
            if *u.uid.get_ref() == 0 || users.iter().any(|x| x.uid == *u.uid.get_ref()) {
                return Err(self.field_err(
                    &u.uid,
                    &format!("{field}.uid"),
                    "must be unique and not 0",
                ));
            }
            let gid = match &u.group {
                Some(g) => groups
                    .iter()
                    .find(|x| &x.name == g.get_ref())
                    .map(|x| x.gid)
                    .ok_or_else(|| {
                        self.field_err(
                            g,
                            &format!("{field}.group"),
                            format!("no [[group]] named {:?}", g.get_ref()),
                        )
                    })?,
                None => {
                    // A group of the user's own name, with the uid as gid.
                    if name == "tty"
                        || *u.uid.get_ref() == 5
                        || groups
                            .iter()
                            .any(|x| &x.name == name || x.gid == *u.uid.get_ref())
                    {
                        return Err(self.field_err(
                            &u.name,
                            &format!("{field}.group"),
                            "a group with this name or id exists: set group explicitly",
                        ));
                    }
                    groups.push(Group {
                        name: name.clone(),
                        gid: *u.uid.get_ref(),
                        members: Vec::new(),
                    });
                    *u.uid.get_ref()
                }
            };
            for (j, g) in u.groups.iter().enumerate() {
                let Some(grp) = groups.iter_mut().find(|x| &x.name == g.get_ref()) else {
                    return Err(self.field_err(
                        g,
                        &format!("{field}.groups[{j}]"),
                        format!("no [[group]] named {:?}", g.get_ref()),
                    ));
                };
                grp.members.push(name.clone());
            }
            let abs = |v: &Spanned<String>, f: &str| -> Result<String, RecipeError> {
                let p = v.get_ref();
                if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p.contains(':') {
                    return Err(self.field_err(
                        v,
                        &format!("{field}.{f}"),
                        "must be an absolute path without '..' or ':'",
                    ));
                }
                Ok(p.clone())
            };
            let home = match &u.home {
                Some(h) => abs(h, "home")?,
                None => "/nonexistent".into(),
            };
            let shell = match &u.shell {
                Some(s) => abs(s, "shell")?,
                None => "/sbin/nologin".into(),
            };
            users.push(User {
                name: name.clone(),
                uid: *u.uid.get_ref(),
                gid,
                home,
                shell,
            });
        }
        Ok((users, groups))
    }
}

/// Orders services so each comes after those in its `after` list (a stable
/// topological sort: otherwise recipe order). `Err(name)` names a service in
/// a cycle.
fn order_services(services: Vec<Service>) -> Result<Vec<Service>, String> {
    let mut left = services;
    let mut out: Vec<Service> = Vec::new();
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|s| s.after.iter().all(|a| out.iter().any(|o| &o.name == a)));
        match ready {
            Some(i) => out.push(left.remove(i)),
            None => return Err(left[0].name.clone()),
        }
    }
    Ok(out)
}

/// Recipe line of each field that was written, by dotted field name.
#[derive(Default)]
struct Lines(BTreeMap<String, usize>);

impl Lines {
    fn mark(&mut self, cx: &Cx<'_>, field: &str, span: Range<usize>) {
        self.0.insert(field.to_string(), cx.line_of(span.start));
    }
}

/// A user name or number: its uid.
fn resolve_user(name: &str, users: &[User]) -> Option<u32> {
    resolve_id(name, users.iter().map(|u| (u.name.as_str(), u.uid)))
}

/// A group name or number: its gid.
fn resolve_group(name: &str, groups: &[Group]) -> Option<u32> {
    resolve_id(name, groups.iter().map(|g| (g.name.as_str(), g.gid)))
}

/// `root` is 0, a declared name its id, a number itself.
fn resolve_id<'a>(name: &str, mut declared: impl Iterator<Item = (&'a str, u32)>) -> Option<u32> {
    if name == "root" {
        return Some(0);
    }
    declared
        .find(|(n, _)| *n == name)
        .map(|(_, id)| id)
        .or_else(|| name.parse().ok())
}

/// `[image]`, validated.
struct ImageSpec {
    name: String,
    version: Version,
    compatible: String,
}

/// `rootfs.packages.2` -> `rootfs.packages[2]`, `rootfs.files.0.src` ->
/// `rootfs.files[0].src`.
fn display_field(key: &str) -> String {
    let mut out = String::new();
    for part in key.split('.') {
        if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// `YYYYMMDDTHHMMSSZ`, the timestamp form of snapshot.debian.org.
pub fn is_snapshot_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Parses `30s`, `2m`, `500ms`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[image]
name = "minimal"
version = "1.0.0"
compatible = "slate-qemu-x86_64"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet"
modules = ["virtio_pci", "virtio-blk"]

[rootfs]
packages = ["busybox-static"]
files = [{ dst = "/etc/motd", content = "hi\n", mode = "0644" }]

[[service]]
name = "hello"
exec = "echo hi"

[health]
command = "true"
timeout = "5s"

[disk]
slot = "128M"

[update]
public_keys = ["keys/dev.pub"]
security_version = 2
"#;

    fn parse(text: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse(Path::new("recipes/t.toml"), text)
    }

    #[test]
    fn type_errors_name_the_field() {
        for (from, to, want) in [
            (
                "slot = \"128M\"",
                "slot = 128",
                "t.toml:25: disk.slot: invalid type: integer",
            ),
            (
                "security_version = 2",
                "security_version = \"2\"",
                "update.security_version:",
            ),
            (
                "packages = [\"busybox-static\"]",
                "packages = \"busybox-static\"",
                "rootfs.packages:",
            ),
            (
                "exec = \"echo hi\"",
                "exec = [1]",
                "t.toml:18: service[0].exec: invalid type",
            ),
            (
                "[disk]",
                "[disk]\nslots = 3",
                "disk.slots: unknown field `slots`",
            ),
        ] {
            let e = parse(&GOOD.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    #[test]
    fn parses_a_full_recipe() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.name, "minimal");
        assert_eq!(r.kernel.modules, ["virtio_pci", "virtio_blk"]);
        assert_eq!(r.disk.slot, Bytes(128 << 20));
        assert_eq!(r.disk.esp, Bytes(64 << 20));
        assert_eq!(r.health.timeout, Duration::from_secs(5));
        assert_eq!(r.update.security_version, 2);
        assert_eq!(r.services[0].restart, Restart::Always);
        assert_eq!(r.location("disk.slot"), "recipes/t.toml:25");
        assert_eq!(r.location("rootfs.packages.0"), "recipes/t.toml:13");
        assert_eq!(r.location("rootfs.files.0.src"), "recipes/t.toml:14");
        assert_eq!(display_field("rootfs.files.0.src"), "rootfs.files[0].src");
        assert_eq!(
            display_field("update.public_keys.1"),
            "update.public_keys[1]"
        );
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let e = parse(&GOOD.replace("slot = \"128M\"", "slot = \"128M\"\nslots = 2"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("recipes/t.toml:26:"), "{e}");
        assert!(e.contains("unknown field `slots`"), "{e}");
    }

    #[test]
    fn secure_boot_needs_unified_images() {
        let sb = "\n[secure_boot]\nkey = \"sb/db.key\"\ncert = \"sb/db.crt\"\n";
        let e = parse(&format!("{GOOD}{sb}")).unwrap_err().to_string();
        assert!(e.contains("secure_boot: needs kernel.uki = true"), "{e}");
        let uki = GOOD.replace("[kernel]\n", "[kernel]\nuki = true\n");
        let r = parse(&format!("{uki}{sb}")).unwrap();
        assert!(r.kernel.uki);
        let spec = r.secure_boot.unwrap();
        assert_eq!(spec.cert, PathBuf::from("sb/db.crt"));
        let e = parse(&format!("{uki}\n[secure_boot]\nkey = \"k\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cert"), "{e}");
    }

    #[test]
    fn missing_kernel() {
        let text = GOOD.replace(
            "[kernel]\npackage = \"linux-image-cloud-amd64\"\n",
            "[kernel]\n",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("recipes/t.toml:7: kernel: missing kernel"),
            "{e}"
        );
        let start = GOOD.find("[kernel]").unwrap();
        let end = GOOD.find("[rootfs]").unwrap();
        let text = format!("{}{}", &GOOD[..start], &GOOD[end..]);
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("missing [kernel] section"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                "slot = \"128M\"",
                "slot = \"12Q\"",
                "disk.slot: invalid size",
            ),
            (
                "timeout = \"5s\"",
                "timeout = \"soon\"",
                "health.timeout: invalid duration",
            ),
            (
                "version = \"1.0.0\"",
                "version = \"1 0\"",
                "image.version: invalid version",
            ),
            (
                "mode = \"0644\"",
                "mode = \"999\"",
                "mode: invalid octal mode",
            ),
            (
                "\"busybox-static\"",
                "\"Busybox\"",
                "rootfs.packages[0]: not a Debian package name",
            ),
        ];
        for (from, to, want) in cases {
            let e = parse(&GOOD.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(want), "{to}: {e}");
            assert!(e.starts_with("recipes/t.toml:"), "{e}");
        }
    }

    #[test]
    fn apt_keys_are_checked_with_file_line_and_field() {
        let with = |apt: &str| parse(&format!("{GOOD}\n[apt]\n{apt}\n"));
        let r = with("snapshot = \"20261125T000000Z\"\nvendor = \"vendor/m\"").unwrap();
        assert_eq!(r.apt.snapshot.as_deref(), Some("20261125T000000Z"));
        assert_eq!(r.apt.vendor, Some(PathBuf::from("vendor/m")));
        assert_eq!(r.location("apt.vendor"), "recipes/t.toml:33");
        let cases = [
            (
                "snapshot = \"2026-11-25\"",
                "recipes/t.toml:32: apt.snapshot: invalid timestamp",
            ),
            (
                "mirror = \"ftp://x\"",
                "recipes/t.toml:32: apt.mirror: must be an http",
            ),
            (
                "snapshot_mirror = \"\"",
                "recipes/t.toml:32: apt.snapshot_mirror: must be an http",
            ),
            (
                "vendor = \"\"",
                "recipes/t.toml:32: apt.vendor: must not be empty",
            ),
        ];
        for (line, want) in cases {
            let e = with(line).unwrap_err().to_string();
            assert!(e.starts_with(want), "{line}: {e}");
        }
        assert!(with("security_mirror = \"\"").is_ok(), "empty disables it");
    }

    #[test]
    fn users_and_groups_are_checked() {
        let r = parse(&format!(
            "{GOOD}\n[[group]]\nname = \"app\"\ngid = 900\n\n[[user]]\nname = \"svc\"\nuid = 901\ngroups = [\"app\"]\nhome = \"/data/svc\"\n"
        ))
        .unwrap();
        assert_eq!(r.users[0].gid, 901, "own group by default");
        assert_eq!(r.groups[0].members, ["svc"]);
        assert_eq!(r.groups[1].name, "svc");
        assert_eq!(r.users[0].shell, "/sbin/nologin");
        let cases = [
            (
                "[[user]]\nname = \"Bad\"\nuid = 7",
                "recipes/t.toml:32: user[0].name: use",
            ),
            (
                "[[user]]\nname = \"a\"\nuid = 0",
                "recipes/t.toml:33: user[0].uid: must be unique",
            ),
            (
                "[[user]]\nname = \"a\"\nuid = 7\ngroup = \"x\"",
                "recipes/t.toml:34: user[0].group: no [[group]]",
            ),
            (
                "[[user]]\nname = \"a\"\nuid = 5",
                "recipes/t.toml:32: user[0].group: a group with this name or id exists",
            ),
            (
                "[[user]]\nname = \"a\"\nuid = 7\nhome = \"rel\"",
                "recipes/t.toml:34: user[0].home: must be an absolute",
            ),
            (
                "[[group]]\nname = \"g\"\ngid = 0",
                "recipes/t.toml:33: group[0].gid: must be unique",
            ),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{GOOD}\n{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{extra}: {e}");
        }
    }

    #[test]
    fn type_errors_name_their_field() {
        // Issue 11: "invalid type: string \"3\", expected i64" alone does
        // not say which of the recipe's values is wrong.
        for (from, to, want) in [
            (
                "security_version = 2",
                "security_version = \"2\"",
                "update.security_version: invalid type",
            ),
            (
                "timeout = \"5s\"",
                "timeout = 5",
                "health.timeout: invalid type",
            ),
            (
                "exec = \"echo hi\"",
                "exec = [\"echo\"]",
                "service[0].exec: invalid type",
            ),
            (
                "mode = \"0644\"",
                "mode = 644",
                "rootfs.files[0].mode: invalid type",
            ),
        ] {
            let e = parse(&GOOD.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(want), "{to}: {e}");
            assert!(e.starts_with("recipes/t.toml:"), "{e}");
        }
    }

    #[test]
    fn health_retries_and_service_order() {
        let text = GOOD.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\nretries = 4\ninterval = \"2s\"",
        );
        let r = parse(&text).unwrap();
        assert_eq!(
            (r.health.retries, r.health.interval),
            (4, Duration::from_secs(2))
        );
        // The default watchdog covers every attempt.
        assert!(r.health.watchdog > Duration::from_secs(5 * 5 + 4 * 2));
        let e = parse(&text.replace("interval = \"2s\"", "interval = \"2s\"\nwatchdog = \"20s\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("health.watchdog: must be longer than all attempts"),
            "{e}"
        );

        let svc = |name: &str, after: &str| {
            format!("[[service]]\nname = \"{name}\"\nexec = \"x\"\nafter = [{after}]\n")
        };
        let base = GOOD.replace("[[service]]\nname = \"hello\"\nexec = \"echo hi\"\n", "");
        let text = format!(
            "{base}{}{}{}",
            svc("web", "\"db\", \"cache\""),
            svc("db", ""),
            svc("cache", "\"db\"")
        );
        let r = parse(&text).unwrap();
        let names: Vec<&str> = r.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "cache", "web"]);
        let e = parse(&format!("{base}{}", svc("web", "\"nope\"")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("service[0].after[0]: no service named \"nope\""),
            "{e}"
        );
        let e = parse(&format!("{base}{}{}", svc("a", "\"b\""), svc("b", "\"a\"")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("x"), None);
    }
}
