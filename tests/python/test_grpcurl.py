"""holdup.v1.Lab through the real grpcurl binary, over server reflection.

grpcurl exits with 64 + the gRPC status code when a call fails
(InvalidArgument 3 -> 67, DeadlineExceeded 4 -> 68, NotFound 5 -> 69,
Unavailable 14 -> 78).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import PROTO_ROOT, LAB_PROTO, SCAN_ROWS, SEED, SEED_ROWS, chain

RUN_TIMEOUT_S = 30
LAB_RPCS = {
    "Fast": ("FastRequest", "FastReply"),
    "SlowBackend": ("SlowBackendRequest", "SlowBackendReply"),
    "CpuBound": ("CpuBoundRequest", "CpuBoundReply"),
    "Sleep": ("SleepRequest", "SleepReply"),
    "UpstreamCall": ("UpstreamCallRequest", "UpstreamCallReply"),
}


@pytest.fixture(scope="module")
def run(grpcurl, server):
    """run(*args, data=None, target=True) -> CompletedProcess (text)."""

    def _run(*args: str, data=None, target: bool = True, extra=()):
        command = [grpcurl, "-plaintext", "-max-time", "20", *extra]
        if data is not None:
            command += ["-d", data if isinstance(data, str) else json.dumps(data)]
        if target:
            command.append(server)
        command += list(args)
        return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)

    return _run


def ok_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def check_diagnostics(reply: dict) -> dict:
    d = reply["diagnostics"]
    assert int(d["totalUs"]) > 0, d
    assert d["verdict"], d
    assert int(d["polls"]) >= 1, d
    return d


# ---------------------------------------------------------------- reflection


def test_list_services(run, request):
    result = run("list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {"holdup.v1.Lab", "grpc.health.v1.Health"} <= services, services
    # Each grpcurl asks the reflection version it speaks (1.8.6: v1alpha; 1.9 on: v1, falling
    # back to v1alpha), and that service lists itself.
    speaks = "v1alpha" if request.node.callspec.params["grpcurl"] == "1.8.6" else "v1"
    assert f"grpc.reflection.{speaks}.ServerReflection" in services, services


def test_list_lab_methods(run):
    result = run("list", "holdup.v1.Lab")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {f"holdup.v1.Lab.{rpc}" for rpc in LAB_RPCS}


def test_describe_lab(run):
    result = run("describe", "holdup.v1.Lab")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("holdup.v1.Lab is a service:"), result.stdout
    for rpc, (request, reply) in LAB_RPCS.items():
        pattern = (
            rf"rpc {rpc} \( \.holdup\.v1\.{request} \) returns \( \.holdup\.v1\.{reply} \);"
        )
        assert re.search(pattern, result.stdout), f"{rpc} missing:\n{result.stdout}"
    assert result.stdout.count("rpc ") == len(LAB_RPCS), result.stdout


def test_describe_enum(run):
    result = run("describe", "holdup.v1.CpuMode")
    assert result.returncode == 0, result.stderr
    for name, number in [("CPU_MODE_UNSPECIFIED", 0), ("INLINE", 1), ("BLOCKING_POOL", 2), ("COMPUTE_POOL", 3), ("COOPERATIVE", 4)]:
        assert f"{name} = {number};" in result.stdout, result.stdout


def _lab_symbols():
    """Every service, message and enum declared in lab.proto, read from the
    file itself (no import of generated code at collection time)."""
    text = (PROTO_ROOT / LAB_PROTO).read_text()
    names = re.findall(r"^(?:service|message|enum)\s+(\w+)", text, re.M)
    assert "Lab" in names and "Diagnostics" in names, names
    return [f"holdup.v1.{name}" for name in names]


@pytest.mark.parametrize("symbol", _lab_symbols())
def test_reflection_serves_the_repo_proto(run, symbol):
    """What the server describes over reflection is what proto/ declares."""
    served = run("describe", symbol)
    assert served.returncode == 0, served.stderr
    local = run(
        "describe",
        symbol,
        target=False,
        extra=("-import-path", str(PROTO_ROOT), "-proto", str(LAB_PROTO)),
    )
    assert local.returncode == 0, local.stderr
    assert served.stdout == local.stdout


# ---------------------------------------------------------------- calls


def test_fast(run):
    reply = ok_json(run("holdup.v1.Lab/Fast", data={"message": "hi from grpcurl"}))
    assert reply["message"] == "hi from grpcurl"
    check_diagnostics(reply)


@pytest.mark.parametrize("mode", ["INLINE", "BLOCKING_POOL", "COMPUTE_POOL", "COOPERATIVE"])
def test_cpu_bound_enum_by_name(run, mode):
    reply = ok_json(run("holdup.v1.Lab/CpuBound", data={"mode": mode, "iterations": 3000}))
    assert reply["mode"] == mode
    assert reply["iterations"] == "3000"  # uint64 is a JSON string
    assert reply["seed"] == SEED.hex()
    assert reply["digest"] == chain(SEED, 3000)
    check_diagnostics(reply)


def test_cpu_bound_work_ms_emit_defaults(run):
    reply = ok_json(
        run("holdup.v1.Lab/CpuBound", data='{"mode":"INLINE","work_ms":10}', extra=("-emit-defaults",))
    )
    assert reply["mode"] == "INLINE"
    assert reply["queueUs"] == "0"  # present only thanks to -emit-defaults
    assert int(reply["workUs"]) >= 10_000
    assert reply["digest"] == chain(SEED, int(reply["iterations"]))
    d = check_diagnostics(reply)
    assert d["verdict"] == "own-cpu", d


@pytest.mark.parametrize("mode", ["ASYNC", "BLOCKING"])
def test_sleep(run, mode):
    reply = ok_json(run("holdup.v1.Lab/Sleep", data={"mode": mode, "duration_ms": 20}))
    assert reply["mode"] == mode
    assert int(reply["sleptUs"]) >= 20_000
    check_diagnostics(reply)


@pytest.mark.parametrize(
    "query, key, rows",
    [("QUERY_NONE", 0, 0), ("POINT", 1, 1), ("POINT", SEED_ROWS, 1), ("SCAN", 5, SCAN_ROWS)],
)
def test_slow_backend(run, query, key, rows):
    reply = ok_json(
        run(
            "holdup.v1.Lab/SlowBackend",
            data={"hold_ms": 5, "query": query, "key": key},
            extra=("-emit-defaults",),
        )
    )
    assert int(reply["rows"]) == rows, reply
    assert int(reply["holdUs"]) >= 5_000, reply
    assert reply["backend"] in ("sqlite", "postgres")
    assert reply["poolSize"] > 0
    check_diagnostics(reply)


@pytest.mark.parametrize("new_client", [False, True])
def test_upstream_call(run, new_client):
    reply = ok_json(
        run(
            "holdup.v1.Lab/UpstreamCall",
            data={"latency_ms": 1, "error_rate": 0.0, "stall_rate": 0.0, "max_retries": 0, "new_client": new_client},
        )
    )
    assert reply["attempts"] == 1
    assert reply["upstreamStatus"] == 200
    assert reply["client"] == ("new" if new_client else "shared")
    assert [a["outcome"] for a in reply["attemptLog"]] == ["ok"]
    check_diagnostics(reply)


def test_upstream_failure_is_unavailable(run):
    result = run("holdup.v1.Lab/UpstreamCall", data={"latency_ms": 0, "error_rate": 1.0, "max_retries": 1})
    assert result.returncode == 64 + 14, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert "Code: Unavailable" in result.stderr, result.stderr
    assert "2 attempt" in result.stderr, result.stderr


def test_deadline_exceeded(grpcurl, server):
    result = subprocess.run(
        [grpcurl, "-plaintext", "-max-time", "0.3", "-d", '{"mode":"ASYNC","duration_ms":2000}', server, "holdup.v1.Lab/Sleep"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 64 + 4, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert "Code: DeadlineExceeded" in result.stderr, result.stderr


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "method, data, field",
    [
        ("Fast", {"message": "x" * 1025}, "message"),
        ("Sleep", {"mode": "ASYNC", "duration_ms": 1_000_000}, "duration_ms"),
        ("Sleep", {"duration_ms": 5}, "mode"),
        ("CpuBound", {"mode": "INLINE", "work_ms": 5, "iterations": 5}, "work_ms"),
        ("CpuBound", {"mode": 99, "iterations": 5}, "mode"),
        ("SlowBackend", {"query": "POINT", "key": SEED_ROWS + 1}, "key"),
        ("SlowBackend", {"hold_ms": 10_001}, "hold_ms"),
        ("UpstreamCall", {"error_rate": 1.5}, "error_rate"),
        ("UpstreamCall", {"attempt_timeout_ms": 0}, "attempt_timeout_ms"),
    ],
)
def test_bad_input(run, method, data, field):
    result = run(f"holdup.v1.Lab/{method}", data=data)
    assert result.returncode != 0
    assert result.returncode == 64 + 3, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert "Code: InvalidArgument" in result.stderr, result.stderr
    assert re.search(rf"Message: {field}:", result.stderr), result.stderr


# ---------------------------------------------------------------- health


@pytest.mark.parametrize("data", [None, {"service": ""}, {"service": "holdup.v1.Lab"}])
def test_health_serving(run, data):
    reply = ok_json(run("grpc.health.v1.Health/Check", data=data))
    assert reply == {"status": "SERVING"}


def test_health_unknown_service(run):
    result = run("grpc.health.v1.Health/Check", data={"service": "no.such.Service"})
    assert result.returncode == 64 + 5, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert "Code: NotFound" in result.stderr, result.stderr
