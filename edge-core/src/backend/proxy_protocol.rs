//! The PROXY protocol version a backend asks for (`,proxy=v1` or `,proxy=v2` in its spec): the
//! proxy then opens each connection to it with a PROXY header carrying the client's address, and
//! health probes open theirs with a `LOCAL` header (no client: the agent itself), as HAProxy's
//! `check-send-proxy` and an AWS NLB's health checks do.

/// The 12-byte signature that starts every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

impl ProxyProtocol {
    /// Its name in a backend spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }

    /// Parses `v1` or `v2`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Some(Self::V1),
            "v2" | "2" => Some(Self::V2),
            _ => None,
        }
    }

    /// The header of a connection that carries no client (a health probe): `PROXY UNKNOWN` in
    /// version 1, the `LOCAL` command in version 2.
    pub fn local_header(self) -> &'static [u8] {
        const V2_LOCAL: [u8; 16] = {
            let mut h = [0u8; 16];
            let mut i = 0;
            while i < 12 {
                h[i] = V2_SIGNATURE[i];
                i += 1;
            }
            // Version 2, command LOCAL; family and protocol unspecified; no address bytes.
            h[12] = 0x20;
            h
        };
        match self {
            Self::V1 => b"PROXY UNKNOWN\r\n",
            Self::V2 => &V2_LOCAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_local_headers() {
        assert_eq!(ProxyProtocol::parse(" V2 "), Some(ProxyProtocol::V2));
        assert_eq!(ProxyProtocol::parse("v1").map(ProxyProtocol::as_str), Some("v1"));
        assert_eq!(ProxyProtocol::parse("v3"), None);
        assert_eq!(ProxyProtocol::V1.local_header(), b"PROXY UNKNOWN\r\n");
        let v2 = ProxyProtocol::V2.local_header();
        assert_eq!((&v2[..12], v2[12], v2[13], &v2[14..]), (&V2_SIGNATURE[..], 0x20, 0, &[0u8, 0][..]));
    }
}
