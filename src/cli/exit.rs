//! How a command ends: the exit code of each error class, the one-line
//! message, and the JSON error object that `--json` commands print on
//! failure (docs/json.md, "Exit codes" in docs/cli.md).

use crate::build_manifest::ManifestError;
use crate::bundle::{BundleError, KeyError, WriteError};
use crate::compose::ComposeError;
use crate::packages::PackagesError;
use crate::packages::apt::AptError;
use crate::packages::lock::LockError;
use crate::recipe::RecipeError;
use serde_json::{Map, Value, json};
use std::error::Error as StdError;
use std::process::ExitCode;

/// The version of every JSON document slate prints (`"schema": 1`).
pub const JSON_SCHEMA: u32 = 1;

/// What kind of failure ended a command; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Anything not classified below, e.g. a QEMU expectation not met or
    /// apt failing (exit 1).
    Failure,
    /// The command line itself is wrong (exit 2; clap reports these).
    Usage,
    /// A recipe, key, lock or other input file is invalid (exit 3).
    InvalidInput,
    /// A bundle failed verification: bad magic, corrupt, unsigned, bad or
    /// untrusted signature (exit 4).
    Verification,
    /// Reading or writing a file or device failed (exit 5).
    Io,
}

impl ErrorClass {
    /// Every class, in exit-code order.
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Failure,
        ErrorClass::Usage,
        ErrorClass::InvalidInput,
        ErrorClass::Verification,
        ErrorClass::Io,
    ];

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Failure => 1,
            ErrorClass::Usage => 2,
            ErrorClass::InvalidInput => 3,
            ErrorClass::Verification => 4,
            ErrorClass::Io => 5,
        }
    }

    /// The stable name used in JSON error objects.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Failure => "failure",
            ErrorClass::Usage => "usage",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::Verification => "verification",
            ErrorClass::Io => "io",
        }
    }
}

/// An input the user gave is unusable; the message says which and why.
/// CLI code returns this where no library error type applies.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn recipe_class(e: &RecipeError) -> ErrorClass {
    match e {
        RecipeError::Io { .. } => ErrorClass::Io,
        RecipeError::Invalid { .. } => ErrorClass::InvalidInput,
    }
}

fn packages_class(e: &PackagesError) -> Option<ErrorClass> {
    match e {
        PackagesError::Recipe(r) => Some(recipe_class(r)),
        PackagesError::Lock(LockError::Io { .. }) => Some(ErrorClass::Io),
        PackagesError::Lock(LockError::Invalid { .. }) => Some(ErrorClass::InvalidInput),
        PackagesError::Apt(AptError::Io { .. }) => Some(ErrorClass::Io),
        PackagesError::Apt(AptError::UnknownPackage(_)) => Some(ErrorClass::InvalidInput),
        _ => None,
    }
}

fn classify_one(c: &(dyn StdError + 'static)) -> Option<ErrorClass> {
    if c.downcast_ref::<InvalidInput>().is_some() {
        return Some(ErrorClass::InvalidInput);
    }
    if let Some(e) = c.downcast_ref::<clap::Error>() {
        return (e.exit_code() == 2).then_some(ErrorClass::Usage);
    }
    if let Some(e) = c.downcast_ref::<BundleError>() {
        return Some(match e {
            BundleError::Io(_) | BundleError::Sink { .. } => ErrorClass::Io,
            _ => ErrorClass::Verification,
        });
    }
    if let Some(e) = c.downcast_ref::<KeyError>() {
        return Some(match e {
            KeyError::Io { .. } | KeyError::Random(_) => ErrorClass::Io,
            _ => ErrorClass::InvalidInput,
        });
    }
    if let Some(e) = c.downcast_ref::<WriteError>() {
        return Some(match e {
            WriteError::Io { .. } => ErrorClass::Io,
            _ => ErrorClass::InvalidInput,
        });
    }
    if let Some(e) = c.downcast_ref::<ManifestError>() {
        return Some(match e {
            ManifestError::Io { .. } => ErrorClass::Io,
            _ => ErrorClass::InvalidInput,
        });
    }
    if let Some(e) = c.downcast_ref::<RecipeError>() {
        return Some(recipe_class(e));
    }
    if let Some(e) = c.downcast_ref::<PackagesError>() {
        return packages_class(e);
    }
    if let Some(e) = c.downcast_ref::<ComposeError>() {
        return match e {
            ComposeError::Recipe(r) => Some(recipe_class(r)),
            ComposeError::Packages(p) => packages_class(p),
            ComposeError::Io { .. } => Some(ErrorClass::Io),
            ComposeError::Tree(_) | ComposeError::OutDir(_) => Some(ErrorClass::InvalidInput),
            _ => None,
        };
    }
    if let Some(e) = c.downcast_ref::<crate::verity::VerityError>() {
        use crate::verity::VerityError;
        return Some(match e {
            VerityError::Unsupported(_) => ErrorClass::InvalidInput,
            VerityError::Io(_) | VerityError::ShortData { .. } => ErrorClass::Io,
        });
    }
    if let Some(e) = c.downcast_ref::<crate::channel::TufError>() {
        use crate::channel::TufError;
        return Some(match e {
            TufError::Io { .. } => ErrorClass::Io,
            TufError::Http { .. } => ErrorClass::Failure,
            TufError::Bad { .. } | TufError::Unsupported(_) => ErrorClass::InvalidInput,
            _ => ErrorClass::Verification,
        });
    }
    if c.downcast_ref::<std::io::Error>().is_some() {
        return Some(ErrorClass::Io);
    }
    None
}

/// The class of an error: the outermost cause that has one, else
/// [`ErrorClass::Failure`].
pub fn classify(e: &anyhow::Error) -> ErrorClass {
    e.chain()
        .find_map(classify_one)
        .unwrap_or(ErrorClass::Failure)
}

/// The error chain on one line, `outer: inner: ...`, leaving out a cause
/// whose text the line already ends with (library errors often print their
/// source as well as returning it).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The `error` object of a failed `--json` command (docs/json.md).
pub fn error_object(e: &anyhow::Error) -> Value {
    let class = classify(e);
    let bundle = e.chain().find_map(|c| c.downcast_ref::<BundleError>());
    json!({
        "class": class.name(),
        "exit_code": class.exit_code(),
        "code": bundle.map(|b| b.code()),
        "kind": bundle.and_then(|b| b.corrupt_kind()).map(|k| k.code()),
        "message": one_line(e),
    })
}

/// The whole JSON document of a failed `--json` command: `"schema"`, the
/// command's own identifying fields, and `"error"`.
pub fn failure_document(e: &anyhow::Error, context: Map<String, Value>) -> Value {
    let mut doc = Map::new();
    doc.insert("schema".into(), json!(JSON_SCHEMA));
    doc.extend(context);
    doc.insert("error".into(), error_object(e));
    Value::Object(doc)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Ends a command: prints the error once on stderr (and, for a `--json`
/// command, its JSON document on stdout) and picks the exit code.
pub fn report(result: anyhow::Result<()>, json_context: Option<Map<String, Value>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and closed early is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(context) = json_context {
                println!("{}", failure_document(&e, context));
            }
            if crate::progress::color() {
                eprintln!("slate: \x1b[1;31merror:\x1b[0m {}", one_line(&e));
            } else {
                eprintln!("slate: error: {}", one_line(&e));
            }
            ExitCode::from(classify(&e).exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn os_error_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(ComposeError::io("reading", "/x".as_ref(), io))
            .context("building r.toml");
        let line = one_line(&e);
        assert_eq!(line.matches("entity not found").count(), 1, "{line}");
        assert!(line.starts_with("building r.toml: reading /x: "), "{line}");
        assert_eq!(classify(&e), ErrorClass::Io);
    }

    #[test]
    fn classes_have_distinct_codes() {
        let mut codes: Vec<u8> = ErrorClass::ALL.iter().map(|c| c.exit_code()).collect();
        codes.dedup();
        assert_eq!(codes, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn classification() {
        let recipe = RecipeError::Invalid {
            location: "r.toml:3".into(),
            message: "disk.slot: bad".into(),
        };
        assert_eq!(
            classify(&anyhow::Error::new(ComposeError::Recipe(recipe))),
            ErrorClass::InvalidInput
        );
        let e: anyhow::Result<()> = Err(BundleError::NotABundle).context("verifying b");
        assert_eq!(classify(&e.unwrap_err()), ErrorClass::Verification);
        let e = anyhow::Error::new(BundleError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        assert_eq!(classify(&e), ErrorClass::Io);
        assert_eq!(classify(&anyhow::anyhow!("no")), ErrorClass::Failure);
        let doc = failure_document(&anyhow::Error::new(BundleError::NoSignature), Map::new());
        assert_eq!(doc["schema"], 1);
        assert_eq!(doc["error"]["class"], "verification");
        assert_eq!(doc["error"]["exit_code"], 4);
        assert_eq!(doc["error"]["code"], "no_signature");
    }
}
