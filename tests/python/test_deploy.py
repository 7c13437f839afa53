"""The deployment files, checked offline with real parsers and validators.

- deploy/docker-compose.yml against the Compose Specification schema (check-jsonschema's
  vendored `vendor.compose-spec`), and against each other file it names: ports, commands,
  mounts, Prometheus targets, Grafana datasources;
- deploy/prometheus: `promtool check config`, `check rules`, and the rules' unit tests
  (tests/deploy/holdup-rules.test.yml);
- deploy/k8s: every resource `kubernetes-validate --strict` (schemas bundled with the
  package), native gRPC probes on the gRPC port, ports, annotations, autoscaler, load Job;
- deploy/Dockerfile: multi-stage, tokio_unstable, a small non-root runtime stage;
- grafana/: provisioning that matches the dashboards and holdup's exemplar label;
- every holdup command line in compose and the manifests, run with the real binary (addresses
  moved to loopback): the flags exist and their values validate.

Each validator is also shown a broken copy and must reject it, so a validator that checks
nothing cannot pass these tests.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules"
RULES_TEST = REPO / "tests" / "deploy" / "holdup-rules.test.yml"
K8S = DEPLOY / "k8s"
GRAFANA = REPO / "grafana"
RUN_TIMEOUT_S = 120

SERVICES = {"holdup", "upstream", "postgres", "jaeger", "prometheus", "grafana", "load"}


def tool(name: str, install: str) -> str:
    """A tool beside this Python (the venv) or on PATH; missing fails under CI, else skips."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found:
        return found
    message = f"{name} not found; install it with: {install}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=cwd)


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def flag(args: list[str], name: str) -> str:
    """The value of `--name=value` or `--name value` in an argument list."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    raise AssertionError(f"{name} not in {args}")


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ---------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    check = tool("check-jsonschema", "pip install --require-hashes -r tests/requirements.txt")
    return run(check, "--builtin-schema", "vendor.compose-spec", str(path))


def test_compose_file_matches_the_compose_spec(tmp_path):
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same validator rejects a service with a misspelt key and a port that is a mapping.
    broken = load_yaml(COMPOSE)
    broken["services"]["holdup"]["comand"] = ["serve"]
    broken["services"]["grafana"]["ports"] = {"3000": 3000}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = check_compose_schema(tmp_path / "docker-compose.yml")
    assert result.returncode != 0, "check-jsonschema accepted a broken compose file"
    assert "comand" in result.stdout + result.stderr


def test_compose_services_and_pinned_images(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), (name, image)
    # Jaeger: the release the tests run against (tests/tools.sh builds it from its Go module).
    tested = re.search(r"jaeger/internal/version\.latestVersion=v([\d.]+)[|\"]", (REPO / "tests" / "tools.sh").read_text())
    assert tested, "tests/tools.sh pins no Jaeger release"
    assert services["jaeger"]["image"] == f"jaegertracing/jaeger:{tested.group(1)}"
    # holdup and upstream are two containers of one image built from deploy/Dockerfile.
    for name in ("holdup", "upstream", "load"):
        assert services[name]["image"] == services["holdup"]["image"]
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (COMPOSE.parent / ".." / "deploy" / "Dockerfile").resolve() == DOCKERFILE


def test_compose_ports_are_loopback_only(compose):
    published = {}
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            host, host_port, container_port = str(mapping).split(":")
            assert host == "127.0.0.1", f"{name} publishes {mapping} beyond loopback"
            published[int(host_port)] = (name, int(container_port))
    for port, owner in {
        50051: "holdup", 9464: "holdup", 6669: "holdup", 8080: "upstream", 16686: "jaeger",
        4317: "jaeger", 4318: "jaeger", 9090: "prometheus", 3000: "grafana",
    }.items():
        assert published.get(port, (None,))[0] == owner, f"port {port}: {published.get(port)}"


def test_compose_wiring_agrees_across_files(compose):
    services = compose["services"]
    holdup = services["holdup"]["command"]
    assert holdup[0] == "serve"
    assert flag(holdup, "--database-url").startswith("postgres://")
    db = services["postgres"]["environment"]
    assert flag(holdup, "--database-url") == (
        f"postgres://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@postgres:5432/{db['POSTGRES_DB']}"
    )
    upstream = services["upstream"]["command"]
    assert upstream[0] == "upstream"
    upstream_port = port_of(flag(upstream, "--listen"))
    assert flag(holdup, "--upstream-url") == f"http://upstream:{upstream_port}"
    metrics_port = port_of(flag(holdup, "--metrics-addr"))
    for name in ("holdup", "upstream"):
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317", name
    assert services["holdup"]["environment"]["OTEL_SERVICE_NAME"] == "holdup"
    assert services["upstream"]["environment"]["OTEL_SERVICE_NAME"] == "holdup-upstream"

    # Prometheus: exemplar storage, and targets that are the services' real ports.
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    prometheus = load_yaml(PROMETHEUS)
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prometheus["scrape_configs"]
    }
    assert targets["holdup"] == [f"holdup:{metrics_port}"]
    assert targets["holdup-upstream"] == [f"upstream:{upstream_port}"]

    # Every bind mount names a path in this repository.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"

    # Grafana: the provisioned dashboard path is where compose mounts the dashboards.
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("."))
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "holdup.yml")["providers"][0]
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (GRAFANA / "dashboards" / Path(home).name).is_file(), home

    # Grafana's datasources point at the compose services.
    datasources = {d["uid"]: d for d in load_yaml(GRAFANA / "provisioning" / "datasources" / "holdup.yml")["datasources"]}
    assert datasources["prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["jaeger"]["url"] == "http://jaeger:16686"


# ---------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_with_tokio_unstable_and_a_small_non_root_runtime():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    build, runtime = stages[0], stages[-1]
    assert build[0].startswith("FROM rust:"), build[0]
    env = " ".join(i for i in build if i.upper().startswith("ENV "))
    assert re.search(r'RUSTFLAGS="[^"]*--cfg tokio_unstable', env), env
    assert any("cargo build --release --locked" in i for i in build)
    assert re.match(r"FROM gcr\.io/distroless/cc-debian\d+:nonroot\b", runtime[0]), runtime[0]
    users = [i.split()[1] for i in runtime if i.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", users
    assert any(i.startswith("COPY --from=build") for i in runtime)
    assert any(i.startswith("ENTRYPOINT") and "holdup" in i for i in runtime)
    # Everything the build stage copies exists and is let through the .dockerignore.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for instruction in build:
        if instruction.startswith("COPY ") and "--from" not in instruction:
            for source in instruction.split()[1:-1]:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded by the .dockerignore"
                copied.add(source.rstrip("/"))
    # Every target Cargo.toml names must be in the image's source, or cargo cannot read the
    # manifest there (tests/, examples/ and benches/ are left out of the image on purpose).
    manifest = tomllib.loads((REPO / "Cargo.toml").read_text())
    named = [manifest.get("lib", {}).get("path", "src/lib.rs")]
    for kind, folder in (("bin", "src/bin"), ("example", "examples"), ("test", "tests"), ("bench", "benches")):
        named += [t.get("path", f"{folder}/{t['name']}.rs") for t in manifest.get(kind, [])]
    for path in named:
        assert path.split("/")[0] in copied, f"Cargo.toml names {path}, which the image does not copy"


# ---------------------------------------------------------------- Prometheus


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus (tests/run.sh does)")


def test_promtool_accepts_the_config_and_rules():
    result = run(promtool(), "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr, result.stdout
    rules = sorted(str(p) for p in RULES.glob("*.yml"))
    assert rules
    result = run(promtool(), "check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout), result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path):
    broken = load_yaml(RULES / "holdup.yml")
    broken["groups"][0]["rules"][0]["expr"] = "histogram_quantile(0.99, sum by (le) (rate(x[1m]))"
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    result = run(promtool(), "check", "rules", str(tmp_path / "broken.yml"))
    assert result.returncode != 0, result.stdout


def test_rule_unit_tests_pass():
    result = run(promtool(), "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


# ---------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return load_yaml(K8S / "kustomization.yaml")


@pytest.fixture(scope="module")
def k8s(kustomization) -> dict[tuple[str, str], dict]:
    """Every resource of the kustomization, by (kind, name)."""
    resources = {}
    for file in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / file).read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in resources, f"{key} twice"
            resources[key] = doc
    return resources


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess:
    validate = tool("kubernetes-validate", "pip install --require-hashes -r tests/requirements.txt")
    return run(validate, "--strict", *map(str, paths))


def test_kustomization_lists_every_manifest(kustomization):
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == "holdup"
    assert kustomization["images"] == [{"name": "holdup", "newTag": "0.1.0"}]
    assert load_yaml(COMPOSE)["services"]["holdup"]["image"] == "holdup:0.1.0"


def test_manifests_validate_strictly_against_the_kubernetes_schemas(kustomization, tmp_path):
    paths = [K8S / f for f in kustomization["resources"]]
    result = kubernetes_validate(*paths)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource", result.stdout + result.stderr)
    assert len(passed) == sum(len(list(yaml.safe_load_all(p.read_text()))) for p in paths), result.stdout
    # --strict rejects an unknown field, and the schema a misplaced probe port.
    broken = list(yaml.safe_load_all((K8S / "holdup.yaml").read_text()))
    deployment = next(d for d in broken if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 50051
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump_all(broken))
    result = kubernetes_validate(tmp_path / "broken.yaml")
    assert result.returncode != 0, "kubernetes-validate --strict accepted an unknown field"


def test_kustomize_renders_valid_manifests(tmp_path):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        message = "kubectl not installed (it renders the kustomization); install it with: apt-get install kubectl"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = run(kubectl, "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    rendered = list(yaml.safe_load_all(result.stdout))
    assert all(d["metadata"].get("namespace") == "holdup" for d in rendered if d["kind"] != "Namespace")
    assert {c["image"] for d in rendered for c in containers(d)} == {"holdup:0.1.0", "postgres:17.6-alpine"}
    (tmp_path / "rendered.yaml").write_text(result.stdout)
    result = kubernetes_validate(tmp_path / "rendered.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "StatefulSet", "Job") else {}


def containers(doc: dict) -> list[dict]:
    return pod_spec(doc).get("containers", [])


def container_port(container: dict, name_or_number) -> int:
    for port in container["ports"]:
        if name_or_number in (port["name"], port["containerPort"]):
            return port["containerPort"]
    raise AssertionError(f"{container['name']} has no port {name_or_number}")


def test_holdup_uses_native_grpc_probes_on_its_grpc_port(k8s):
    deployment = k8s[("Deployment", "holdup")]
    (holdup,) = containers(deployment)
    assert holdup["args"][0] == "serve"
    grpc_port = port_of(flag(holdup["args"], "--listen"))
    assert container_port(holdup, "grpc") == grpc_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = holdup[probe]
        assert set(spec) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{probe}: not a gRPC probe"
        assert spec["grpc"]["port"] == grpc_port, f"{probe} probes port {spec['grpc']['port']}"
    # Readiness asks for the Lab service itself; liveness for the server ("").
    assert holdup["readinessProbe"]["grpc"]["service"] == "holdup.v1.Lab"
    assert holdup["livenessProbe"]["grpc"].get("service", "") == ""
    # The grace period outlasts the drain delay plus the drain.
    drain_ms = int(flag(holdup["args"], "--drain-delay-ms")) + int(flag(holdup["args"], "--grace-ms"))
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] * 1000 > drain_ms


def test_upstream_probes_its_healthz_on_its_http_port(k8s):
    (upstream,) = containers(k8s[("Deployment", "holdup-upstream")])
    assert upstream["args"][0] == "upstream"
    port = port_of(flag(upstream["args"], "--listen"))
    for probe in ("readinessProbe", "livenessProbe"):
        get = upstream[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert container_port(upstream, get["port"]) == port


def test_services_scrape_annotations_and_wiring(k8s):
    (holdup,) = containers(k8s[("Deployment", "holdup")])
    (upstream,) = containers(k8s[("Deployment", "holdup-upstream")])
    for deployment, container, metrics_port in [
        ("holdup", holdup, port_of(flag(holdup["args"], "--metrics-addr"))),
        ("holdup-upstream", upstream, port_of(flag(upstream["args"], "--listen"))),
    ]:
        doc = k8s[("Deployment", deployment)]
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == metrics_port
        assert annotations["prometheus.io/path"] == "/metrics"
        assert pod_spec(doc)["enableServiceLinks"] is False, "HOLDUP_* service links would clash with flags"
        # The Service selects the pods and targets ports the container has.
        service = k8s[("Service", deployment)]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            container_port(container, port["targetPort"])
    grpc_service = next(p for p in k8s[("Service", "holdup")]["spec"]["ports"] if p["name"] == "grpc")
    assert flag(holdup["args"], "--upstream-url") == (
        f"http://holdup-upstream:{k8s[('Service', 'holdup-upstream')]['spec']['ports'][0]['port']}"
    )
    # The database URL comes from the Secret that PostgreSQL is configured from.
    secret = k8s[("Secret", "holdup-db")]["stringData"]
    env = {e["name"]: e for e in holdup["env"]}
    assert env["HOLDUP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "holdup-db", "key": "HOLDUP_DATABASE_URL"
    }
    assert secret["HOLDUP_DATABASE_URL"] == (
        f"postgres://{secret['POSTGRES_USER']}:{secret['POSTGRES_PASSWORD']}@postgres:5432/{secret['POSTGRES_DB']}"
    )
    # The load Job targets the holdup Service's gRPC port.
    (load,) = containers(k8s[("Job", "holdup-load")])
    assert load["args"][0] == "load"
    assert flag(load["args"], "--target") == f"http://holdup:{grpc_service['port']}"


def test_every_pod_has_resources_and_runs_as_non_root(k8s):
    for (kind, name), doc in k8s.items():
        if not containers(doc):
            continue
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(doc):
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
            assert resources["limits"]["memory"], name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            if container["image"] == "holdup":
                assert spec["securityContext"]["runAsUser"] == 65532, name


def test_the_autoscaler_scales_the_holdup_deployment(k8s):
    hpa = k8s[("HorizontalPodAutoscaler", "holdup")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in k8s
    assert target["apiVersion"] == k8s[(target["kind"], target["name"])]["apiVersion"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (holdup,) = containers(k8s[("Deployment", "holdup")])
    assert holdup["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"


# ---------------------------------------------------------------- Grafana


def test_grafana_provisioning_matches_the_dashboards_and_the_exemplars():
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "holdup.yml")["datasources"]
    by_uid = {d["uid"]: d for d in datasources}
    assert {d["type"] for d in datasources} == {"prometheus", "jaeger"}
    destinations = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    # holdup's exemplar label is `trace_id` (src/telemetry/metrics.rs, TraceExemplar).
    metrics_rs = (REPO / "src" / "telemetry" / "metrics.rs").read_text()
    label = re.search(r"pub struct TraceExemplar \{\s*pub (\w+): String", metrics_rs).group(1)
    assert [(d["name"], by_uid[d["datasourceUid"]]["type"]) for d in destinations] == [(label, "jaeger")]

    uids = set()
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem, path.name
        assert board["uid"] not in uids
        uids.add(board["uid"])
        used = set()

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("datasource"), dict) and node["datasource"].get("type") != "grafana":
                    used.add(node["datasource"]["uid"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(board)
        assert used and used <= set(by_uid), f"{path.name} uses datasources {used - set(by_uid)}"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    assert len(uids) >= 5


def test_dashboards_cover_what_the_issue_asks_for():
    exprs = {
        path.stem: " ".join(
            t["expr"] for p in json.loads(path.read_text())["panels"] for t in p.get("targets", []) if "expr" in t
        )
        for path in (GRAFANA / "dashboards").glob("*.json")
    }
    every = " ".join(exprs.values())
    for metric in [
        "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
        "holdup_delay_seconds", "holdup_verdicts_total", "holdup_long_polls_total", "holdup_blame_seconds_total",
        "holdup_runtime_lag_seconds",
        "holdup_tokio_worker_busy_seconds_total", "holdup_tokio_global_queue_depth", "holdup_tokio_alive_tasks",
        "holdup_db_pool_size", "holdup_db_pool_in_use", "holdup_db_pool_waiters", "holdup_db_pool_wait_seconds",
        "holdup_upstream_attempts_total", "holdup_upstream_attempt_duration_seconds", "holdup_sim_requests_total",
    ]:
        assert metric in every, f"no dashboard shows {metric}"
    for component in ("busy", "scheduled", "idle", "queue"):
        assert f'component="{component}"' in exprs["holdup-delay"], component


# ---------------------------------------------------------------- the commands, for real


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_loopback(value: str, closed: int) -> str:
    """A container's argument made safe to run here: listen addresses become loopback port 0,
    other containers (`postgres:5432`, `http://jaeger:4317`) a closed loopback port."""
    value = re.sub(r"0\.0\.0\.0:\d+", "127.0.0.1:0", value)
    return re.sub(r"(://|@)[a-z][\w.-]*:\d+", rf"\g<1>127.0.0.1:{closed}", value)


def holdup_binary() -> Path:
    binary = Path(os.environ.get("HOLDUP_BIN", REPO / "target" / "debug" / "holdup"))
    if not binary.is_file():
        pytest.fail(f"holdup binary not found: {binary}; build it with `cargo build`", pytrace=False)
    return binary


def container_commands() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Every holdup command line of compose and Kubernetes, with its environment."""
    services = load_yaml(COMPOSE)["services"]
    k8s_docs = {
        (d["kind"], d["metadata"]["name"]): d
        for f in load_yaml(K8S / "kustomization.yaml")["resources"]
        for d in yaml.safe_load_all((K8S / f).read_text())
    }
    secret = k8s_docs[("Secret", "holdup-db")]["stringData"]

    def k8s_env(container):
        env = {}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "holdup-db", ref
                env[e["name"]] = secret[ref["key"]]
        return env

    commands = {}
    for name in ("holdup", "upstream"):
        commands[f"compose {name}"] = (services[name]["command"], services[name].get("environment", {}))
    commands["compose load"] = (services["load"]["entrypoint"][1:] + services["load"]["command"], {})
    for kind, name in (("Deployment", "holdup"), ("Deployment", "holdup-upstream"), ("Job", "holdup-load")):
        (container,) = k8s_docs[(kind, name)]["spec"]["template"]["spec"]["containers"]
        commands[f"k8s {name}"] = (container["args"], k8s_env(container))
    return commands


def base_env() -> dict[str, str]:
    """This environment without holdup's or OpenTelemetry's settings, in plain text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLDUP_", "OTEL_"))}
    env["NO_COLOR"] = "1"
    return env


def start_command(name: str, args: list[str], env: dict, closed: int, tmp_path: Path):
    """Starts a container's holdup command on loopback (see on_loopback); returns the process
    and the address it announced."""
    env = {**base_env(), **{k: on_loopback(str(v), closed) for k, v in env.items()}}
    args = [on_loopback(a, closed) for a in args]
    log = open(tmp_path / f"{name.replace(' ', '-')}.log", "wb")
    proc = subprocess.Popen([str(holdup_binary()), *args], stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read():
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        if match := re.search(r"listening on (?:http://)?(\S+)", line):
            return proc, match.group(1)
    proc.kill()
    pytest.fail(f"{name}: {args} did not start:\n{(tmp_path / log.name).read_text()}", pytrace=False)


def stop_command(name: str, proc, timeout: float = 30) -> None:
    """SIGTERM; the command must exit 0 within `timeout`."""
    proc.terminate()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{name} did not stop within {timeout:.0f} s of SIGTERM", pytrace=False)
    assert code == 0, f"{name} exited with {code} after SIGTERM"


def test_every_container_command_runs_with_the_real_binary(tmp_path):
    """The flags in compose and the manifests are real flags with valid values: each server
    command starts (listen addresses moved to loopback, peers to a closed port) and stops
    cleanly on SIGTERM; each load command runs briefly against the compose holdup."""
    binary = holdup_binary()
    closed = closed_port()
    commands = container_commands()
    assert len(commands) == 6, commands

    servers = {}
    try:
        for name in ("compose holdup", "compose upstream", "k8s holdup", "k8s holdup-upstream"):
            servers[name] = start_command(name, *commands[name], closed, tmp_path)
        target = servers["compose holdup"][1]
        for name in ("compose load", "k8s holdup-load"):
            args, _ = commands[name]
            args = [
                f"--target=http://{target}" if a.startswith("--target=") else
                "--duration=1s" if a.startswith("--duration=") else a
                for a in args
            ]
            assert args[0] == "load" and any(a.startswith("--target=") for a in args), args
            result = subprocess.run(
                [str(binary), *args, "--warmup=0s"], capture_output=True, text=True, timeout=60, env=base_env()
            )
            assert result.returncode == 0, f"{name}: {args}\n{result.stdout}{result.stderr}"
    finally:
        for name, (proc, _) in servers.items():
            if proc.poll() is None:
                stop_command(name, proc)


def test_the_probes_agree_with_grpc_health_probe(k8s, tmp_path):
    """Each native gRPC probe of the holdup Deployment, made by grpc-health-probe (the same
    grpc.health.v1 Check the kubelet sends: passes on SERVING only) against the manifest's own
    holdup command: every probe passes while it serves; after SIGTERM, during its
    --drain-delay-ms, readiness and liveness fail with NOT_SERVING (exit 4) from a server that
    still answers; once it has exited they fail to connect (exit 2)."""
    probe_bin = tool("grpc-health-probe", "tests/tools.sh grpc-health-probe, then put target/tools/go/bin on PATH")
    version = run(probe_bin, "-version")
    assert version.returncode == 0 and "v0.4.62" in version.stdout + version.stderr, version
    (holdup,) = containers(k8s[("Deployment", "holdup")])
    drain_s = int(flag(holdup["args"], "--drain-delay-ms")) / 1000
    assert drain_s >= 1, "a drain delay this short leaves no time to see NOT_SERVING"
    proc, addr = start_command("k8s holdup", *container_commands()["k8s holdup"], closed_port(), tmp_path)

    def probe(name: str) -> subprocess.CompletedProcess:
        spec = holdup[name]
        timeout = f"{spec.get('timeoutSeconds', 1)}s"  # the kubelet's default is 1 s
        service = spec["grpc"].get("service", "")
        return run(
            probe_bin, f"-addr={addr}", f"-service={service}",
            f"-connect-timeout={timeout}", f"-rpc-timeout={timeout}",
        )

    probes = ("startupProbe", "readinessProbe", "livenessProbe")
    try:
        for name in probes:
            result = probe(name)
            assert result.returncode == 0, f"{name} fails while serving: {result}"
            assert "status: SERVING" in result.stdout + result.stderr, result
        proc.terminate()
        signalled = time.monotonic()
        while (result := probe("readinessProbe")).returncode == 0:
            assert time.monotonic() - signalled < drain_s, "readiness still passes after the drain delay"
            time.sleep(0.05)
        liveness = probe("livenessProbe")
        draining_for = time.monotonic() - signalled
        assert draining_for < drain_s, f"the probes took {draining_for:.1f} s, beyond the drain delay"
        for name, failed in (("readinessProbe", result), ("livenessProbe", liveness)):
            assert failed.returncode == 4, f"{name} during the drain: {failed}"
            assert "NOT_SERVING" in failed.stdout + failed.stderr, failed
        code = proc.wait(timeout=drain_s + 30)
        assert code == 0, f"holdup exited with {code} after SIGTERM"
        gone = probe("readinessProbe")
        assert gone.returncode == 2, f"after exit: {gone}"
    finally:
        if proc.poll() is None:
            stop_command("k8s holdup", proc)
