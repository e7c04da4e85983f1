//! Passive signals from the L4 data path: what happened to the SYNs the kernel forwarded. The
//! conntrack sweep shows each flow to this watcher, which reports per backend the connections that
//! were answered (SYN-ACK), refused (a RST answering the SYN, `CT_REFUSED`) or left unanswered
//! past [`SYN_ANSWER_BOUND`]. The dataplane actor feeds them into the backends' passive counters,
//! the same ones the userspace proxy feeds, so one outlier detection serves both data planes.
//!
//! Each flow counts once: the watcher remembers the SYNs it saw pending (and whether it already
//! reported them unanswered) from one sweep to the next.

use std::collections::HashMap;
use std::time::Duration;

use edge_common::{CT_NEW, CT_REFUSED, FlowKey, FlowValue, PROTO_TCP};

/// A SYN without an answer this long counts as unanswered: Linux retransmits a SYN after 1 s, so a
/// backend that has not answered by then is not accepting.
pub const SYN_ANSWER_BOUND: Duration = Duration::from_secs(1);

/// What the SYNs toward one backend came to since the last sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SynOutcomes {
    /// Answered with a SYN-ACK.
    pub answered: u64,
    /// Answered with a RST.
    pub refused: u64,
    /// Not answered within the bound.
    pub unanswered: u64,
}

/// The watcher's memory between sweeps.
#[derive(Debug, Default)]
pub struct SynWatch {
    /// SYNs pending at the last sweep, and whether they were already reported unanswered.
    pending: HashMap<FlowKey, bool>,
    next: HashMap<FlowKey, bool>,
    /// The last sweep's clock.
    last_ns: u64,
    /// Per backend id, this sweep's outcomes.
    outcomes: HashMap<u32, SynOutcomes>,
}

impl SynWatch {
    /// Looks at one TCP flow during a sweep at `now` (the data path's clock, in ns).
    pub fn observe(&mut self, key: &FlowKey, v: &FlowValue, now: u64) {
        if key.proto != PROTO_TCP {
            return;
        }
        let seen = self.pending.get(key).copied();
        let o = self.outcomes.entry(v.backend).or_default();
        match v.state {
            CT_NEW => {
                let late = now.saturating_sub(v.created_ns) > SYN_ANSWER_BOUND.as_nanos() as u64;
                let reported = seen.unwrap_or(false);
                if late && !reported {
                    o.unanswered += 1;
                }
                self.next.insert(*key, reported || late);
            }
            CT_REFUSED => o.refused += 1,
            // Answered: new since the last sweep, or pending then.
            _ if v.created_ns > self.last_ns || seen.is_some() => o.answered += 1,
            _ => {}
        }
    }

    /// Ends a sweep: returns its outcomes per backend id and starts the next.
    pub fn finish(&mut self, now: u64) -> HashMap<u32, SynOutcomes> {
        self.pending = std::mem::take(&mut self.next);
        self.last_ns = now;
        let mut out = std::mem::take(&mut self.outcomes);
        out.retain(|_, o| *o != SynOutcomes::default());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_common::{CT_ESTABLISHED, PROTO_UDP};

    const S: u64 = 1_000_000_000;

    fn key(port: u16) -> FlowKey {
        FlowKey { src_port: port, proto: PROTO_TCP, ..Default::default() }
    }

    fn flow(backend: u32, state: u8, created_ns: u64) -> FlowValue {
        FlowValue { backend, state, created_ns, last_seen_ns: created_ns, ..Default::default() }
    }

    #[test]
    fn each_syn_counts_once_as_what_it_came_to() {
        let mut w = SynWatch::default();
        // Sweep at 10 s: a fresh SYN (pending), a refused one, an answered new flow, an old SYN.
        w.observe(&key(1), &flow(7, CT_NEW, 10 * S - S / 2), 10 * S);
        w.observe(&key(2), &flow(7, CT_REFUSED, 10 * S - S / 4), 10 * S);
        w.observe(&key(3), &flow(8, CT_ESTABLISHED, 10 * S - S / 4), 10 * S);
        w.observe(&key(4), &flow(8, CT_NEW, 10 * S - 2 * S), 10 * S);
        w.observe(&FlowKey { proto: PROTO_UDP, ..key(5) }, &flow(8, CT_NEW, 0), 10 * S);
        let out = w.finish(10 * S);
        assert_eq!(out[&7], SynOutcomes { answered: 0, refused: 1, unanswered: 0 });
        assert_eq!(out[&8], SynOutcomes { answered: 1, refused: 0, unanswered: 1 });
        // Next sweep: the pending SYN got its SYN-ACK; the old one is still unanswered (not again);
        // the established flow is old news.
        w.observe(&key(1), &flow(7, CT_ESTABLISHED, 10 * S - S / 2), 10 * S + S / 2);
        w.observe(&key(3), &flow(8, CT_ESTABLISHED, 10 * S - S / 4), 10 * S + S / 2);
        w.observe(&key(4), &flow(8, CT_NEW, 10 * S - 2 * S), 10 * S + S / 2);
        let out = w.finish(10 * S + S / 2);
        assert_eq!(out.get(&7), Some(&SynOutcomes { answered: 1, refused: 0, unanswered: 0 }));
        assert_eq!(out.get(&8), None, "nothing new toward backend 8");
        // A pending SYN that crosses the bound later is reported then, once.
        w.observe(&key(9), &flow(7, CT_NEW, 11 * S), 11 * S + S / 4);
        assert_eq!(w.finish(11 * S + S / 4).get(&7), None);
        w.observe(&key(9), &flow(7, CT_NEW, 11 * S), 12 * S + S / 2);
        assert_eq!(w.finish(12 * S + S / 2)[&7].unanswered, 1);
        w.observe(&key(9), &flow(7, CT_NEW, 11 * S), 13 * S);
        assert_eq!(w.finish(13 * S).get(&7), None);
    }
}
