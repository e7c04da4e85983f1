//! What the proxy of one listener on one worker works with: the selector of the service the
//! listener serves, that service's counters, the process's counters and request budget, and the
//! proxy's settings.
//! The HTTP and the TCP proxy hold one each.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use edge_core::balance::Selector;

use tokio::net::TcpStream;

use crate::admission::Admission;
use crate::config::ProxyConfig;
use crate::stats::{ClientError, ProxyStats, ServiceTraffic};

/// One listener's view of its service and the process.
#[derive(Debug)]
pub(crate) struct Served {
    /// The selector of the service this listener serves.
    pub selector: Arc<ArcSwap<Selector>>,
    /// That service's counters.
    pub traffic: Arc<ServiceTraffic>,
    /// Process-wide proxy counters.
    pub stats: Arc<ProxyStats>,
    /// The process's request budget.
    pub admission: Arc<Admission>,
    /// Proxy settings.
    pub cfg: ProxyConfig,
    /// TLS settings for backends spoken to over TLS (`,tls`), when they could be made.
    pub backend_tls: Option<Arc<rustls::ClientConfig>>,
    /// The same, offering only `h2` by ALPN, for HTTP/2 backends over TLS.
    pub backend_tls_h2: Option<Arc<rustls::ClientConfig>>,
}

impl Served {
    /// Reads a client connection's PROXY header (`--accept-proxy-protocol`): the client it names, the
    /// connection's own peer for a `LOCAL` header, or `None` (counted) when there is no valid header
    /// in time and the connection is to be closed.
    pub(crate) async fn accept_proxy_header(&self, stream: &mut TcpStream, peer: SocketAddr) -> Option<SocketAddr> {
        match crate::proxy_protocol::read_header(stream, self.cfg.header_read_timeout).await {
            Ok(named) => Some(named.unwrap_or(peer)),
            Err(e) => {
                self.stats.client_error(ClientError::ProxyProtocol);
                tracing::debug!(client = %peer, error = %e, "refused a connection without a valid PROXY protocol header");
                None
            }
        }
    }

    /// How to reach `target` for a client that came in at `local`.
    pub(crate) fn reach(&self, target: &edge_core::balance::Target, local: SocketAddr) -> crate::upstream::Reach<'_> {
        crate::upstream::Reach {
            local,
            timeout: self.cfg.connect_timeout,
            tls: if target.backend.is_h2() { self.backend_tls_h2.as_ref() } else { self.backend_tls.as_ref() }
                .zip(target.backend.tls()),
        }
    }
}

/// What a request handler knows about its client connection.
///
/// Aligned to 8 bytes so that the request future, which holds one, keeps it among its other
/// 8-aligned arguments at the front of its state: at its natural 4-byte alignment it went after
/// every 8-aligned field of every state, and creating the future then copied those hundreds of
/// bytes (about a kilobyte and a half per request) along with it.
#[derive(Debug, Clone, Copy)]
#[repr(align(8))]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The listener address the client reached.
    pub local: SocketAddr,
    /// Whether TLS was terminated.
    pub tls: bool,
}
