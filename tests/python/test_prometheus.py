"""The dashboards against a real Prometheus scraping a real holdup.

Starts `holdup upstream` and `holdup serve` (the two services of the compose stack, on
loopback), and the Debian `prometheus` binary with --enable-feature=exemplar-storage and a
config derived from deploy/prometheus/prometheus.yml (same jobs and rules, 1 s scrapes, test
targets). A short mixed load calls every RPC, with errors, a full pool, a full compute queue,
a deadline and long polls, so that every series the dashboards use exists. Then:

- every PromQL expression in every dashboard JSON (Grafana variables substituted) returns at
  least one series with a finite value, through Prometheus' HTTP API;
- every recording rule's expression does too, and every rule evaluates without error;
- the latency histogram's exemplars carry the trace ids of requests this test made, for
  every dashboard query that asks Grafana to show exemplars.
"""

from __future__ import annotations

import glob
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import yaml

from conftest import REPO, _holdup_bin

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULES = REPO / "deploy" / "prometheus" / "rules"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "holdup.yml"

START_TIMEOUT_S = 60
CALL_TIMEOUT_S = 10
# Prometheus scrapes and evaluates rules this often in the test.
SCRAPE_S = 1
# What Grafana's $__rate_interval / $__interval / $__range stand for here: the window must hold
# the whole load plus a few scrapes.
GRAFANA_INTERVALS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
TRACE_ID = re.compile(r"[0-9a-f]{32}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose stdout is read line by line and whose stderr goes to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name, self.args = name, args
        self.stderr_path = log_dir / f"{name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=REPO
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def describe(self) -> str:
        stderr = self.stderr_path.read_text("utf-8", "replace")[-4000:]
        return f"{self.name}: {' '.join(self.args)}\nstdout:\n" + "\n".join(self.stdout) + f"\nstderr:\n{stderr}"

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"{self.name} exited before printing /{pattern}/\n{self.describe()}", pytrace=False)
            if match := regex.search(line):
                return match
        pytest.fail(f"{self.name} did not print /{pattern}/ within {timeout} s\n{self.describe()}", pytrace=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


class Prom:
    def __init__(self, base: str):
        self.base = base

    def get(self, path: str, **params) -> dict:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        try:
            data = self.get("/api/v1/query", query=expr, time=time.time())
        except urllib.error.HTTPError as error:
            pytest.fail(f"Prometheus refused {expr!r}: {error.read().decode()}", pytrace=False)
        return data["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def prometheus_binary() -> str:
    """Debian's prometheus (tests/run.sh installs it); missing fails under CI, else skips."""
    found = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin")
    if found:
        return found
    message = "prometheus is not installed; install it with: apt-get install prometheus (tests/run.sh does)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def scrape_config(targets: dict[str, str]) -> dict:
    """deploy/prometheus/prometheus.yml with test targets, 1 s intervals, absolute rule paths."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(targets), f"deploy config scrapes {sorted(jobs)}; this test knows {sorted(targets)}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["global"].update(
        scrape_interval=f"{SCRAPE_S}s", scrape_timeout=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s"
    )
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / pattern) for pattern in config["rule_files"]]
    return config


# ---------------------------------------------------------------- the load


class Load:
    """Calls every RPC in every mode, with the failures the dashboards count."""

    def __init__(self, stubs, address: str):
        self.pb = stubs.pb2
        self.channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self.channel).result(timeout=CALL_TIMEOUT_S)
        self.lab = stubs.grpc.LabStub(self.channel)
        self.lock = threading.Lock()
        self.trace_ids: set[str] = set()
        self.codes: dict[tuple[str, str], int] = {}
        self.fast_calls = 0

    def call(self, method: str, request, timeout: float = CALL_TIMEOUT_S):
        try:
            reply = getattr(self.lab, method)(request, timeout=timeout)
            code = "OK"
        except grpc.RpcError as error:
            reply, code = None, error.code().name
        with self.lock:
            self.codes[(method, code)] = self.codes.get((method, code), 0) + 1
            if method == "Fast":
                self.fast_calls += 1
            if reply is not None and TRACE_ID.fullmatch(reply.diagnostics.trace_id):
                self.trace_ids.add(reply.diagnostics.trace_id)
        return reply

    def count(self, method: str, code: str) -> int:
        return self.codes.get((method, code), 0)

    def run(self, seconds: float) -> None:
        pb = self.pb
        until = time.monotonic() + seconds

        def fast():
            while time.monotonic() < until:
                self.call("Fast", pb.FastRequest(message="canary"))
                time.sleep(0.02)

        def cpu():
            while time.monotonic() < until:
                for mode in (pb.INLINE, pb.BLOCKING_POOL, pb.COOPERATIVE):
                    self.call("CpuBound", pb.CpuBoundRequest(mode=mode, work_ms=30))

        def compute_burst():
            # One compute thread and one queue slot: of six at once, some are refused.
            with ThreadPoolExecutor(6) as burst:
                for _ in range(6):
                    burst.submit(self.call, "CpuBound", pb.CpuBoundRequest(mode=pb.COMPUTE_POOL, work_ms=150))

        def sleeps():
            while time.monotonic() < until:
                self.call("Sleep", pb.SleepRequest(mode=pb.ASYNC, duration_ms=20))
                self.call("Sleep", pb.SleepRequest(mode=pb.BLOCKING, duration_ms=20))

        def backend_queries():
            while time.monotonic() < until:
                for query, key in ((pb.POINT, 1), (pb.SCAN, 7), (pb.QUERY_NONE, 0)):
                    self.call("SlowBackend", pb.SlowBackendRequest(hold_ms=20, query=query, key=key))

        def pool_burst():
            # Two connections, 300 ms acquire timeout, six 250 ms holds at once: two hold, two
            # queue and get in, two time out with UNAVAILABLE.
            with ThreadPoolExecutor(6) as burst:
                for _ in range(6):
                    burst.submit(
                        self.call, "SlowBackend", pb.SlowBackendRequest(hold_ms=250, query=pb.POINT, key=1)
                    )

        def upstream():
            U = pb.UpstreamCallRequest
            while time.monotonic() < until:
                self.call("UpstreamCall", U(latency_ms=5))
                self.call("UpstreamCall", U(latency_ms=5, new_client=True))
                self.call("UpstreamCall", U(latency_ms=2, error_rate=0.5, max_retries=2))
                self.call("UpstreamCall", U(latency_ms=1, error_rate=1.0, max_retries=0))
                self.call("UpstreamCall", U(stall_rate=1.0, attempt_timeout_ms=50, max_retries=0))

        def odd_ones():
            self.call("Sleep", pb.SleepRequest(mode=pb.ASYNC, duration_ms=1000), timeout=0.2)
            self.call("Sleep", pb.SleepRequest(mode=0, duration_ms=1))
            self.call("CpuBound", pb.CpuBoundRequest(mode=pb.INLINE, work_ms=0, iterations=0))

        jobs = [fast, cpu, compute_burst, sleeps, backend_queries, pool_burst, upstream, odd_ones]
        with ThreadPoolExecutor(len(jobs)) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result(timeout=seconds + 30)

    def close(self) -> None:
        self.channel.close()


# ---------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def stack(stubs, tmp_path_factory):
    prometheus = prometheus_binary()
    binary = _holdup_bin()
    if not binary.is_file():
        pytest.fail(f"holdup binary not found: {binary}; build it with `cargo build`", pytrace=False)
    work = tmp_path_factory.mktemp("prometheus")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLDUP_", "OTEL_"))}
    # Spans go to a closed loopback port: trace ids (and so exemplars) exist, nothing leaves.
    env.update(NO_COLOR="1", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    processes: list[Process] = []
    try:
        upstream = Process(
            "upstream",
            [str(binary), "upstream", "--listen", "127.0.0.1:0", "--no-console", "--sim-stall-ms", "1000"],
            env,
            work,
        )
        processes.append(upstream)
        upstream_addr = upstream.wait_for(r"listening on http://(\S+)", START_TIMEOUT_S).group(1)
        holdup = Process(
            "holdup",
            [
                str(binary), "serve", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
                "--no-console", "--workers", "2", "--seed-rows", "2000",
                "--db-pool-size", "2", "--db-acquire-timeout-ms", "300",
                "--compute-threads", "1", "--compute-queue", "1",
                "--upstream-url", f"http://{upstream_addr}",
            ],
            env,
            work,
        )
        processes.append(holdup)
        address = holdup.wait_for(r"^holdup listening on (\S+) ", START_TIMEOUT_S).group(1)
        metrics_addr = holdup.wait_for(r"^metrics at http://(\S+)/metrics", START_TIMEOUT_S).group(1)

        web = f"127.0.0.1:{free_port()}"
        config = scrape_config({"holdup": metrics_addr, "holdup-upstream": upstream_addr, "prometheus": web})
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        server = Process(
            "prometheus",
            [
                prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address={web}", "--enable-feature=exemplar-storage", "--log.level=warn",
            ],
            env,
            work,
        )
        processes.append(server)
        prom = Prom(f"http://{web}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Prometheus did not become ready\n" + server.describe(), pytrace=False)
            time.sleep(0.2)

        started = time.time()
        load = Load(stubs, address)
        try:
            load.run(seconds=6)
        finally:
            load.close()

        # Wait until Prometheus has scraped the last Fast call, then two more scrapes so every
        # series has at least two samples for rate().
        deadline = time.monotonic() + 20
        while prom.value('sum(grpc_server_started_total{grpc_method="Fast"})') != load.fast_calls:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Prometheus never saw all {load.fast_calls} Fast calls: "
                    f"{prom.query('grpc_server_started_total')}\n{holdup.describe()}",
                    pytrace=False,
                )
            time.sleep(0.2)
        time.sleep(2.5 * SCRAPE_S)
        yield {"prom": prom, "load": load, "started": started, "holdup": holdup}
        for process in processes:
            assert process.proc.poll() is None, f"{process.name} died during the test\n{process.describe()}"
    finally:
        for process in reversed(processes):
            process.stop()


# ---------------------------------------------------------------- Grafana expressions


def dashboard_targets() -> list[tuple[str, str, dict, dict]]:
    """(file, panel title, target, templating variables) for every Prometheus query."""
    found = []

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        for panel in panels(board["panels"]):
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append((path.name, panel["title"], target, variables))
    return found


def substitute(expr: str, variables: dict) -> str:
    """Grafana's variables as Grafana would expand them with "All" selected."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    for name, variable in variables.items():
        assert variable.get("includeAll") and "allValue" in variable, (
            f"variable ${name}: the test substitutes its All value; give it includeAll and allValue"
        )
        for form in (f"${{{name}}}", f"[[{name}]]", f"${name}"):
            expr = expr.replace(form, variable["allValue"])
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


def test_the_dashboards_have_queries():
    assert len(DASHBOARDS) >= 5, DASHBOARDS
    per_file = {name for name, *_ in dashboard_targets()}
    assert per_file == {p.name for p in DASHBOARDS}, "a dashboard without a single query"


def test_every_dashboard_query_returns_series(stack):
    prom: Prom = stack["prom"]
    empty, checked = [], 0
    for name, title, target, variables in dashboard_targets():
        expr = substitute(target["expr"], variables)
        result = prom.query(expr)
        checked += 1
        values = [float(sample["value"][1]) for sample in result]
        if not result:
            empty.append(f"{name} / {title}: no series for {expr}")
        elif not any(math.isfinite(v) for v in values):
            empty.append(f"{name} / {title}: only NaN/Inf for {expr}: {result}")
    assert checked >= 40, checked
    assert not empty, f"{len(empty)} of {checked} dashboard queries returned nothing:\n" + "\n".join(empty)


def test_template_variable_queries_find_values(stack):
    prom: Prom = stack["prom"]
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for variable in board.get("templating", {}).get("list", []):
            if variable["type"] != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
            assert match, f"{path.name} ${variable['name']}: unexpected variable query {query!r}"
            metric, label = match.groups()
            values = prom.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
            assert {"Fast", "CpuBound", "Sleep", "SlowBackend", "UpstreamCall"} <= set(values), values


def test_the_jaeger_to_metrics_query_returns_series(stack):
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    jaeger = next(ds for ds in datasources if ds["type"] == "jaeger")
    for query in jaeger["jsonData"]["tracesToMetrics"]["queries"]:
        expr = query["query"].replace("$__tags", 'grpc_method="Fast"')
        assert stack["prom"].query(expr), expr


# ---------------------------------------------------------------- rules


def test_every_rule_evaluates_and_every_recording_rule_has_series(stack):
    prom: Prom = stack["prom"]
    groups = prom.get("/api/v1/rules")["groups"]
    files = {Path(g["file"]).name for g in groups}
    assert files == {Path(p).name for p in glob.glob(str(RULES / "*.yml"))}, files
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules, "no rules loaded"
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not broken, broken
    empty = []
    for rule in rules:
        if rule["type"] == "recording":
            if not prom.query(rule["query"]):
                empty.append(f"{rule['name']}: {rule['query']}")
            elif not prom.query(rule["name"]):
                empty.append(f"{rule['name']}: recorded series missing")
    assert not empty, "\n".join(empty)


# ---------------------------------------------------------------- exemplars


def test_latency_exemplars_are_trace_ids_of_real_requests(stack):
    prom: Prom = stack["prom"]
    load: Load = stack["load"]
    assert load.trace_ids, "no reply carried a trace id"
    exemplar_targets = [(n, t, tg, v) for n, t, tg, v in dashboard_targets() if tg.get("exemplar")]
    assert exemplar_targets, "no dashboard query shows exemplars"
    assert any("grpc_server_handling_seconds" in tg["expr"] for _, _, tg, _ in exemplar_targets)
    for name, title, target, variables in exemplar_targets:
        expr = substitute(target["expr"], variables)
        data = prom.get("/api/v1/query_exemplars", query=expr, start=stack["started"] - 5, end=time.time())
        trace_ids = {e["labels"].get("trace_id") for series in data for e in series["exemplars"]}
        assert trace_ids, f"{name} / {title}: no exemplars for {expr}"
        assert all(TRACE_ID.fullmatch(t or "") for t in trace_ids), trace_ids
        assert trace_ids & load.trace_ids, (
            f"{name} / {title}: exemplar trace ids {sorted(trace_ids)[:5]} are none of the "
            f"{len(load.trace_ids)} trace ids the replies carried"
        )


# ---------------------------------------------------------------- the load itself


def test_the_load_produced_the_failures_the_dashboards_show(stack):
    load: Load = stack["load"]
    expected = [
        ("CpuBound", "RESOURCE_EXHAUSTED"),  # full compute queue
        ("SlowBackend", "UNAVAILABLE"),  # pool acquire timeout
        ("UpstreamCall", "UNAVAILABLE"),  # every attempt failed
        ("Sleep", "DEADLINE_EXCEEDED"),
        ("Sleep", "INVALID_ARGUMENT"),
    ]
    missing = [pair for pair in expected if not load.count(*pair)]
    assert not missing, f"{missing} never happened; codes seen: {load.codes}"
    for method in ("Fast", "CpuBound", "Sleep", "SlowBackend", "UpstreamCall"):
        assert load.count(method, "OK"), f"no successful {method}: {load.codes}"
    # Prometheus counted what the client saw.
    prom: Prom = stack["prom"]
    refused = prom.value('sum(grpc_server_handled_total{grpc_method="CpuBound", grpc_code="ResourceExhausted"})')
    assert refused == load.count("CpuBound", "RESOURCE_EXHAUSTED"), (refused, load.codes)
    assert prom.value("sum(holdup_compute_rejected_total)") == refused
    timeouts = prom.value('sum(holdup_upstream_attempts_total{outcome="timeout"})')
    assert timeouts and timeouts >= 1, timeouts
    assert prom.value('sum(holdup_long_polls_total{grpc_method="CpuBound"})') >= 1
    assert prom.value('sum(holdup_sim_requests_total{code="503"})') >= 1
