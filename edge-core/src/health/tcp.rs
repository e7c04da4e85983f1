//! TCP connect probe: the backend passes when it accepts a connection.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{HealthCheck, ProbeError};
use crate::util::BoxFuture;

/// Passes when a TCP connection to the backend succeeds.
#[derive(Debug, Default, Clone)]
pub struct TcpCheck;

impl HealthCheck for TcpCheck {
    fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
        Box::pin(async move {
            TcpStream::connect(addr).await.map_err(|e| ProbeError::Connect(e.kind().to_string()))?;
            Ok("tcp connect ok".to_string())
        })
    }
}
