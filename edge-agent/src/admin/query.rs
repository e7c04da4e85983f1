//! Query strings of admin calls (`?service=NAME`): `&`-separated `key=value` pairs, percent-decoded,
//! so that names with `:` and `/` (a VIP such as `10.0.0.5:53/udp`) work typed plainly or encoded.

/// The value of the first `key` parameter, decoded; `None` when absent.
pub fn param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

fn hex(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Percent-decodes (and turns `+` into a space); malformed escapes stay as written, and bytes that
/// are not UTF-8 become U+FFFD, so any input decodes to something a lookup can simply not find.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match b.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, b[i]) {
            (Some(c), _) => {
                out.push(c);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes_parameters() {
        assert_eq!(param(Some("service=web"), "service").as_deref(), Some("web"));
        assert_eq!(param(Some("a=1&service=10.0.0.5%3A53%2Fudp"), "service").as_deref(), Some("10.0.0.5:53/udp"));
        assert_eq!(param(Some("service=10.0.0.5:53/udp"), "service").as_deref(), Some("10.0.0.5:53/udp"));
        assert_eq!(param(Some("service="), "service").as_deref(), Some(""));
        assert_eq!(param(Some("services=web"), "service"), None);
        assert_eq!(param(None, "service"), None);
        assert_eq!(param(Some("service=%zz%4"), "service").as_deref(), Some("%zz%4"), "bad escapes stay");
        assert_eq!(param(Some("service=%ff"), "service").as_deref(), Some("\u{fffd}"));
        assert_eq!(param(Some("service=a+b"), "service").as_deref(), Some("a b"));
    }
}
