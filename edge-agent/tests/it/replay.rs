//! The strategy replay: built-in scenarios, compressed to a few seconds, hold the invariants that
//! do not depend on the machine.

use std::time::Duration;

use edge_agent::replay::{self, Figures};

async fn run(name: &str, secs: u64) -> Vec<Figures> {
    let s = replay::load(name).unwrap().scaled(Duration::from_secs(secs));
    replay::run_scenario(&s, false, replay::Planes { peers: false, ebpf: false }).await.expect("the scenario runs").runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_fails_no_idempotent_request_on_any_strategy() {
    for f in run("crash", 5).await {
        assert_eq!(f.success_idempotent, Some(1.0), "{}: {f:?}", f.strategy);
        assert!(f.detection_s.is_some_and(|d| d < 2.0), "{}: detected: {:?}", f.strategy, f.detection_s);
        assert!(f.amplification <= 1.2, "{}: {}", f.strategy, f.amplification);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flap_never_flaps() {
    for f in run("flap", 4).await {
        assert_eq!(f.flaps, Some(0), "{}: {f:?}", f.strategy);
        assert_eq!(f.success_idempotent, Some(1.0), "{}", f.strategy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_per_key_and_remap_only_the_lost_share() {
    // 9 s: the recovery at 6 s leaves 3 s for both agents to see it (0.5 to 0.6 s on an idle host,
    // more when the whole suite runs) and for keys to go home.
    let runs = run("replicas", 9).await;
    let f = &runs[0];
    let agree = f.agents_agree.expect("two agents");
    assert_eq!(agree[0], Some(1.0), "before the failure: {agree:?}");
    assert_eq!(agree[2], Some(1.0), "after the recovery: {agree:?}");
    let (moved, lost, ideal) =
        (f.remapped.expect("remapped"), f.remapped_lost.expect("lost"), f.remapped_ideal.expect("ideal"));
    // Exactly the keys of the lost backend move (Maglev adds a little of its own), and they are
    // about 1/N of the keys.
    assert!(moved >= lost && moved - lost < 0.05, "remapped {moved:.3}, of which {lost:.3} were on the lost backend");
    assert!((lost - ideal).abs() < 0.15, "the lost backend held {lost:.3} of the keys, 1/N is {ideal:.3}");
    assert!(f.moved_back.is_some_and(|b| b > 0.9), "keys go home after the recovery: {:?}", f.moved_back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_and_nginx_run_beside_edge_on_the_same_schedule() {
    for peer in replay::Peer::ALL {
        assert!(peer.binary().is_some(), "{} is not installed; run cargo xtask setup", peer.name());
    }
    let text = "name = \"peers\"\nduration = \"4s\"\nstrategies = [\"round-robin\"]\n[traffic]\nrate = 200\n\
                [agent]\nhealth-path = \"/healthz\"\nhealth-interval = \"250ms\"\n\
                [[backend]]\nname = \"a\"\n[[backend]]\nname = \"b\"\n[[backend]]\nname = \"c\"\n\
                [[event]]\nat = \"1s\"\nbackend = \"b\"\naction = \"crash\"\n";
    let s = replay::Scenario::parse("peers.toml", text).unwrap();
    let r =
        replay::run_scenario(&s, false, replay::Planes { peers: true, ebpf: false }).await.expect("the scenario runs");
    let planes: Vec<&str> = r.runs.iter().map(|f| f.plane.as_str()).collect();
    assert_eq!(planes, ["userspace", "haproxy", "nginx"], "not run: {:?}", r.not_run);
    for f in &r.runs {
        // Every plane's retries hide a crash from GETs, and the crashed backend's share drops.
        assert!(f.success_idempotent.is_some_and(|s| s > 0.99), "{}: {f:?}", f.plane);
        assert!(f.shares[1] < 0.3, "{}: b's share {:?}", f.plane, f.shares);
    }
}
