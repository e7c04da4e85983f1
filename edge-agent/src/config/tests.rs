//! Configuration tests: settings as an operator types them (flags, then a config file), every
//! mistake named with its flag, variable or key and the fix.

use std::path::Path;
use std::time::Duration;

use edge_core::balance::{HashKey, StrategyKind};
use edge_core::discovery::dns::DnsQuery;

use super::*;
use crate::cli::{self, Command};

const FILE: &str = "edge.toml";

/// Settings from `edge-agent run` words.
fn words(w: &[&str]) -> Result<RunArgs, String> {
    let argv = ["edge-agent", "run"].iter().chain(w).map(|s| s.to_string());
    match cli::parse_words(argv, &crate::config::defaults()).map_err(|e| e.to_string())?.command {
        Command::Run(a) => Ok(*a),
        _ => Err("not run".into()),
    }
}

/// Validates flags `w` plus the config file `text`; any error as text.
fn load(text: &str, w: &[&str]) -> Result<Config, String> {
    let mut args = words(w)?;
    let (from_file, tables) = file::parse(Path::new(FILE), text).map_err(|e| e.to_string())?;
    args.fill_from(from_file);
    Config::build(args, &tables).map_err(|e| e.to_string())
}

fn flags(w: &[&str]) -> Result<Config, String> {
    load("", w)
}

const BASE: [&str; 4] = ["--listen", ":8080", "--backend", "127.0.0.1:9000"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    BASE.iter().chain(extra).copied().collect()
}

const EBPF: [&str; 4] = ["--mode", "ebpf", "--iface", "eth0"];
const USERSPACE: [&str; 2] = ["--mode", "userspace"];

#[test]
fn defaults_match_haproxy() {
    let c = flags(&BASE).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!((c.health.rise, c.health.fall), (2, 3));
    assert_eq!(c.health.interval, Duration::from_secs(2));
    assert_eq!(c.health.timeout, Duration::from_secs(1));
    assert_eq!(c.check, CheckKind::Tcp);
    assert_eq!(c.services[0].strategy, StrategySpec { kind: StrategyKind::RoundRobin, hash_key: HashKey::Source });
    assert_eq!(c.table_size, 65_537);
    assert_eq!(c.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(c.mode, ModeChoice::Auto);
    assert_eq!(c.ebpf.snat_ports, (16384, 32767));
    assert!(c.cpu_pinning && !c.ebpf.cleanup);
}

#[test]
fn every_default_in_help_is_the_one_applied() {
    // The defaults shown by --help, applied as if typed, give the same configuration as none.
    let d = defaults();
    let mut typed: Vec<String> = BASE.iter().map(|s| s.to_string()).collect();
    for (field, value) in d.shown() {
        typed.push(format!("--{}", field.replace('_', "-")));
        typed.push(value);
    }
    let typed: Vec<&str> = typed.iter().map(String::as_str).collect();
    let (a, b) = (flags(&BASE).unwrap(), flags(&typed).unwrap());
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn workers_are_pinned_unless_the_listeners_terminate_tls_or_the_operator_says() {
    let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
    assert!(flags(&BASE).unwrap().cpu_pinning);
    assert!(!flags(&with(&tls)).unwrap().cpu_pinning);
    let forced: Vec<&str> = with(&tls).into_iter().chain(["--cpu-pinning", "on"]).collect();
    assert!(flags(&forced).unwrap().cpu_pinning);
    assert!(!flags(&with(&["--cpu-pinning", "off"])).unwrap().cpu_pinning);
}

#[test]
fn health_path_implies_http() {
    assert_eq!(flags(&with(&["--health-path", "/healthz"])).unwrap().check, CheckKind::Http("/healthz".into()));
    assert_eq!(flags(&with(&["--health-check", "http"])).unwrap().check, CheckKind::Http("/".into()));
}

#[test]
fn a_grpc_service_name_implies_grpc_probes() {
    assert_eq!(flags(&with(&["--health-check", "grpc"])).unwrap().check, CheckKind::Grpc(String::new()));
    let named = flags(&with(&["--health-grpc-service", "shop.Cart"])).unwrap();
    assert_eq!(named.check, CheckKind::Grpc("shop.Cart".into()));
    let e = flags(&with(&["--health-check", "tcp", "--health-grpc-service", "shop.Cart"])).unwrap_err().to_string();
    assert!(e.contains("--health-grpc-service needs --health-check grpc"), "{e}");
    let e = flags(&with(&["--health-grpc-service", "two words"])).unwrap_err().to_string();
    assert!(e.contains("invalid --health-grpc-service") && e.contains("without spaces"), "{e}");
}

#[test]
fn errors_name_the_flag_and_the_fix() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (with(&["--health-interval", "2x"]), "invalid --health-interval '2x': '2x' is not a duration"),
        (with(&["--rise", "0"]), "invalid --rise '0': use an integer from 1 to 100"),
        (with(&["--fall", "many"]), "invalid --fall 'many'"),
        (with(&["--strategy", "random"]), "invalid --strategy 'random'"),
        (with(&["--hash-key", "cookie"]), "invalid --hash-key 'cookie'"),
        (with(&["--table-size", "65536"]), "not a prime"),
        (with(&["--backend", "nohost"]), "invalid --backend 'nohost'"),
        (with(&["--backend", "1.2.3.4:80,weight=300"]), "1 to 256"),
        (with(&["--backend", "1.2.3.4:80,weight=1,weight=2"]), "gives weight twice; give it once"),
        (vec!["--listen", "8080", "--backend", "127.0.0.1:9"], "invalid --listen '8080': write IP:PORT"),
        (with(&["--mode", "kernel"]), "invalid --mode 'kernel': use auto, ebpf or userspace"),
        (with(&["--mode", "ebpf"]), "--mode ebpf needs a service; give --vip"),
        (
            with(&["--mode", "ebpf", "--vip", "10.0.0.5:80"]),
            "--mode ebpf needs the client-facing interface; give --iface",
        ),
        (with(&["--vip", "10.0.0.5:53/udp"]), "a UDP --vip needs --mode ebpf"),
        (with(&["--vip", "10.0.0.5"]), "invalid --vip '10.0.0.5'"),
        (
            with(&["--mode", "ebpf", "--vip", "10.0.0.5:80", "--iface", "eth0", "--hash-key", "header:x-user"]),
            "the eBPF data plane sees packets, not HTTP headers",
        ),
        (
            vec!["--mode", "ebpf", "--vip", "10.0.0.5:80", "--iface", "eth0", "--backend", "10.0.1.2:80,proxy=v2"],
            "backend 10.0.1.2:80,proxy=v2 asks for the PROXY protocol, which the eBPF data plane cannot speak",
        ),
        (
            vec!["--mode", "ebpf", "--vip", "10.0.0.5:80", "--iface", "eth0", "--backend", "10.0.1.2:443,tls"],
            "backend 10.0.1.2:443,tls asks for TLS, which the eBPF data plane cannot speak",
        ),
        (with(&["--backend-cert", "c.pem"]), "--backend-cert needs --backend-key"),
        (with(&["--backend-key", "k.pem"]), "--backend-key needs --backend-cert"),
        (vec!["--backend", "127.0.0.1:9000"], "nothing to listen on"),
        (vec!["--listen", ":8080"], "no backends"),
        (with(&["--tls-cert", "c.pem"]), "--tls-cert needs --tls-key"),
        (with(&["--health-check", "icmp"]), "invalid --health-check 'icmp': use tcp, http, grpc or udp"),
        (with(&["--health-check", "tcp", "--health-path", "/"]), "--health-path needs --health-check http"),
        (with(&["--health-path", "healthz"]), "absolute path"),
        (with(&["--max-header-bytes", "100"]), "8192 to 1048576"),
        (with(&["--log-format", "xml"]), "use text or json"),
        (with(&["--panic-threshold", "120"]), "0 to 100"),
        (with(&["--retry-on", "5xx"]), "unknown condition '5xx'"),
        (with(&["--health-fast-interval", "5s"]), "longer than --health-interval"),
        (with(&["--outlier-base-ejection", "10m"]), "shorter than --outlier-base-ejection"),
        (with(&["--health-jitter", "80"]), "0 to 50"),
        (with(&["--cpu-pinning", "maybe"]), "use on or off (or true/false, yes/no, 1/0)"),
        (with(&["--backend", "127.0.0.1:9000"]), "twice"),
        (with(&["--listen-tcp", ":8080"]), "0.0.0.0:8080 is given as a listener twice"),
        (with(&["--snat-ports", "20000-10000"]), "invalid --snat-ports '20000-10000'"),
        (with(&["--udp-timeout", "10ms"]), "must be at least 1s"),
    ];
    for (w, want) in cases {
        let e = flags(&w).unwrap_err();
        assert!(e.contains(want), "{w:?}: expected {want:?} in {e:?}");
        assert!(!e.trim_end().ends_with('.'), "no trailing period: {e:?}");
    }
}

#[test]
fn cleanup_takes_the_usual_spellings_on_the_command_line() {
    assert!(flags(&with(&["--cleanup"])).unwrap().ebpf.cleanup);
    assert!(flags(&with(&["--cleanup=yes"])).unwrap().ebpf.cleanup);
    assert!(!flags(&with(&["--cleanup=off"])).unwrap().ebpf.cleanup);
}

#[test]
fn the_file_fills_only_what_flags_left_unset() {
    let text = "listen = \":80\"\nbackend = [\"10.0.0.1:80\"]\nrise = 3\nfall = 4\nhealth_interval = \"1s\"\n";
    let c = load(text, &["--backend", "10.0.0.9:80", "--rise", "5"]).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:80".parse().unwrap()]);
    let backends: Vec<String> = c.services[0].backends.iter().map(ToString::to_string).collect();
    assert_eq!(backends, ["10.0.0.9:80"], "the command line wins");
    assert_eq!((c.health.rise, c.health.fall), (5, 4), "the command line wins");
    assert_eq!(c.health.interval, Duration::from_secs(1));
}

#[test]
fn a_boolean_in_the_file_is_a_boolean() {
    let c = load("cleanup = true", &with(&[])).unwrap();
    assert!(c.ebpf.cleanup);
    let e = load("cleanup = \"yes\"", &with(&[])).unwrap_err();
    assert!(e.contains("config file edge.toml: key 'cleanup' must be true or false"), "{e}");
}

#[test]
fn an_unreadable_config_file_is_a_start_up_problem() {
    let mut args = words(&BASE).unwrap();
    args.config = Some(crate::values::FilePath("/nonexistent/edge.toml".into()));
    let e = Config::load(args).unwrap_err();
    assert!(matches!(e, ConfigError::Unreadable { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot read config file /nonexistent/edge.toml"), "{e}");
}

const TWO: &str = r#"
strategy = "least-connections"

[[service]]
name = "web"
vip = "10.0.0.5:80"
backend = ["10.0.1.2:80", "10.0.1.3:80,weight=2"]

[[service]]
vip = "10.0.0.5:53/udp"
backends = "10.0.1.4:53"
backends_file = "/etc/edge/dns.json"
strategy = "consistent-hash"
hash-key = "source"
"#;

#[test]
fn services_parse_with_defaults() {
    let c = load(TWO, &EBPF).unwrap();
    assert_eq!(c.services.len(), 2, "no top-level service without top-level backends");
    let (web, dns) = (&c.services[0], &c.services[1]);
    assert_eq!(web.name, "web");
    assert_eq!(web.vip, Some("10.0.0.5:80".parse().unwrap()));
    assert_eq!(web.backends.len(), 2);
    assert_eq!(web.backends[1].weight, 2);
    assert_eq!(web.strategy.kind, StrategyKind::LeastConnections, "the top-level strategy is the default");
    assert_eq!(web.origin, Origin::File(FILE.into()));
    assert_eq!(dns.name, "10.0.0.5:53/udp", "the name defaults to the VIP text");
    assert_eq!(dns.backends_file, Some(PathBuf::from("/etc/edge/dns.json")));
    assert_eq!(dns.strategy, StrategySpec { kind: StrategyKind::ConsistentHash, hash_key: HashKey::Source });
}

#[test]
fn top_level_service_comes_first() {
    let w: Vec<&str> = EBPF.iter().chain(&["--vip", "10.0.0.6:80", "--backend", "10.0.2.2:80"]).copied().collect();
    let c = load(TWO, &w).unwrap();
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["10.0.0.6:80", "web", "10.0.0.5:53/udp"]);
    assert_eq!(c.services[0].origin, Origin::TopLevel);

    // Without --vip the top-level backends still make a service, for the listeners.
    let w: Vec<&str> = USERSPACE.iter().chain(&["--listen", ":8080", "--backend", "10.0.2.2:80"]).copied().collect();
    let c = load(&TWO.replace("/udp", ""), &w).unwrap();
    assert_eq!(c.services[0].name, DEFAULT_SERVICE_NAME);
    assert_eq!(c.services[0].vip, None);
}

#[test]
fn services_alone_are_something_to_listen_on() {
    let c = load("[[service]]\nvip = \"127.0.0.1:8081\"\nbackend = \"127.0.0.1:9000\"\n", &USERSPACE).unwrap();
    assert_eq!(c.services.len(), 1);
    assert!(c.listen.is_empty() && c.listen_tcp.is_empty());
    let c = load("", &["--listen", ":8080", "--backend", "10.0.2.2:80"]).unwrap();
    assert_eq!((c.services.len(), c.services[0].name.as_str(), c.services[0].vip), (1, DEFAULT_SERVICE_NAME, None));
}

#[test]
fn bad_services_name_the_service_the_file_and_the_fix() {
    let svc = |body: &str| format!("[[service]]\n{body}\n");
    let ok = "vip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"";
    let many: String = (1..=17).map(|i| svc(&format!("vip = \"10.0.0.5:{i}\"\nbackend = \"10.0.1.2:80\""))).collect();
    let ebpf: &[&str] = &EBPF;
    let userspace: &[&str] = &USERSPACE;
    let cases: Vec<(String, &[&str], &str)> = vec![
        (svc("backend = \"10.0.1.2:80\""), ebpf, "[[service]] #1: missing vip; add vip = \"IPV4:PORT\""),
        (svc("name = \"a\"\nbackend = \"10.0.1.2:80\""), ebpf, "[[service]] 'a' (#1): missing vip"),
        (svc("vip = \"10.0.0.5\"\nbackend = \"10.0.1.2:80\""), ebpf, "invalid vip '10.0.0.5': write IPV4:PORT"),
        (
            svc(ok) + &svc(&format!("name = \"10.0.0.5:80\"\n{}", ok.replace(":80\"", ":81\""))),
            ebpf,
            "[[service]] '10.0.0.5:80' (#2): the name '10.0.0.5:80' is also used by service '10.0.0.5:80'",
        ),
        (
            svc(ok) + &svc(&format!("name = \"b\"\n{ok}")),
            ebpf,
            "[[service]] 'b' (#2): vip 10.0.0.5:80 is also the VIP of service '10.0.0.5:80'",
        ),
        (many, ebpf, "17 services with a VIP (--vip included), but the eBPF maps hold at most 16"),
        (svc("vip = \"10.0.0.5:80\""), ebpf, "[[service]] '10.0.0.5:80' (#1): no backends; add backend ="),
        (
            svc(&format!("{ok}\nbakend = \"x\"")),
            ebpf,
            "unknown key 'bakend'; a service takes name, vip, backend, backends-file, consul-service, consul-tag, \
             consul-dc, dns-srv, dns-a, strategy, hash-key",
        ),
        (
            svc("vip = \"10.0.0.5:80\"\nconsul-tag = [\"v1\"]"),
            ebpf,
            "consul-tag and consul-dc filter consul-service; add consul-service = \"NAME\"",
        ),
        (svc("vip = \"10.0.0.5:80\"\ndns-a = [\"web.local\"]"), ebpf, "no port; write NAME:PORT"),
        (
            svc(&format!("{ok}\nretries = 2")),
            ebpf,
            "global settings such as timeouts and retries go at the top of the file",
        ),
        (
            svc(&format!("{ok}\nhealth-check = \"tcp\"\nhealth-path = \"/\"")),
            ebpf,
            "health-path needs health-check http; drop one of them",
        ),
        (svc(&format!("{ok}\nhealth-port = 0")), ebpf, "invalid health-port '0'"),
        (svc(&format!("{ok}\nhealth-fast-interval = \"5s\"")), ebpf, "health-fast-interval (5s) is longer"),
        (svc("vip = \"10.0.0.5:53/udp\"\nbackend = \"10.0.1.2:53\""), userspace, "a UDP vip needs --mode ebpf"),
        (svc("vip = \"10.0.0.5:53/udp\"\nbackend = \"10.0.1.2:53\""), &[], "a UDP vip needs --mode ebpf"),
        (svc(&format!("{ok}\nstrategy = \"random\"")), ebpf, "invalid strategy 'random': unknown strategy"),
        (svc(&format!("{ok}\nhash-key = \"cookie\"")), ebpf, "invalid hash-key 'cookie': unknown hash key"),
        (
            svc(&format!("{ok}\nhash-key = \"header:x-user\"")),
            ebpf,
            "invalid hash-key 'header:x-user': the eBPF data plane sees packets",
        ),
        (svc("vip = \"10.0.0.5:80\"\nbackend = \"nohost\""), ebpf, "invalid backend 'nohost'"),
        (
            svc("vip = \"10.0.0.5:80\"\nbackend = [\"10.0.1.2:80\", \"10.0.1.2:80\"]"),
            ebpf,
            "backend '10.0.1.2:80' is given twice",
        ),
        (svc(&format!("name = \"a b\"\n{ok}")), ebpf, "invalid name 'a b': use 1 to 64 letters"),
        ("service = 1".into(), ebpf, "'service' must be an array of tables"),
        ("service = [1]".into(), ebpf, "[[service]] #1: not a table"),
        (svc("vip = 5\nbackend = \"10.0.1.2:80\""), ebpf, "invalid vip '5'"),
        (svc("vip = [[1]]"), ebpf, "must be a string or a number"),
    ];
    for (text, w, want) in cases {
        let e = load(&text, w).unwrap_err();
        assert!(e.starts_with("config file edge.toml: "), "the file is named: {e:?}");
        assert!(e.contains(want), "expected {want:?} in {e:?}");
        assert!(!e.ends_with('.'), "no trailing period: {e:?}");
    }
}

#[test]
fn conflicts_with_the_top_level_settings() {
    let text = "[[service]]\nvip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"\n";
    let w: Vec<&str> = EBPF.iter().chain(&["--vip", "10.0.0.5:80", "--backend", "10.0.2.2:80"]).copied().collect();
    let e = load(text, &w).unwrap_err();
    assert!(e.contains("vip 10.0.0.5:80 is also the VIP of the --vip service"), "{e}");

    let text = "[[service]]\nvip = \"127.0.0.1:8080\"\nbackend = \"127.0.0.1:9000\"\n";
    let w: Vec<&str> = USERSPACE.iter().chain(&["--listen-tcp", "127.0.0.1:8080"]).copied().collect();
    let e = load(text, &w).unwrap_err();
    assert!(e.contains("vip 127.0.0.1:8080 is also a --listen-tcp address"), "{e}");

    let w: Vec<&str> = EBPF.iter().chain(&["--hash-key", "header:x-user"]).copied().collect();
    let e = load(&text.replace("127.0.0.1:8080", "10.0.0.5:80"), &w).unwrap_err();
    assert!(e.contains("invalid hash-key 'header:x-user' (taken from the top-level --hash-key)"), "{e}");
    // With a VIP the top-level service is the kernel's too, and its own check comes first.
    let w: Vec<&str> = w.iter().chain(&["--vip", "10.0.0.6:80", "--backend", "10.0.2.2:80"]).copied().collect();
    let e = load(&text.replace("127.0.0.1:8080", "10.0.0.5:80"), &w).unwrap_err();
    assert!(e.contains("invalid --hash-key 'header:x-user'"), "{e}");
    // A top-level service without a VIP is served by the userspace proxy even in eBPF mode: a
    // header key is fine for it, as long as no VIP service takes it over.
    let text = "[[service]]\nvip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"\nhash-key = \"source\"\n";
    let flags = ["--listen", ":8080", "--backend", "10.0.2.2:80", "--hash-key", "header:x-user"];
    let w: Vec<&str> = EBPF.iter().chain(&flags).copied().collect();
    let c = load(text, &w).unwrap();
    assert_eq!(c.services[0].strategy.hash_key.to_string(), "header:x-user");

    // Same address and port with another protocol is another service.
    let text = "[[service]]\nvip = \"10.0.0.5:53\"\nbackend = \"10.0.1.2:53\"\n\
                [[service]]\nvip = \"10.0.0.5:53/udp\"\nbackend = \"10.0.1.2:53\"\n";
    assert_eq!(load(text, &EBPF).unwrap().services.len(), 2);
}

#[test]
fn top_level_vip_without_backends_is_still_an_error() {
    let text = "[[service]]\nvip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"\n";
    let w: Vec<&str> = EBPF.iter().chain(&["--vip", "10.0.0.6:80"]).copied().collect();
    let e = load(text, &w).unwrap_err();
    assert!(e.contains("no backends; give --backend"), "{e}");
}

#[test]
fn sixteen_services_fit() {
    let text: String =
        (1..=16).map(|i| format!("[[service]]\nvip = \"10.0.0.5:{i}\"\nbackend = \"10.0.1.2:80\"\n")).collect();
    assert_eq!(load(&text, &EBPF).unwrap().services.len(), 16);
}

#[test]
fn each_service_has_its_own_probe_over_the_top_level_defaults() {
    let text = "[[service]]\nname = \"web\"\nvip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"\n\
                [[service]]\nname = \"api\"\nvip = \"10.0.0.5:81\"\nbackend = \"10.0.1.2:81\"\n\
                health-check = \"tcp\"\nhealth-port = 9000\nrise = 5\n\
                [[service]]\nname = \"dns\"\nvip = \"10.0.0.5:53/udp\"\nbackend = \"10.0.1.2:53\"\n\
                [[service]]\nname = \"ntp\"\nvip = \"10.0.0.5:123/udp\"\nbackend = \"10.0.1.2:123\"\n\
                health-path = \"/ntp/healthz\"\nhealth-port = 8080\n\
                [[service]]\nname = \"cart\"\nvip = \"10.0.0.5:50051\"\nbackend = \"10.0.1.2:50051\"\n\
                health-grpc-service = \"shop.Cart\"\n";
    let w: Vec<&str> = EBPF.iter().chain(&["--health-path", "/healthz", "--health-interval", "1s"]).copied().collect();
    let c = load(text, &w).unwrap();
    let by = |n: &str| c.services.iter().find(|s| s.name == n).unwrap().health.clone();
    let web = by("web");
    assert_eq!(
        (web.check, web.config.interval, web.config.port),
        (CheckKind::Http("/healthz".into()), Duration::from_secs(1), None)
    );
    let api = by("api");
    assert_eq!((api.check, api.config.port, api.config.rise), (CheckKind::Tcp, Some(9000), 5), "its own keys win");
    assert_eq!(api.config.interval, Duration::from_secs(1), "the rest is the top level's");
    // A UDP service probes with a DNS exchange unless it asks for another kind.
    assert_eq!(by("dns").check, CheckKind::Udp, "not the top level's http, which a UDP port cannot pass");
    let ntp = by("ntp");
    assert_eq!((ntp.check, ntp.config.port), (CheckKind::Http("/ntp/healthz".into()), Some(8080)));
    assert_eq!(by("cart").check, CheckKind::Grpc("shop.Cart".into()), "a gRPC service name implies grpc");
}

#[test]
fn discovery_sources_are_backends_at_the_top_level_and_in_services() {
    let file = "[[service]]\nvip = \"10.0.0.5:80\"\nconsul-service = \"api\"\nconsul-tags = [\"v1\", \"blue\"]\n\
                consul-dc = \"dc2\"\ndns-srv = \"_api._tcp.prod.local\"\ndns-a = [\"api.internal:8080\"]\n";
    let w: Vec<&str> = EBPF.iter().chain(&["--vip", "10.0.0.6:80", "--dns-a", "web.local:80"]).copied().collect();
    let c = load(file, &w).unwrap();
    let (top, api) = (&c.services[0], &c.services[1]);
    assert!(top.backends.is_empty() && top.discovery.consul.is_none());
    assert_eq!(top.discovery.dns, [DnsQuery::Addr { name: "web.local".into(), port: 80 }]);
    let consul = api.discovery.consul.as_ref().unwrap();
    assert_eq!(
        (consul.service.as_str(), consul.tags.clone(), consul.datacenter.as_deref()),
        ("api", vec!["v1".to_string(), "blue".to_string()], Some("dc2"))
    );
    assert_eq!(
        api.discovery.dns,
        [DnsQuery::Srv("_api._tcp.prod.local".into()), DnsQuery::Addr { name: "api.internal".into(), port: 8080 }]
    );
    let w: Vec<&str> = USERSPACE.iter().chain(&["--listen", ":8080"]).copied().collect();
    let e = load("", &w).unwrap_err().to_string();
    assert!(
        e.contains("no backends; give --backend HOST:PORT (repeatable), --backends-file PATH, --consul-service"),
        "{e}"
    );
    let w: Vec<&str> = USERSPACE
        .iter()
        .chain(&["--listen", ":8080", "--backend", "10.0.0.1:80", "--consul-dc", "x"])
        .copied()
        .collect();
    let e = load("", &w).unwrap_err().to_string();
    assert!(e.contains("--consul-tag and --consul-dc filter --consul-service"), "{e}");
}

/// `--vip IFACE:PORT` takes the interface's address on this host (lo: 127.0.0.1 everywhere), names
/// the service as written, and is the client-facing interface when `--iface` is not given.
#[test]
fn vip_by_interface_takes_its_address_and_names_the_interface() {
    let c = flags(&["--mode", "ebpf", "--vip", "lo:80", "--backend", "10.0.0.9:80"]).unwrap();
    assert_eq!(c.ebpf.vip.unwrap().to_string(), "127.0.0.1:80");
    assert_eq!(c.ebpf.ifaces, vec!["lo".to_string()]);
    assert_eq!(c.services[0].name, "lo:80");
    let c = flags(&["--mode", "ebpf", "--vip", "lo:80", "--iface", "eth0", "--backend", "10.0.0.9:80"]).unwrap();
    assert_eq!(c.ebpf.ifaces, vec!["eth0".to_string()], "--iface wins");
    let e = flags(&["--mode", "ebpf", "--vip", "nosuchif9:80", "--backend", "10.0.0.9:80"]).unwrap_err();
    assert!(e.starts_with("invalid --vip 'nosuchif9:80': interface nosuchif9 has no IPv4 address"), "{e}");
    let text = "[[service]]\nvip = \"lo:8081\"\nbackend = \"10.0.0.9:80\"\n";
    let c = load(text, &["--mode", "ebpf", "--iface", "lo"]).unwrap();
    let s = c.services.iter().find(|s| s.name == "lo:8081").expect("the table's service");
    assert_eq!(s.vip.unwrap().to_string(), "127.0.0.1:8081");
    let e =
        load("[[service]]\nvip = \"nosuchif9:80\"\nbackend = \"10.0.0.9:80\"\n", &["--mode", "ebpf", "--iface", "lo"])
            .unwrap_err();
    assert!(e.contains("invalid vip 'nosuchif9:80': interface nosuchif9"), "{e}");
}
