//! The little DER that Authenticode needs: definite-length encodings
//! written from parts, and a reader that walks a certificate's top levels
//! (to copy its issuer and serial number and find its public key).

/// Tag of a SEQUENCE.
pub const SEQUENCE: u8 = 0x30;
/// Tag of a SET (OF).
pub const SET: u8 = 0x31;
/// Tag of an INTEGER.
pub const INTEGER: u8 = 0x02;
/// Tag of an OCTET STRING.
pub const OCTET_STRING: u8 = 0x04;
/// Tag of NULL.
pub const NULL: u8 = 0x05;
/// Tag of an OBJECT IDENTIFIER.
pub const OID: u8 = 0x06;

/// `tag`, the definite length of `content`, then `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A constructed value of `tag` holding `parts` in order.
pub fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// A SET OF: DER orders the members by their encodings.
pub fn set_of(mut members: Vec<Vec<u8>>) -> Vec<u8> {
    members.sort();
    tlv(SET, &members.concat())
}

/// An OBJECT IDENTIFIER from its dotted arcs.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let base7 = |mut v: u64, body: &mut Vec<u8>| {
        let mut tmp = vec![(v & 0x7F) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7F) as u8);
            v >>= 7;
        }
        body.extend(tmp.iter().rev());
    };
    base7(arcs[0] * 40 + arcs[1], &mut body);
    for a in &arcs[2..] {
        base7(*a, &mut body);
    }
    tlv(OID, &body)
}

/// A small non-negative INTEGER.
pub fn small_int(v: u8) -> Vec<u8> {
    if v < 0x80 {
        tlv(INTEGER, &[v])
    } else {
        tlv(INTEGER, &[0, v])
    }
}

/// One decoded element: its tag and where its header and content are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    /// The tag byte (single-byte tags only).
    pub tag: u8,
    /// Offset of the tag in the input.
    pub start: usize,
    /// Offset of the content.
    pub content: usize,
    /// Offset after the content.
    pub end: usize,
}

impl Element {
    /// The whole encoding (tag, length, content) within `b`.
    pub fn bytes<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[self.start..self.end]
    }
}

/// Reads the element at `at` of `b`; `None` if it is not well-formed DER
/// within `b` (multi-byte tags, indefinite or overlong lengths).
pub fn read(b: &[u8], at: usize) -> Option<Element> {
    let tag = *b.get(at)?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let first = *b.get(at + 1)?;
    let (len, content) = if first < 0x80 {
        (first as usize, at + 2)
    } else {
        let n = (first & 0x7F) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(at + 2 + i)? as usize;
        }
        (len, at + 2 + n)
    };
    let end = content.checked_add(len)?;
    (end <= b.len()).then_some(Element {
        tag,
        start: at,
        content,
        end,
    })
}

/// The elements directly inside `parent`.
pub fn children(b: &[u8], parent: &Element) -> Option<Vec<Element>> {
    let mut out = Vec::new();
    let mut at = parent.content;
    while at < parent.end {
        let e = read(&b[..parent.end], at)?;
        at = e.end;
        out.push(e);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_lengths_and_oids_as_der() {
        assert_eq!(tlv(OCTET_STRING, &[1, 2]), [4, 2, 1, 2]);
        let long = tlv(OCTET_STRING, &[0; 300]);
        assert_eq!(&long[..4], [4, 0x82, 1, 44]);
        // sha256: 2.16.840.1.101.3.4.2.1
        assert_eq!(
            oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]),
            [6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 1]
        );
        let e = read(&long, 0).unwrap();
        assert_eq!((e.content, e.end), (4, 304));
        assert!(read(&long[..100], 0).is_none(), "content beyond the input");
        let s = set_of(vec![vec![5, 0], vec![2, 1, 1]]);
        assert_eq!(s, [0x31, 5, 2, 1, 1, 5, 0]);
        assert_eq!(children(&s, &read(&s, 0).unwrap()).unwrap().len(), 2);
    }
}
