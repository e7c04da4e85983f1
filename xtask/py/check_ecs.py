"""Checks edge's ECS inputs in deploy/ecs/ against AWS's own ECS API model, and edge's rules.

The model is botocore's (the one the AWS CLI uses). botocore's ParamValidator checks required
members, types and unknown keys; it does not check enums, lengths, ranges or patterns, so this
script walks the same model for those. edge's own rules follow: what the eBPF and userspace task
definitions need, and how the stop timeout, drain timeout and services fit together.

Usage: python check_ecs.py DEPLOY_DIR            check the files; exit 1 with every finding
       python check_ecs.py DEPLOY_DIR --self-test break each rule once and expect a finding
"""

import copy
import json
import re
import sys
from pathlib import Path

import botocore.session
from botocore.validate import ParamValidator

# Each input file and the API call it is the input of.
FILES = {
    "task-ec2.json": "RegisterTaskDefinition",
    "task-fargate.json": "RegisterTaskDefinition",
    "service-ec2.json": "CreateService",
    "service-fargate.json": "CreateService",
    "express-fargate.json": "CreateExpressGatewayService",
}

# What the deploy workflow's envsubst puts in place of each placeholder, in the shape AWS expects.
PLACEHOLDERS = {
    "AWS_ACCOUNT_ID": "123456789012",
    "AWS_REGION": "eu-west-1",
    "EDGE_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/edge:0123abc",
    "EDGE_EC2_TARGET_GROUP_ARN": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/edge-ec2/0123456789abcdef",
    "EDGE_FARGATE_TARGET_GROUP_ARN": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/edge-fargate/0123456789abcdef",
    "EDGE_SUBNET_A": "subnet-0123456789abcdef0",
    "EDGE_SUBNET_B": "subnet-0123456789abcdef1",
    "EDGE_TASK_SECURITY_GROUP": "sg-0123456789abcdef0",
    "EDGE_AGENTS_REGISTRY_ARN": "arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-0123456789abcdef",
}

# ECS's documented ceiling for a container's stopTimeout, in seconds.
MAX_STOP_TIMEOUT = 120

# The CPU and memory pairs Fargate accepts for Linux tasks (MiB), from the ECS developer guide.
FARGATE_SIZES = {
    "256": [512, 1024, 2048],
    "512": list(range(1024, 4097, 1024)),
    "1024": list(range(2048, 8193, 1024)),
    "2048": list(range(4096, 16385, 1024)),
    "4096": list(range(8192, 30721, 1024)),
    "8192": list(range(16384, 61441, 4096)),
    "16384": list(range(32768, 122881, 8192)),
}


def render(text, where):
    """Substitutes ${NAME} placeholders; an unknown one is a finding, not a silent blank."""
    unknown = sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(f"{where}: unknown placeholder(s) {', '.join(unknown)}; use one of {', '.join(PLACEHOLDERS)}")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: PLACEHOLDERS[m.group(1)], text)


def model_findings(shape, value, path):
    """Enums, string and list lengths, number ranges and patterns, from the model's own metadata."""
    out = []
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for key, v in value.items():
            if key in shape.members:
                out += model_findings(shape.members[key], v, f"{path}.{key}")
    elif kind == "list" and isinstance(value, list):
        if "min" in meta and len(value) < meta["min"]:
            out.append(f"{path}: {len(value)} items, the API wants at least {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: {len(value)} items, the API allows at most {meta['max']}")
        for i, v in enumerate(value):
            out += model_findings(shape.member, v, f"{path}[{i}]")
    elif kind == "map" and isinstance(value, dict):
        for k, v in value.items():
            out += model_findings(shape.value, v, f"{path}.{k}")
    elif kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            out.append(f"{path}: '{value}' is not one of {', '.join(shape.enum)}")
        if "min" in meta and len(value) < meta["min"]:
            out.append(f"{path}: '{value}' is shorter than {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: '{value}' is longer than {meta['max']}")
        pattern = meta.get("pattern")
        # The model's patterns use Java classes (\p{L}); only plain ones are checked here.
        if pattern and "\\p{" not in pattern and not re.fullmatch(pattern, value):
            out.append(f"{path}: '{value}' does not match {pattern}")
    elif kind in ("integer", "long") and isinstance(value, int):
        if "min" in meta and value < meta["min"]:
            out.append(f"{path}: {value} is below {meta['min']}")
        if "max" in meta and value > meta["max"]:
            out.append(f"{path}: {value} is above {meta['max']}")
    return out


def api_findings(model, operation, params, name):
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    out = []
    if report.has_errors():
        out += [f"{name}: {line.strip()}" for line in report.generate_report().splitlines() if line.strip()]
    out += [f"{name}: {f}" for f in model_findings(shape, params, operation)]
    return out


def env_of(container):
    return {e.get("name"): e.get("value") for e in container.get("environment", [])}


def seconds(text):
    """edge's duration syntax, as far as deploy/ uses it: 20s, 1m, 1m30s, 500ms."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text or ""):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# edge-agent's default --drain-timeout, used when a task does not set EDGE_DRAIN_TIMEOUT.
DEFAULT_DRAIN = "20s"


def edge_container(task, name):
    found = [c for c in task.get("containerDefinitions", []) if c.get("name") == "edge"]
    if not found:
        return None, [f"{name}: no container named edge (the deploy workflow renders the image into it)"]
    return found[0], []


def task_rules(task, name):
    c, out = edge_container(task, name)
    if c is None:
        return out
    env = env_of(c)
    health = c.get("healthCheck", {}).get("command")
    if health != ["CMD", "/edge-agent", "health"]:
        out.append(f"{name}: the health check must be [\"CMD\", \"/edge-agent\", \"health\"] (the image has no shell)")
    logs = c.get("logConfiguration", {})
    if logs.get("logDriver") != "awslogs" or "awslogs-group" not in logs.get("options", {}):
        out.append(f"{name}: logs go to CloudWatch: logDriver awslogs with an awslogs-group")
    if env.get("EDGE_LOG_FORMAT") != "json":
        out.append(f"{name}: set EDGE_LOG_FORMAT=json (CloudWatch Logs Insights parses JSON lines)")
    drain = seconds(env.get("EDGE_DRAIN_TIMEOUT", DEFAULT_DRAIN))
    stop = c.get("stopTimeout")
    if not isinstance(stop, int) or stop <= drain:
        out.append(
            f"{name}: stopTimeout ({stop}) must be above the drain timeout ({drain:g} s), or ECS kills edge mid-drain"
        )
    elif stop > MAX_STOP_TIMEOUT:
        out.append(f"{name}: stopTimeout {stop} is above ECS's ceiling of {MAX_STOP_TIMEOUT} s")
    ports = {p.get("containerPort") for p in c.get("portMappings", [])}
    admin = env.get("EDGE_ADMIN", "")
    if admin.startswith("0.0.0.0:") and "EDGE_ADMIN_TOKEN" not in {s.get("name") for s in c.get("secrets", [])}:
        out.append(f"{name}: an admin API on every address needs EDGE_ADMIN_TOKEN from a secret")
    if admin and admin.rsplit(":", 1)[-1].isdigit() and int(admin.rsplit(":", 1)[-1]) not in ports:
        out.append(f"{name}: the admin port of EDGE_ADMIN={admin} has no port mapping (Prometheus scrapes it)")
    compat = task.get("requiresCompatibilities", [])
    if "EC2" in compat:
        out += ec2_task_rules(task, c, env, name)
    if "FARGATE" in compat:
        out += fargate_task_rules(task, c, env, name)
    if not compat:
        out.append(f"{name}: say requiresCompatibilities (EC2 for eBPF, FARGATE for userspace)")
    return out


def ec2_task_rules(task, c, env, name):
    out = []
    if task.get("networkMode") != "host":
        out.append(f"{name}: the eBPF task needs networkMode host (XDP and TC attach to the host's interface)")
    if c.get("privileged") is not True:
        out.append(f"{name}: the eBPF task must be privileged (ECS's capability list has no BPF or PERFMON)")
    if str(c.get("user", "")).split(":")[0] not in ("0", "root"):
        out.append(f"{name}: the eBPF task runs as user 0 (the image's default user cannot load programs)")
    if env.get("EDGE_MODE") != "ebpf" or not env.get("EDGE_VIP"):
        out.append(f"{name}: set EDGE_MODE=ebpf and EDGE_VIP (for example ens5:80)")
    volumes = {v.get("name") for v in task.get("volumes", []) if v.get("host", {}).get("sourcePath") == "/sys/fs/bpf"}
    mounted = [
        m
        for m in c.get("mountPoints", [])
        if m.get("sourceVolume") in volumes and m.get("containerPath") == "/sys/fs/bpf" and not m.get("readOnly")
    ]
    if not mounted:
        out.append(
            f"{name}: mount the host's /sys/fs/bpf read-write at /sys/fs/bpf, so pinned maps (and the flows in"
            " them) outlive the task"
        )
    return out


def fargate_task_rules(task, c, env, name):
    out = []
    if task.get("networkMode") != "awsvpc":
        out.append(f"{name}: Fargate tasks use networkMode awsvpc")
    if c.get("privileged"):
        out.append(f"{name}: a Fargate task is never privileged (Fargate refuses it, and userspace mode needs none)")
    caps = c.get("linuxParameters", {}).get("capabilities", {}).get("add", [])
    if set(caps) - {"SYS_PTRACE"}:
        out.append(f"{name}: Fargate adds no capability but SYS_PTRACE; drop {', '.join(sorted(set(caps) - {'SYS_PTRACE'}))}")
    if any("host" in v for v in task.get("volumes", [])):
        out.append(f"{name}: Fargate has no host volumes")
    if str(c.get("user", "")).split(":")[0] in ("", "0", "root"):
        out.append(f"{name}: run the userspace task as a non-root user (65534:65534, the image's own)")
    if env.get("EDGE_MODE") != "userspace":
        out.append(f"{name}: set EDGE_MODE=userspace (Fargate allows no eBPF)")
    cpu, memory = task.get("cpu"), task.get("memory")
    if cpu not in FARGATE_SIZES or not str(memory).isdigit() or int(memory) not in FARGATE_SIZES[cpu]:
        out.append(f"{name}: cpu {cpu} with memory {memory} is not a Fargate size")
    return out


def service_rules(service, task, name):
    out = []
    dc = service.get("deploymentConfiguration", {})
    breaker = dc.get("deploymentCircuitBreaker", {})
    if not (breaker.get("enable") and breaker.get("rollback")):
        out.append(f"{name}: turn the deployment circuit breaker on with rollback")
    if service.get("deploymentController", {"type": "ECS"}).get("type") != "ECS":
        out.append(f"{name}: the circuit breaker needs the rolling update (ECS) deployment controller")
    if service.get("taskDefinition") != task.get("family"):
        out.append(f"{name}: taskDefinition {service.get('taskDefinition')} is not the family {task.get('family')}")
    c, _ = edge_container(task, name)
    ports = {p.get("containerPort") for p in (c or {}).get("portMappings", [])}
    for lb in service.get("loadBalancers", []):
        if lb.get("containerName") != "edge" or lb.get("containerPort") not in ports:
            out.append(f"{name}: the load balancer's container edge:{lb.get('containerPort')} is not a port mapping")
    if not service.get("loadBalancers"):
        out.append(f"{name}: put a load balancer in front (an NLB for eBPF on EC2, an ALB or NLB for Fargate)")
    if not service.get("healthCheckGracePeriodSeconds"):
        out.append(f"{name}: give a health-check grace period (the first probe round needs a moment)")
    daemon = service.get("schedulingStrategy") == "DAEMON"
    if "EC2" in task.get("requiresCompatibilities", []):
        if not daemon:
            out.append(f"{name}: the eBPF agent is one per host: schedulingStrategy DAEMON")
        if dc.get("maximumPercent", 100) != 100 or not 0 <= dc.get("minimumHealthyPercent", 0) < 100:
            out.append(
                f"{name}: a DAEMON service replaces in place: maximumPercent 100 and minimumHealthyPercent below 100"
            )
    else:
        if daemon or service.get("desiredCount", 0) < 2:
            out.append(f"{name}: run at least 2 REPLICA tasks, in two zones")
        if dc.get("minimumHealthyPercent", 100) < 100 or dc.get("maximumPercent", 200) <= 100:
            out.append(f"{name}: keep every task serving during a deploy: minimumHealthyPercent 100, maximumPercent above 100")
    return out


def express_rules(express, name):
    out = []
    container = express.get("primaryContainer", {})
    env = env_of(container)
    if env.get("EDGE_MODE") != "userspace":
        out.append(f"{name}: set EDGE_MODE=userspace (Express Mode runs on Fargate)")
    listen = env.get("EDGE_LISTEN", "")
    if not listen.endswith(f":{container.get('containerPort')}"):
        out.append(f"{name}: containerPort {container.get('containerPort')} is not the port of EDGE_LISTEN={listen}")
    if "awsLogsConfiguration" not in container:
        out.append(f"{name}: send logs to CloudWatch (awsLogsConfiguration)")
    return out


# Fields the template fills from its own resources, not copies of the JSON.
TEMPLATE_OWN = {"executionRoleArn", "taskRoleArn", "tags", "image", "valueFrom", "targetGroupArn", "cluster",
                "networkConfiguration", "serviceRegistries", "desiredCount", "propagateTags",
                "enableECSManagedTags", "serviceName"}
# Resource name in the template -> the JSON file it must agree with.
TEMPLATE_MIRRORS = {
    "Ec2TaskDefinition": "task-ec2.json",
    "FargateTaskDefinition": "task-fargate.json",
    "Ec2Service": "service-ec2.json",
    "FargateService": "service-fargate.json",
}


def resolve(value, params):
    """The template's value with parameter defaults in place of Ref and Sub (pseudo parameters as
    the placeholders render them), in the API's camelCase."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return params.get(value["Ref"], f"<ref {value['Ref']}>")
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: str(params.get(m.group(1), m.group(0))), value["Fn::Sub"])
        if len(value) == 1 and next(iter(value)).startswith("Fn::"):
            return f"<{next(iter(value))}>"
        return {k[:1].lower() + k[1:]: resolve(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, params) for v in value]
    return value


def differences(cfn, api, path):
    """Where the template's resource and the JSON disagree, leaving out TEMPLATE_OWN fields."""
    out = []
    if isinstance(api, dict) and isinstance(cfn, dict):
        for key in sorted(set(api) | set(cfn)):
            if key in TEMPLATE_OWN:
                continue
            if key not in cfn or key not in api:
                side = "the template" if key not in cfn else "the JSON"
                out.append(f"{path}.{key}: missing in {side}")
            else:
                out += differences(cfn[key], api[key], f"{path}.{key}")
    elif isinstance(api, list) and isinstance(cfn, list) and len(api) == len(cfn):
        for i, (c, a) in enumerate(zip(cfn, api)):
            out += differences(c, a, f"{path}[{i}]")
    elif cfn != api:
        out.append(f"{path}: the template has {cfn!r}, the JSON {api!r}")
    return out


def template_findings(template, docs):
    """The template's task definitions and services mirror the JSON inputs."""
    from cfnlint.decode import decode

    parsed, matches = decode(str(template))
    if matches or parsed is None:
        return [f"{template}: does not parse: {[str(m) for m in matches]}"]
    params = {name: p.get("Default") for name, p in parsed.get("Parameters", {}).items()}
    params.update({"AWS::Region": PLACEHOLDERS["AWS_REGION"], "AWS::AccountId": PLACEHOLDERS["AWS_ACCOUNT_ID"]})
    params["LogGroup"] = parsed["Resources"].get("LogGroup", {}).get("Properties", {}).get("LogGroupName")
    out = []
    for resource, name in TEMPLATE_MIRRORS.items():
        props = parsed["Resources"].get(resource, {}).get("Properties")
        if props is None:
            out.append(f"{template}: no resource {resource} (the mirror of {name})")
            continue
        cfn = resolve(props, params)
        if "containerDefinitions" in cfn:
            # A number parameter's default is a number; the API's stopTimeout is one too.
            for c in cfn["containerDefinitions"]:
                if isinstance(c.get("stopTimeout"), str) and c["stopTimeout"].isdigit():
                    c["stopTimeout"] = int(c["stopTimeout"])
        if str(cfn.get("taskDefinition", "")).startswith("<"):
            # The template refers to its own task definition resource; the family is checked above.
            cfn["taskDefinition"] = docs[name]["taskDefinition"]
        out += [f"{template} {resource} vs {name}: {d}" for d in differences(cfn, docs[name], "")]
    return out


def check(docs, model):
    out = []
    for name, operation in FILES.items():
        out += api_findings(model, operation, docs[name], name)
    out += task_rules(docs["task-ec2.json"], "task-ec2.json")
    out += task_rules(docs["task-fargate.json"], "task-fargate.json")
    out += service_rules(docs["service-ec2.json"], docs["task-ec2.json"], "service-ec2.json")
    out += service_rules(docs["service-fargate.json"], docs["task-fargate.json"], "service-fargate.json")
    out += express_rules(docs["express-fargate.json"], "express-fargate.json")
    return out


def check_all(deploy, docs, model):
    return check(docs, model) + template_findings(deploy / "cloudformation" / "edge.yaml", docs)


def load(deploy):
    docs = {}
    for name in FILES:
        path = deploy / "ecs" / name
        docs[name] = json.loads(render(path.read_text(), str(path)))
    return docs


def edge(doc):
    return [c for c in doc["containerDefinitions"] if c["name"] == "edge"][0]


def set_env(doc, key, value):
    for e in edge(doc)["environment"]:
        if e["name"] == key:
            e["value"] = value


# Each mutation breaks one thing; the check must name it (the text is part of its finding).
MUTATIONS = [
    ("required member missing", "task-ec2.json", lambda d: d.pop("containerDefinitions"), "Missing required"),
    ("wrong type", "task-ec2.json", lambda d: edge(d).update(memory="lots"), "Invalid type"),
    ("unknown key", "service-ec2.json", lambda d: d.update(circuitBreaker=True), "Unknown parameter"),
    ("enum", "task-fargate.json", lambda d: d.update(networkMode="bridged"), "is not one of"),
    ("list limit", "express-fargate.json", lambda d: d.update(tags=[{"key": f"k{i}", "value": "v"} for i in range(51)]), "at most 50"),
    ("Fargate privileged", "task-fargate.json", lambda d: edge(d).update(privileged=True), "never privileged"),
    ("Fargate capability", "task-fargate.json", lambda d: edge(d).update(linuxParameters={"capabilities": {"add": ["NET_ADMIN"]}}), "SYS_PTRACE"),
    ("Fargate size", "task-fargate.json", lambda d: d.update(memory="700"), "not a Fargate size"),
    ("EC2 not privileged", "task-ec2.json", lambda d: edge(d).update(privileged=False), "must be privileged"),
    ("EC2 without bpffs", "task-ec2.json", lambda d: edge(d).update(mountPoints=[]), "/sys/fs/bpf"),
    ("EC2 bridge network", "task-ec2.json", lambda d: d.update(networkMode="bridge"), "networkMode host"),
    ("stopTimeout at the drain timeout", "task-ec2.json", lambda d: edge(d).update(stopTimeout=20), "above the drain timeout"),
    ("drain timeout raised past stopTimeout", "task-fargate.json", lambda d: set_env(d, "EDGE_DRAIN_TIMEOUT", "1m"), "above the drain timeout"),
    ("stopTimeout past ECS's ceiling", "task-fargate.json", lambda d: edge(d).update(stopTimeout=300), "ceiling"),
    ("no JSON logs", "task-ec2.json", lambda d: set_env(d, "EDGE_LOG_FORMAT", "text"), "EDGE_LOG_FORMAT=json"),
    ("shell health check", "task-fargate.json", lambda d: edge(d)["healthCheck"].update(command=["CMD-SHELL", "curl localhost"]), "no shell"),
    ("EC2 service not DAEMON", "service-ec2.json", lambda d: d.update(schedulingStrategy="REPLICA", desiredCount=2), "DAEMON"),
    ("no rollback", "service-fargate.json", lambda d: d["deploymentConfiguration"]["deploymentCircuitBreaker"].update(rollback=False), "circuit breaker"),
    ("one replica", "service-fargate.json", lambda d: d.update(desiredCount=1), "at least 2"),
    ("load balancer on a port edge does not map", "service-fargate.json", lambda d: d["loadBalancers"][0].update(containerPort=81), "not a port mapping"),
    ("template out of step with the JSON", "task-ec2.json", lambda d: set_env(d, "EDGE_HEALTH_PATH", "/health"), "Ec2TaskDefinition vs task-ec2.json"),
    ("template service out of step", "service-fargate.json", lambda d: d.update(healthCheckGracePeriodSeconds=60), "FargateService vs service-fargate.json"),
    ("Express port not the listener", "express-fargate.json", lambda d: d["primaryContainer"].update(containerPort=80), "EDGE_LISTEN"),
]


def self_test(deploy, model):
    clean = check_all(deploy, load(deploy), model)
    failures = []
    if clean:
        failures.append(f"the shipped files are not clean: {clean}")
    for what, name, mutate, expect in MUTATIONS:
        docs = load(deploy)
        mutate(docs[name])
        found = check_all(deploy, docs, model)
        if not any(expect in f for f in found):
            failures.append(f"{what} ({name}) was not caught; findings: {found}")
    try:
        render("${EDGE_NO_SUCH}", "inline")
        failures.append("an unknown placeholder was not caught")
    except ValueError:
        pass
    return failures


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: check_ecs.py DEPLOY_DIR [--self-test]")
    deploy = Path(sys.argv[1])
    model = botocore.session.get_session().get_service_model("ecs")
    try:
        if "--self-test" in sys.argv[2:]:
            failures = self_test(deploy, model)
            for f in failures:
                print(f"self-test: {f}")
            print(f"check_ecs self-test: {len(MUTATIONS) + 1} mutations, {len(failures)} not caught")
            sys.exit(1 if failures else 0)
        findings = check_all(deploy, load(deploy), model)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        sys.exit(f"check_ecs: {e}")
    for f in findings:
        print(f)
    print(f"check_ecs: {len(FILES)} files against botocore {botocore.__version__}'s ECS model: {len(findings)} findings")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
