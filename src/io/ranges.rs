//! HTTP range requests on one kept-alive connection (ureq), for fetching
//! parts of a bundle: a reply must be `206 Partial Content` with exactly the
//! `Content-Range` asked for. A `200` reply means the server ignores `Range`
//! ([`RangeError::NotSupported`]); its body is the whole resource and is
//! handed back so the caller can stream it instead of asking again.

use super::source::HttpTimeouts;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a range request failed.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// The server answered `200` with the whole resource: it has no range
    /// support. The body, unread, is the whole resource.
    #[error("{url}: the server ignores Range requests (it answered 200)")]
    NotSupported {
        /// The URL.
        url: String,
        /// The whole resource, streaming.
        body: WholeBody,
    },
    /// Connecting, an HTTP error status or a broken transfer.
    #[error("{url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A `206` reply for other bytes than the ones asked for.
    #[error("{url}: asked for bytes {start}-{end}, the server sent {got:?}")]
    WrongRange {
        /// The URL.
        url: String,
        /// First byte asked for.
        start: u64,
        /// Last byte asked for.
        end: u64,
        /// The `Content-Range` header it sent (or none).
        got: Option<String>,
    },
}

/// The body of a `200` reply: the whole resource, streaming, its bytes
/// counted as received.
pub struct WholeBody(std::sync::Mutex<Counting<Box<dyn Read + Send>>>);

impl std::fmt::Debug for WholeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WholeBody")
    }
}

impl Read for WholeBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .get_mut()
            .map_err(|_| io::Error::other("poisoned"))?
            .read(buf)
    }
}

/// A parsed `Content-Range: bytes FIRST-LAST/TOTAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte sent.
    pub first: u64,
    /// Last byte sent (inclusive).
    pub last: u64,
    /// Length of the whole resource, when the server says.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parses the header value; `None` for anything malformed.
    pub fn parse(s: &str) -> Option<ContentRange> {
        let rest = s.trim().strip_prefix("bytes ")?;
        let (range, total) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let first: u64 = first.trim().parse().ok()?;
        let last: u64 = last.trim().parse().ok()?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        if last < first || total.is_some_and(|t| last >= t) {
            return None;
        }
        Some(ContentRange { first, last, total })
    }
}

/// One answered range request: its body, limited to the bytes it covers.
pub struct RangeBody {
    /// What the server says it sent.
    pub range: ContentRange,
    reader: Box<dyn Read + Send>,
    left: u64,
    received: Arc<AtomicU64>,
}

impl Read for RangeBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the range body ended {} bytes early", self.left),
            ));
        }
        self.left -= n as u64;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Range requests against one URL, counted.
pub struct RangeClient {
    agent: ureq::Agent,
    url: String,
    requests: u64,
    received: Arc<AtomicU64>,
}

impl std::fmt::Debug for RangeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeClient")
            .field("url", &self.url)
            .field("requests", &self.requests)
            .finish()
    }
}

impl RangeClient {
    /// A client for `url`, with the download bounds of `timeouts`.
    pub fn new(url: &str, timeouts: HttpTimeouts) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(timeouts.connect))
            .timeout_recv_response(Some(timeouts.read))
            .timeout_per_read(Some(timeouts.read))
            .timeout_global(Some(timeouts.total))
            .build()
            .into();
        Self {
            agent,
            url: url.to_string(),
            requests: 0,
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Body bytes received so far (what the server's access log counts).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn http_err(&self, reason: impl std::fmt::Display) -> RangeError {
        RangeError::Http {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Asks for `len` bytes from `start`. With `allow_short`, a reply that
    /// ends early because the resource does (a probe past its end) is
    /// accepted; otherwise the exact range must come back.
    pub fn get(
        &mut self,
        start: u64,
        len: u64,
        allow_short: bool,
    ) -> Result<RangeBody, RangeError> {
        assert!(len > 0, "empty range");
        let end = start + len - 1;
        self.requests += 1;
        let resp = self
            .agent
            .get(&self.url)
            .header("Range", format!("bytes={start}-{end}"))
            .call()
            .map_err(|e| self.http_err(e))?;
        let status = resp.status().as_u16();
        let header = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        match status {
            206 => {}
            200 => {
                let received = self.received.clone();
                return Err(RangeError::NotSupported {
                    url: self.url.clone(),
                    body: WholeBody(std::sync::Mutex::new(Counting {
                        inner: reader,
                        received,
                    })),
                });
            }
            s => return Err(self.http_err(format!("HTTP status {s} to a range request"))),
        }
        let wrong = || RangeError::WrongRange {
            url: self.url.clone(),
            start,
            end,
            got: header.clone(),
        };
        let range = header
            .as_deref()
            .and_then(ContentRange::parse)
            .ok_or_else(wrong)?;
        let short_ok = allow_short && range.total.is_some_and(|t| range.last + 1 == t);
        if range.first != start || (range.last != end && !(short_ok && range.last < end)) {
            return Err(wrong());
        }
        Ok(RangeBody {
            left: range.last - range.first + 1,
            range,
            reader,
            received: self.received.clone(),
        })
    }
}

/// A reader that adds the bytes it passes on to a shared counter (a
/// whole-resource body's bytes count as received).
pub struct Counting<R> {
    /// The reader counted.
    pub inner: R,
    /// The counter.
    pub received: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            ContentRange::parse("bytes 0-99/1000"),
            Some(ContentRange {
                first: 0,
                last: 99,
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 5-5/*").map(|r| r.total),
            Some(None)
        );
        for bad in [
            "",
            "bytes 9-3/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-/10",
            "bytes a-b/c",
            "bytes 0-1",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }
}
