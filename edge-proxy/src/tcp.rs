//! The TCP proxy (`--listen-tcp`): pick a backend per connection, connect (with the PROXY header
//! and TLS a backend asks for; retrying once on another backend if the connect fails), then copy
//! bytes both ways, counting them, until both sides close or the connection idles past
//! `--idle-timeout`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_core::backend::{Failure, GatewayFailure};
use edge_core::balance::{PickSource, Target, request_hash};
use edge_core::util::GaugeGuard;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::accept::{Acceptor, accept_until_shutdown, drain};
use crate::relay::{Ended, relay};
use crate::served::Served;
use crate::stats::{ListenerKind, NoBackend, RetryOutcome, RetryReason};
use crate::upstream::pool::PoolKey;
use crate::upstream::stream::Stream;
use crate::upstream::{SendError, UpstreamConn};

/// The TCP proxy of one listener on one worker: it balances over the selector of the service the
/// listener serves.
#[derive(Debug)]
pub struct TcpProxy(Served);

impl TcpProxy {
    /// Builds the proxy.
    pub(crate) fn new(served: Served) -> Self {
        Self(served)
    }

    /// Connects to `t` for the client `peer` (PROXY header and TLS as the backend asks).
    async fn connect(&self, t: &Target, peer: SocketAddr, local: SocketAddr) -> Result<Stream, SendError> {
        // A TCP-mode connection's only passive signal is its connect.
        let r = UpstreamConn::connect_to(PoolKey::for_target(t, peer), &self.0.reach(t, local))
            .await
            .map(|c| c.into_parts().0);
        match &r {
            Ok(_) => t.backend.stats.passive_ok(),
            Err(_) => {
                t.backend.stats.failure(Failure::Connect);
                t.backend.stats.gateway_failure(GatewayFailure::Connect, 1);
            }
        }
        r
    }

    /// Proxies one client connection.
    pub async fn handle(&self, mut client: TcpStream, mut peer: SocketAddr, local: SocketAddr) {
        if self.0.cfg.accept_proxy_protocol {
            let Some(from) = self.0.accept_proxy_header(&mut client, peer).await else { return };
            peer = from;
        }
        let selector = self.0.selector.load_full();
        let hash = if selector.needs_hash() { request_hash(selector.hash_key(), peer, local, None) } else { 0 };
        let Some((mut target, source)) = selector.pick_admitted(hash) else {
            self.0.traffic.no_backend(NoBackend::Rejected);
            return;
        };
        if source == PickSource::Panic {
            self.0.traffic.no_backend(NoBackend::Panic);
        }
        let mut active = GaugeGuard::new(&target.backend.stats.active);
        let upstream = match self.connect(target, peer, local).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(backend = %target.id(), error = %e, "connect failed");
                let Some((other, _)) = selector.pick_other(hash, target.id()).filter(|(t, _)| t.backend.admit()) else {
                    self.0.traffic.retry_outcome(RetryOutcome::NoTarget);
                    return;
                };
                self.0.traffic.retry(RetryReason::Connect);
                target = other;
                active = GaugeGuard::new(&target.backend.stats.active);
                match self.connect(target, peer, local).await {
                    Ok(s) => {
                        self.0.traffic.retry_outcome(RetryOutcome::Succeeded);
                        s
                    }
                    Err(e) => {
                        self.0.traffic.retry_outcome(RetryOutcome::Failed);
                        tracing::debug!(backend = %target.id(), error = %e, "connect retry failed");
                        return;
                    }
                }
            }
        };
        let m = &target.backend.stats;
        m.tcp_connection();
        match relay(client, upstream, &target.backend, self.0.cfg.idle_timeout, std::future::pending()).await {
            Ended::Closed | Ended::Stopped => {}
            Ended::Idle => tracing::debug!(backend = %target.id(), "tcp connection idle; closing"),
            Ended::Error(e) => {
                if e.kind() != io::ErrorKind::ConnectionReset {
                    m.failure(Failure::Reset);
                }
                tracing::debug!(backend = %target.id(), error = %e, "tcp copy ended with an error");
            }
        }
        drop(active);
    }
}

/// Serves one TCP listener until `shutdown` turns true, then gives open connections up to `limit`
/// to finish before closing them.
pub async fn serve(mut listener: Acceptor, proxy: Arc<TcpProxy>, mut shutdown: watch::Receiver<bool>, limit: Duration) {
    let mut conns = tokio::task::JoinSet::new();
    let stats = proxy.0.stats.clone();
    accept_until_shutdown(&mut listener, &mut shutdown, &stats, ListenerKind::Tcp, &mut conns, |stream, peer| {
        let local = stream.local_addr().unwrap_or(peer);
        let proxy = proxy.clone();
        async move { proxy.handle(stream, peer, local).await }
    })
    .await;
    drop(listener);
    drain(&mut conns, limit, ListenerKind::Tcp, async {}).await;
}
