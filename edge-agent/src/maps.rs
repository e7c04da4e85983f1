//! `edge-agent maps services|backends|table|conntrack|stats [--json]`: the pinned maps of a
//! running agent, as tables for people or JSON for scripts. Reading never writes.

use std::fmt::Write as _;

use edge_dataplane::{OpenError, PinnedMaps};
use serde_json::json;

use crate::cli::MapsArgs;

/// A `maps` invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The maps are not there.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Unknown view.
    #[error("unknown map view '{0}'; use services, backends, table, conntrack or stats")]
    Unknown(String),
    /// No such service.
    #[error("no service with id {0}; see `edge-agent maps services`")]
    NoService(u32),
}

/// Renders the requested view.
pub fn render(args: &MapsArgs) -> Result<String, ViewError> {
    let what = args.what.trim().to_ascii_lowercase();
    if !["services", "backends", "table", "conntrack", "stats"].contains(&what.as_str()) {
        return Err(ViewError::Unknown(args.what.clone()));
    }
    let maps = PinnedMaps::open()?;
    let mut out = String::new();
    match what.as_str() {
        "services" => {
            let rows = maps.service_rows();
            if args.json {
                out = serde_json::to_string_pretty(&rows).unwrap_or_default();
            } else {
                let _ = writeln!(
                    out,
                    "{:>3}  {:<21} {:<5} {:<10} {:>4} {:>8} {:>12} {:>14} {:>10}",
                    "ID", "VIP", "PROTO", "HASH", "GEN", "BACKENDS", "PACKETS", "BYTES", "NEW_FLOWS"
                );
                for s in rows {
                    let _ = writeln!(
                        out,
                        "{:>3}  {:<21} {:<5} {:<10} {:>4} {:>8} {:>12} {:>14} {:>10}",
                        s.id,
                        s.vip,
                        s.proto,
                        s.hash,
                        s.generation,
                        s.backends,
                        s.stats.packets,
                        s.stats.bytes,
                        s.stats.new_flows
                    );
                }
            }
        }
        "backends" => {
            let rows = maps.backend_rows();
            if args.json {
                out = serde_json::to_string_pretty(&rows).unwrap_or_default();
            } else {
                let _ = writeln!(
                    out,
                    "{:>4} {:>3}  {:<21} {:<15} {:>12} {:>14} {:>10}",
                    "ID", "SVC", "BACKEND", "SNAT", "PACKETS", "BYTES", "NEW_FLOWS"
                );
                for b in rows {
                    let _ = writeln!(
                        out,
                        "{:>4} {:>3}  {:<21} {:<15} {:>12} {:>14} {:>10}",
                        b.id, b.service, b.addr, b.snat_addr, b.stats.packets, b.stats.bytes, b.stats.new_flows
                    );
                }
            }
        }
        "table" => {
            let (svc, slots) = maps.table(args.service).ok_or(ViewError::NoService(args.service))?;
            let mut share: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
            for s in &slots {
                *share.entry(*s).or_default() += 1;
            }
            if args.json {
                let shown: Vec<u32> = slots.iter().take(args.limit).copied().collect();
                out = serde_json::to_string_pretty(&json!({
                    "service": svc.id, "generation": svc.generation, "size": svc.table_size,
                    "slots_per_backend": share, "slots": shown,
                }))
                .unwrap_or_default();
            } else {
                let _ = writeln!(out, "service {} generation {} size {}", svc.id, svc.generation, svc.table_size);
                let _ = writeln!(out, "{:>8} {:>8} {:>7}", "BACKEND", "SLOTS", "SHARE");
                for (b, n) in &share {
                    let pct = 100.0 * *n as f64 / slots.len().max(1) as f64;
                    let _ = writeln!(out, "{b:>8} {n:>8} {pct:>6.2}%");
                }
                let first: Vec<String> = slots.iter().take(args.limit.min(32)).map(u32::to_string).collect();
                let _ = writeln!(out, "first slots: {}", first.join(" "));
            }
        }
        "conntrack" => {
            let rows = maps.flow_rows(args.limit);
            if args.json {
                out = serde_json::to_string_pretty(&rows).unwrap_or_default();
            } else {
                let _ = writeln!(
                    out,
                    "{:<21} {:<21} {:<5} {:>7} {:>8} {:<11} {:>9} {:>10}",
                    "CLIENT", "VIP", "PROTO", "BACKEND", "NAT_PORT", "STATE", "IDLE_MS", "AGE_MS"
                );
                for f in rows {
                    let _ = writeln!(
                        out,
                        "{:<21} {:<21} {:<5} {:>7} {:>8} {:<11} {:>9} {:>10}",
                        f.client, f.vip, f.proto, f.backend, f.nat_port, f.state, f.idle_ms, f.age_ms
                    );
                }
            }
        }
        _ => {
            let events = maps.event_counts();
            if args.json {
                let m: serde_json::Map<String, serde_json::Value> =
                    events.iter().map(|(e, n)| (e.name().to_string(), json!(n))).collect();
                out = serde_json::to_string_pretty(&m).unwrap_or_default();
            } else {
                let _ = writeln!(out, "{:<20} {:>14}", "EVENT", "PACKETS");
                for (e, n) in events {
                    let _ = writeln!(out, "{:<20} {:>14}", e.name(), n);
                }
            }
        }
    }
    Ok(out)
}
