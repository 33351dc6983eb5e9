//! Fetching a channel over HTTP(S): `<url>/metadata/<name>` and
//! `<url>/targets/<path>`, each body read to at most its bound (one byte
//! more is an endless-data attack, refused before it is stored), the
//! timestamp asked for conditionally (`If-None-Match`,
//! `If-Modified-Since`), bytes on the wire counted.

use super::TufError;
use super::trust::{Fetched, Fetcher, Validators};
use std::io::Read;
use std::time::Duration;

/// An HTTP repository.
pub struct HttpRepository {
    agent: ureq::Agent,
    base: String,
    /// Requests sent.
    pub requests: u64,
    /// Body bytes received.
    pub received: u64,
}

impl std::fmt::Debug for HttpRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRepository")
            .field("base", &self.base)
            .finish()
    }
}

impl HttpRepository {
    /// A repository at `base` (`http://host/path`, no trailing slash
    /// needed); every request is bounded by `timeout` in total.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, TufError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TufError::Unsupported(format!(
                "channel URL {base:?}: only http:// and https:// are supported"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            requests: 0,
            received: 0,
        })
    }

    /// The repository's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn get(
        &mut self,
        url: &str,
        max: u64,
        validators: Option<&Validators>,
    ) -> Result<Fetched, TufError> {
        let http = |reason: String| TufError::Http {
            url: url.to_string(),
            reason,
        };
        let mut req = self.agent.get(url);
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                req = req.header("If-None-Match", etag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header("If-Modified-Since", lm);
            }
        }
        self.requests += 1;
        let resp = req.call().map_err(|e| http(e.to_string()))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let got = Validators {
            etag: header("etag"),
            last_modified: header("last-modified"),
        };
        match status {
            200 => {}
            304 if validators.is_some() => return Ok(Fetched::NotModified),
            403 | 404 => return Ok(Fetched::NotFound),
            s => return Err(http(format!("HTTP status {s}"))),
        }
        let name = url.rsplit('/').next().unwrap_or(url).to_string();
        let mut body = Vec::new();
        let n = resp
            .into_body()
            .into_reader()
            .take(max.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| http(format!("reading the body: {e}")))?;
        self.received += n as u64;
        if n as u64 > max {
            return Err(TufError::TooLong { name, limit: max });
        }
        Ok(Fetched::Body(body, got))
    }
}

impl Fetcher for HttpRepository {
    fn metadata(
        &mut self,
        name: &str,
        max: u64,
        validators: Option<&Validators>,
    ) -> Result<Fetched, TufError> {
        let url = format!("{}/metadata/{name}", self.base);
        self.get(&url, max, validators)
    }

    fn target(&mut self, path: &str, max: u64) -> Result<Vec<u8>, TufError> {
        let url = format!("{}/targets/{path}", self.base);
        match self.get(&url, max, None)? {
            Fetched::Body(b, _) => Ok(b),
            _ => Err(TufError::Http {
                url,
                reason: "not found".into(),
            }),
        }
    }
}

impl HttpRepository {
    /// The URL of target `path` (as stored).
    pub fn target_url(&self, path: &str) -> String {
        format!("{}/targets/{path}", self.base)
    }

    /// The first `len` bytes of the resource at `url`: one range request,
    /// or the start of the whole body when the server ignores ranges.
    pub fn read_prefix(&mut self, url: &str, len: u64) -> Result<Vec<u8>, TufError> {
        use crate::io::ranges::{RangeClient, RangeError};
        let mut client = RangeClient::new(url, crate::io::source::HttpTimeouts::from_env());
        let http = |reason: String| TufError::Http {
            url: url.to_string(),
            reason,
        };
        let mut out = Vec::new();
        let read = match client.get(0, len, false) {
            Ok(body) => body.take(len).read_to_end(&mut out),
            Err(RangeError::NotSupported { body, .. }) => body.take(len).read_to_end(&mut out),
            Err(e) => return Err(http(e.to_string())),
        };
        self.requests += client.requests();
        read.map_err(|e| http(format!("reading: {e}")))?;
        self.received += out.len() as u64;
        if (out.len() as u64) < len {
            return Err(http(format!("{} bytes, {len} expected", out.len())));
        }
        Ok(out)
    }
}
