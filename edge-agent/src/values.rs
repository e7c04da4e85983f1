//! The value types of `edge-agent run` settings: each parses and checks itself (`FromStr`, used by
//! clap for flags and `EDGE_*` variables, and by serde for `--config` files) and prints itself the
//! way it parses (`Display`, used for the defaults in `--help`). A value is checked where it is
//! read, so its error names the flag, the variable or the file key it came from.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use edge_core::service::{Proto, Vip};
use serde::de::{self, Deserializer, Visitor};

/// A duration written with units (`200ms`, `2s`, `1m30s`), at least `MIN_MS` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur<const MIN_MS: u64>(pub Duration);

/// Parses `200ms`, `2s`, `1.5s`, `1m30s`, `1h`, `500us`. A bare `0` means zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("'{s}' is not a duration; write a number with a unit, for example 200ms, 2s, 1m or 1m30s");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        let secs = value * unit_secs;
        if !secs.is_finite() || secs > 1e9 {
            return Err(err());
        }
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

/// Writes a duration as [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        format!("{}us", d.as_micros())
    } else if d.is_zero() {
        "0".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl<const MIN_MS: u64> FromStr for Dur<MIN_MS> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        let min = Duration::from_millis(MIN_MS);
        if d < min {
            return Err(format!("must be at least {}", format_duration(min)));
        }
        Ok(Self(d))
    }
}

impl<const MIN_MS: u64> fmt::Display for Dur<MIN_MS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// An integer from `LO` to `HI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int<const LO: u64, const HI: u64>(pub u64);

impl<const LO: u64, const HI: u64> FromStr for Int<LO, HI> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().parse::<u64>() {
            Ok(n) if (LO..=HI).contains(&n) => Ok(Self(n)),
            _ => Err(format!("use an integer from {LO} to {HI}")),
        }
    }
}

impl<const LO: u64, const HI: u64> fmt::Display for Int<LO, HI> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<const LO: u64, const HI: u64> Int<LO, HI> {
    /// The value as a `u32` (every bound used here fits).
    pub fn get32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }

    /// The value as a `usize`.
    pub fn get(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// A listening address: `IP:PORT`, `HOST:PORT` or `:PORT` (all IPv4 addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let fix = || "write IP:PORT or :PORT, for example 0.0.0.0:8080 or :8080".to_string();
        if let Some(port) = t.strip_prefix(':') {
            let p: u16 = port.parse().map_err(|_| fix())?;
            return Ok(Self(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p)));
        }
        if let Ok(a) = t.parse::<SocketAddr>() {
            return Ok(Self(a));
        }
        if t.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            && let Some(a) = t.to_socket_addrs().ok().and_then(|mut i| i.next())
        {
            return Ok(Self(a));
        }
        Err(fix())
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The admin listener: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddr(pub Option<SocketAddr>);

impl FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "" => Ok(Self(None)),
            a => a.parse::<ListenAddr>().map(|l| Self(Some(l.0))).map_err(|e| format!("{e}, or off")),
        }
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// A network interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface(pub String);

impl FromStr for Iface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let i = s.trim();
        if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', ':']) {
            return Err("give an interface name such as eth0 (at most 15 characters)".into());
        }
        Ok(Self(i.to_string()))
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A VIP as written: `IPV4:PORT[/udp]`, or `IFACE:PORT[/udp]` for the first IPv4 address of an
/// interface. The interface form lets one ECS task definition serve every EC2 host: each agent
/// takes its own host's address (the address an NLB's instance target sends to) when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipArg {
    /// A literal address.
    Addr(Vip),
    /// An interface's address, looked up at start.
    Iface {
        /// The interface name.
        iface: String,
        /// The port.
        port: u16,
        /// The protocol.
        proto: Proto,
    },
}

impl FromStr for VipArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (host, rest) = t.split_once(':').unwrap_or((t, ""));
        // A name made only of digits and dots is a mistyped address, not an interface.
        let is_name = !host.is_empty()
            && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
            && !rest.contains(':')
            && host.parse::<Iface>().is_ok();
        if !is_name {
            return t.parse::<Vip>().map(Self::Addr).map_err(|e| format!("{e}, or IFACE:PORT such as eth0:80"));
        }
        let fix = "write IFACE:PORT or IFACE:PORT/udp, for example eth0:80, or an address such as 10.0.0.5:80";
        let (port, proto) = match rest.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return Err(format!("unknown protocol; {fix}")),
            None => (rest, Proto::Tcp),
        };
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Self::Iface { iface: host.to_string(), port, proto }),
            _ => Err(format!("'{port}' is not a port from 1 to 65535; {fix}")),
        }
    }
}

impl fmt::Display for VipArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(v) => v.fmt(f),
            Self::Iface { iface, port, proto } => {
                let p = if *proto == Proto::Udp { "/udp" } else { "" };
                write!(f, "{iface}:{port}{p}")
            }
        }
    }
}

impl VipArg {
    /// The protocol.
    pub fn proto(&self) -> Proto {
        match self {
            Self::Addr(v) => v.proto,
            Self::Iface { proto, .. } => *proto,
        }
    }

    /// The interface it names, if any.
    pub fn iface(&self) -> Option<&str> {
        match self {
            Self::Addr(_) => None,
            Self::Iface { iface, .. } => Some(iface),
        }
    }

    /// The VIP, taking an interface's first IPv4 address from `addrs` (every local address with
    /// its interface, in the kernel's order, where an interface's primary address comes first).
    pub fn resolve(&self, addrs: &[(String, Ipv4Addr)]) -> Result<Vip, String> {
        match self {
            Self::Addr(v) => Ok(*v),
            Self::Iface { iface, port, proto } => match addrs.iter().find(|(name, _)| name == iface) {
                Some((_, addr)) => Ok(Vip { addr: *addr, port: *port, proto: *proto }),
                None => Err(format!(
                    "interface {iface} has no IPv4 address on this host (or does not exist); `ip -4 addr` lists \
                     them: give the interface clients reach this host on, or the address itself"
                )),
            },
        }
    }
}

/// An inclusive port range `LOW-HIGH` of unprivileged ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fix = "write LOW-HIGH with 1024 <= LOW < HIGH <= 65535, for example 16384-32767";
        let (a, b) = s.trim().split_once('-').ok_or(fix)?;
        match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            (Ok(lo), Ok(hi)) if lo >= 1024 && lo < hi => Ok(Self(lo, hi)),
            _ => Err(fix.into()),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// An on/off switch (`on`, `off`, and the usual spellings of true and false).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch(pub bool);

impl FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "y" | "1" => Ok(Self(true)),
            "off" | "false" | "no" | "n" | "0" => Ok(Self(false)),
            _ => Err("use on or off (or true/false, yes/no, 1/0)".into()),
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "on" } else { "off" })
    }
}

/// An absolute URL path for HTTP probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPath(pub String);

impl FromStr for UrlPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = s.trim();
        if !p.starts_with('/') || p.contains(char::is_whitespace) {
            return Err("give an absolute path without spaces, for example /healthz".into());
        }
        if http::uri::PathAndQuery::try_from(p).is_err() {
            return Err("not a valid URL path; use characters allowed in a URL".into());
        }
        Ok(Self(p.to_string()))
    }
}

impl fmt::Display for UrlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bearer token: no spaces or control characters. Its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl FromStr for Token {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the token must not contain spaces or control characters".into());
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// `tracing` filter directives (`info`, `info,edge_proxy=debug`); the targets are the crates:
/// `edge_agent`, `edge_core`, `edge_proxy`, `edge_dataplane`, and `edge_ebpf` for the data path's own records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(pub String);

impl Default for LogLevel {
    fn default() -> Self {
        Self("info".into())
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<tracing_subscriber::filter::Targets>()
            .map(|_| Self(s.to_string()))
            .map_err(|_| "use error, warn, info, debug or trace, or directives like info,edge_proxy=debug".into())
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePath(pub std::path::PathBuf);

impl FromStr for FilePath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("give a path".into());
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// A Maglev table size: a prime in the supported range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize(pub u32);

impl FromStr for TableSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: u32 = s.trim().parse().map_err(|_| "use a prime such as 65537".to_string())?;
        edge_core::balance::maglev::validate_size(n).map_err(|e| e.to_string())?;
        Ok(Self(n))
    }
}

impl fmt::Display for TableSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Defines a choice among words: its `FromStr` (with aliases), `Display` and the word list.
macro_rules! choice {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $word:literal $(| $alias:literal)*,)+ } $fix:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name { $($(#[$vm])* $variant,)+ }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($word $(| $alias)* => Ok(Self::$variant),)+
                    _ => Err($fix.into()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $word,)+ })
            }
        }
    };
}

choice! {
    /// Which data plane to run (`--mode`).
    ModeChoice {
        /// eBPF when a service has a VIP and the host can load, attach and carry out its
        /// strategies; otherwise userspace (without any VIP, probe eBPF and report the result).
        #[default]
        Auto = "auto",
        /// The eBPF data plane, or fail at start.
        Ebpf = "ebpf",
        /// The userspace proxy, no probe.
        Userspace = "userspace",
    } "use auto, ebpf or userspace"
}

choice! {
    /// The health probe kind (`--health-check`).
    CheckChoice {
        /// TCP connect.
        #[default]
        Tcp = "tcp",
        /// HTTP GET of `--health-path`.
        Http = "http",
        /// A DNS query over UDP (the default of UDP services).
        Udp = "udp",
        /// The gRPC health protocol (`grpc.health.v1.Health/Check`) over HTTP/2.
        Grpc = "grpc",
    } "use tcp, http, grpc or udp"
}

/// What the proxy retries (`--retry-on`): a comma-separated list of `connect-failure`, `reset`
/// and `gateway-error`, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// A failed connect.
    pub connect_failure: bool,
    /// A connection closed or reset before any response byte.
    pub reset: bool,
    /// 502, 503 or 504.
    pub gateway_error: bool,
    /// An HTTP/2 stream the backend refused unprocessed.
    pub refused_stream: bool,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self { connect_failure: true, reset: true, gateway_error: true, refused_stream: true }
    }
}

impl FromStr for RetryOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut on = Self { connect_failure: false, reset: false, gateway_error: false, refused_stream: false };
        if s.trim() == "none" {
            return Ok(on);
        }
        for word in s.split(',').map(str::trim) {
            match word {
                "connect-failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "gateway-error" => on.gateway_error = true,
                "refused-stream" => on.refused_stream = true,
                other => {
                    return Err(format!(
                        "unknown condition '{other}'; list connect-failure, reset, gateway-error and refused-stream \
                         separated by commas, or write none"
                    ));
                }
            }
        }
        Ok(on)
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (self.connect_failure, "connect-failure"),
            (self.reset, "reset"),
            (self.gateway_error, "gateway-error"),
            (self.refused_stream, "refused-stream"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        f.write_str(if words.is_empty() { "none".into() } else { words.join(",") }.as_str())
    }
}

choice! {
    /// Log output format (`--log-format`).
    LogFormat {
        /// Human-readable lines.
        #[default]
        Text = "text",
        /// One JSON object per line (CloudWatch).
        Json = "json",
    } "use text or json"
}

/// Reads any `FromStr` value from a TOML string, integer or float, so that `rise = 3` and
/// `rise = "3"` both work and every value is checked by the same parser as its flag.
pub fn deserialize_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    d.deserialize_any(FromStrVisitor(PhantomData)).map(Some)
}

/// Reads one value or a list of values (`listen = ":80"` or `listen = [":80", ":81"]`).
pub fn deserialize_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct ListVisitor<T>(PhantomData<T>);
    impl<'de, T: FromStr> Visitor<'de> for ListVisitor<T>
    where
        T::Err: fmt::Display,
    {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            FromStrVisitor(PhantomData).visit_str(v).map(|x| vec![x])
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(FromStrValue(v)) = seq.next_element::<FromStrValue<T>>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(ListVisitor(PhantomData))
}

/// One list element read through [`FromStr`].
struct FromStrValue<T>(T);

impl<'de, T: FromStr> serde::Deserialize<'de> for FromStrValue<T>
where
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FromStrVisitor(PhantomData)).map(FromStrValue)
    }
}

struct FromStrVisitor<T>(PhantomData<T>);

impl<T: FromStr> Visitor<'_> for FromStrVisitor<T>
where
    T::Err: fmt::Display,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse::<T>().map_err(|e| E::custom(format!("'{v}': {e}")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// Reads a TOML boolean, and nothing else (`cleanup = "yes"` is an error, not false).
pub fn deserialize_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Switch>, D::Error> {
    struct BoolVisitor;
    impl Visitor<'_> for BoolVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false (a TOML boolean, without quotes)")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
    }
    d.deserialize_any(BoolVisitor).map(|b| Some(Switch(b)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn vip_arg_takes_an_address_or_an_interface() {
        let addrs = vec![("lo".to_string(), Ipv4Addr::LOCALHOST), ("eth0".into(), Ipv4Addr::new(10, 0, 1, 23))];
        let lit: VipArg = "10.0.0.5:80".parse().unwrap();
        assert_eq!(lit.resolve(&addrs).unwrap().to_string(), "10.0.0.5:80");
        assert_eq!(lit.iface(), None);
        let dev: VipArg = "eth0:443".parse().unwrap();
        assert_eq!(dev.iface(), Some("eth0"));
        assert_eq!(dev.to_string(), "eth0:443");
        assert_eq!(dev.resolve(&addrs).unwrap().to_string(), "10.0.1.23:443");
        let udp: VipArg = "eth0:53/udp".parse().unwrap();
        assert_eq!(udp.resolve(&addrs).unwrap().to_string(), "10.0.1.23:53/udp");
        assert_eq!(udp.to_string(), "eth0:53/udp");
        let missing: VipArg = "ens5:80".parse().unwrap();
        let e = missing.resolve(&addrs).unwrap_err();
        assert!(e.contains("interface ens5 has no IPv4 address") && e.contains("ip -4 addr"), "{e}");
    }

    #[test]
    fn vip_arg_errors_say_how_to_write_one() {
        for (bad, says) in [
            ("10.0.0.300:80", "IPV4:PORT"),
            ("eth0:0", "not a port"),
            ("eth0:http", "not a port"),
            ("eth0:80/sctp", "unknown protocol"),
            ("eth0", "not a port"),
            ("[::1]:80", "IPv6"),
            ("averyveryverylongname:80", "IPV4:PORT"),
        ] {
            let e = bad.parse::<VipArg>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    use super::*;

    #[test]
    fn durations_parse_print_and_check_their_minimum() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        for bad in ["", "2", "s", "2x", "-1s", "1..2s", "ms200", "1e400s", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        for d in [200, 2000, 90_000, 3_600_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!("5ms".parse::<Dur<10>>().unwrap_err(), "must be at least 10ms");
        assert_eq!("2s".parse::<Dur<10>>().unwrap().to_string(), "2s");
    }

    #[test]
    fn words_and_numbers_say_what_is_accepted() {
        assert_eq!("0".parse::<Int<1, 100>>().unwrap_err(), "use an integer from 1 to 100");
        assert_eq!("7".parse::<Int<1, 100>>(), Ok(Int(7)));
        assert_eq!("maybe".parse::<Switch>().unwrap_err(), "use on or off (or true/false, yes/no, 1/0)");
        for (word, on) in [("YES", true), ("on", true), ("1", true), ("off", false), ("No", false), ("false", false)] {
            assert_eq!(word.parse::<Switch>(), Ok(Switch(on)));
        }
        assert_eq!("kernel".parse::<ModeChoice>().unwrap_err(), "use auto, ebpf or userspace");
        assert_eq!("none".parse::<RetryOn>().unwrap().to_string(), "none");
        assert_eq!(RetryOn::default().to_string(), "connect-failure,reset,gateway-error,refused-stream");
        assert_eq!(
            " reset , connect-failure".parse::<RetryOn>(),
            Ok(RetryOn { connect_failure: true, reset: true, gateway_error: false, refused_stream: false })
        );
        assert!("5xx".parse::<RetryOn>().unwrap_err().starts_with("unknown condition '5xx'; list connect-failure"));
        assert_eq!(":8080".parse::<ListenAddr>().unwrap().to_string(), "0.0.0.0:8080");
        assert!("8080".parse::<ListenAddr>().unwrap_err().contains("write IP:PORT"));
        assert_eq!("off".parse::<AdminAddr>(), Ok(AdminAddr(None)));
        assert_eq!(
            "20000-10000".parse::<PortRange>().unwrap_err(),
            "write LOW-HIGH with 1024 <= LOW < HIGH <= 65535, for example 16384-32767"
        );
        assert!("65536".parse::<TableSize>().unwrap_err().contains("not a prime"));
        assert!(format!("{:?}", "secret".parse::<Token>().unwrap()).contains("hidden"));
    }
}

/// A name for discovery: a Consul service, tag or datacenter, or a DNS name. No spaces or control
/// characters, at most 253 bytes (a DNS name's limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryName(pub String);

impl FromStr for DiscoveryName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 253 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("give a name of 1 to 253 characters without spaces, for example web.local".into());
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for DiscoveryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A gRPC service name for `--health-grpc-service`, e.g. `shop.Cart`: no spaces or control
/// characters, at most 200 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcService(pub String);

impl FromStr for GrpcService {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 200 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("give a service name of 1 to 200 characters without spaces, for example shop.Cart".into());
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for GrpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `NAME:PORT` for `--dns-a`: a DNS name whose A and AAAA records are the backends, on `PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePort {
    /// The name.
    pub name: String,
    /// The port.
    pub port: u16,
}

impl FromStr for NamePort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fix = "write NAME:PORT, for example web.service.local:8080";
        let (name, port) = s.trim().rsplit_once(':').ok_or_else(|| format!("no port; {fix}"))?;
        let name = DiscoveryName::from_str(name).map_err(|e| format!("{e}; {fix}"))?.0;
        let port: u16 =
            port.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("port '{port}' is not 1 to 65535; {fix}"))?;
        Ok(Self { name, port })
    }
}

impl fmt::Display for NamePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

/// Where Consul's HTTP API is: `[http://|https://]HOST:PORT` (`HOST` alone: port 8500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulAddr {
    /// `Some(true)` for `https://`, `Some(false)` for `http://`, `None` when no scheme was given
    /// (then `CONSUL_HTTP_SSL` decides).
    pub https: Option<bool>,
    /// `HOST:PORT`.
    pub authority: String,
}

impl FromStr for ConsulAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        let (https, rest) = match s.split_once("://") {
            Some(("http", r)) => (Some(false), r),
            Some(("https", r)) => (Some(true), r),
            Some((scheme, _)) => return Err(format!("scheme '{scheme}' is not http or https")),
            None => (None, s),
        };
        if rest.is_empty() || rest.contains('/') || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("write [http://|https://]HOST:PORT, for example 127.0.0.1:8500".into());
        }
        let has_port = rest.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
            && !(rest.starts_with('[') && rest.ends_with(']'));
        let authority = if has_port { rest.to_string() } else { format!("{rest}:8500") };
        Ok(Self { https, authority })
    }
}

impl fmt::Display for ConsulAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.https {
            Some(true) => write!(f, "https://{}", self.authority),
            Some(false) => write!(f, "http://{}", self.authority),
            None => f.write_str(&self.authority),
        }
    }
}
