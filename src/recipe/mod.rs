//! Recipes: the TOML files that declare an image (docs/recipe.md).
//!
//! Loading happens in stages: [`raw`] parses the TOML as written (unknown
//! keys are errors), then [`Recipe::load`] applies defaults and validates every
//! value, reporting problems as `file:line: field: message`.

mod raw;

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
}

/// `[health]`
#[derive(Debug, Clone)]
pub struct HealthSpec {
    /// Shell command; exit 0 means healthy.
    pub command: String,
    /// How long the check may run.
    pub timeout: Duration,
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
    lines: BTreeMap<String, usize>,
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
            let message = e.message().trim().to_string();
            // Name the field too, as every other recipe error does.
            match e.span().and_then(|s| field_at(text, s.start)) {
                Some(field) => cx.err(e.span(), format!("{field}: {message}")),
                None => cx.err(e.span(), message),
            }
        })?;
        cx.validate(raw)
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
        match self.lines.get(field) {
            Some(line) => format!("{}:{line}", self.path.display()),
            None => self.path.display().to_string(),
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
        }
    }
}

/// The dotted field (`disk.slot`, `rootfs.files[1].src`) whose key or table
/// header is on the line of byte `offset`, or the nearest one above it.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let end = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    let mut key = None;
    let mut table = None;
    let upto = &text[..line_end];
    for line in upto.lines().rev().map(str::trim) {
        if let Some(h) = line.strip_prefix('[') {
            let array = h.starts_with('[');
            let name = h.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            table = Some(if array {
                let header = format!("[[{name}]]");
                let n = upto.lines().filter(|l| l.trim() == header).count();
                format!("{name}[{}]", n.saturating_sub(1))
            } else {
                name
            });
            break;
        }
        if key.is_none() && !line.starts_with('#') {
            if let Some((k, _)) = line.split_once('=') {
                let k = k.trim();
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    key = Some(k.to_string());
                }
            }
        }
    }
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (Some(t), None) => Some(t),
        (None, k) => k,
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

    fn validate(&self, raw: RawRecipe) -> Result<Recipe, RecipeError> {
        let mut lines = BTreeMap::new();
        let mut mark = |field: &str, span: Range<usize>| {
            lines.insert(field.to_string(), self.line_of(span.start));
        };

        let image_span = raw.image.span();
        let image = raw.image.into_inner();
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
        mark("image.name", image.name.span());
        let version: Version = image
            .version
            .get_ref()
            .parse()
            .map_err(|e| self.field_err(&image.version, "image.version", e))?;
        mark("image.version", image.version.span());
        let compatible = match &image.compatible {
            Some(c) if c.get_ref().trim().is_empty() || c.get_ref().len() > 128 => {
                return Err(self.field_err(c, "image.compatible", "must be 1-128 characters"));
            }
            Some(c) => c.get_ref().clone(),
            None => format!("slate-{name}"),
        };

        let kernel = match raw.kernel {
            None => {
                return Err(self.err(
                    Some(image_span),
                    "kernel: missing [kernel] section (set kernel.package or kernel.path)",
                ));
            }
            Some(k) => {
                let span = k.span();
                let k = k.into_inner();
                mark("kernel", span.clone());
                let source = match (&k.package, &k.path) {
                    (Some(p), None) => {
                        if !is_package_name(p.get_ref()) {
                            return Err(self.field_err(
                                p,
                                "kernel.package",
                                "not a Debian package name",
                            ));
                        }
                        mark("kernel.package", p.span());
                        KernelSource::Package(p.get_ref().clone())
                    }
                    (None, Some(p)) => {
                        mark("kernel.path", p.span());
                        KernelSource::Path {
                            vmlinuz: PathBuf::from(p.get_ref()),
                            modules_dir: k.modules_dir.as_ref().map(|m| PathBuf::from(m.get_ref())),
                        }
                    }
                    (Some(p), Some(_)) => {
                        return Err(self.field_err(
                            p,
                            "kernel",
                            "set either package or path, not both",
                        ));
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
                    mark("kernel.cmdline", c.span());
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
                    mark(&format!("kernel.modules.{i}"), m.span());
                    modules.push(m.get_ref().replace('-', "_"));
                }
                KernelSpec {
                    source,
                    cmdline,
                    modules,
                }
            }
        };

        let mut rootfs = RootfsSpec::default();
        if let Some(s) = &raw.rootfs.size {
            rootfs.size = Some(self.size(s, "rootfs.size")?);
            mark("rootfs.size", s.span());
        }
        for (i, p) in raw.rootfs.packages.iter().enumerate() {
            if !is_package_name(p.get_ref()) {
                return Err(self.field_err(
                    p,
                    &format!("rootfs.packages[{i}]"),
                    "not a Debian package name",
                ));
            }
            mark(&format!("rootfs.packages.{i}"), p.span());
            rootfs.packages.push(p.get_ref().clone());
        }
        for (i, f) in raw.rootfs.files.iter().enumerate() {
            let field = format!("rootfs.files[{i}]");
            let fr = f.get_ref();
            mark(&format!("rootfs.files.{i}"), f.span());
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
        for (i, b) in raw.rootfs.binaries.iter().enumerate() {
            if !b.get_ref().starts_with('/') {
                return Err(self.field_err(
                    b,
                    &format!("rootfs.binaries[{i}]"),
                    "must be an absolute host path",
                ));
            }
            mark(&format!("rootfs.binaries.{i}"), b.span());
            rootfs.binaries.push(PathBuf::from(b.get_ref()));
        }

        let mut services = Vec::new();
        for (i, s) in raw.service.iter().enumerate() {
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
            });
        }

        let health = match &raw.health {
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
                    None => timeout + Duration::from_secs(60),
                };
                if watchdog <= timeout {
                    let span = h.watchdog.as_ref().map(|w| w.span());
                    return Err(
                        self.err(span, "health.watchdog: must be longer than health.timeout")
                    );
                }
                HealthSpec {
                    command: h.command.get_ref().clone(),
                    timeout,
                    watchdog,
                }
            }
            None => HealthSpec {
                command: "true".into(),
                timeout: Duration::from_secs(30),
                watchdog: Duration::from_secs(90),
            },
        };

        let mut disk = DiskSpec {
            esp: Bytes(64 << 20),
            slot: Bytes(512 << 20),
            data: Bytes(256 << 20),
        };
        for (field, v, slot) in [
            ("disk.esp", &raw.disk.esp, &mut disk.esp),
            ("disk.slot", &raw.disk.slot, &mut disk.slot),
            ("disk.data", &raw.disk.data, &mut disk.data),
        ] {
            if let Some(v) = v {
                let b = self.size(v, field)?;
                if b.get() < (1 << 20) {
                    return Err(self.field_err(v, field, "must be at least 1M"));
                }
                *slot = b;
                mark(field, v.span());
            }
        }

        let mut update = UpdateSpec {
            public_keys: Vec::new(),
            threshold: 1,
            security_version: 0,
            tries: 3,
        };
        for (i, k) in raw.update.public_keys.iter().enumerate() {
            mark(&format!("update.public_keys.{i}"), k.span());
            update.public_keys.push(PathBuf::from(k.get_ref()));
        }
        if let Some(t) = &raw.update.threshold {
            if *t.get_ref() == 0 || *t.get_ref() as usize > update.public_keys.len().max(1) {
                return Err(self.field_err(
                    t,
                    "update.threshold",
                    "must be between 1 and the number of public keys",
                ));
            }
            update.threshold = *t.get_ref();
        }
        if let Some(s) = &raw.update.security_version {
            update.security_version = u64::try_from(*s.get_ref()).map_err(|_| {
                self.field_err(s, "update.security_version", "must not be negative")
            })?;
        }
        if let Some(t) = &raw.update.tries {
            if !(1..=9).contains(t.get_ref()) {
                return Err(self.field_err(t, "update.tries", "must be 1-9"));
            }
            update.tries = *t.get_ref() as u32;
        }

        let mut apt = Recipe::default_apt();
        let a = &raw.apt;
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

        Ok(Recipe {
            path: self.path.to_path_buf(),
            name,
            version,
            compatible,
            kernel,
            rootfs,
            services,
            health,
            disk,
            update,
            apt,
            lines,
        })
    }
}

/// `rootfs.packages.2` -> `rootfs.packages[2]`.
fn display_field(key: &str) -> String {
    match key.rsplit_once('.') {
        Some((head, idx)) if idx.chars().all(|c| c.is_ascii_digit()) && !idx.is_empty() => {
            format!("{head}[{idx}]")
        }
        _ => key.to_string(),
    }
}

fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
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
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("x"), None);
    }
}
