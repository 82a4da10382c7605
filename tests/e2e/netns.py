"""Network namespaces for the network-fault tests: a replica behind a veth pair of its own,
whose link the test can cut (nft drop) or slow (a delaying relay, reached by nft redirect).

Everything here is made by the test and named with its pid; ``Namespace.delete`` removes
the namespace, its veth pair, its nft tables (they live inside it) and every process in it.
Each namespace gets a private /30 in 10.247.0.0/16 picked from the pid: the host end is
the first address, the namespace end the second, and no traffic goes anywhere else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import ROOT
from tvision.bench.relay import RELAY_SCRIPT
from tvision.server import process_alive

NETWORK = ipaddress.IPv4Network("10.247.0.0/16")
# The client-facing ports inside each namespace: a fresh namespace has them all free.
GRPC_PORT, HTTP_PORT, METRICS_PORT = 8001, 8000, 8002
RELAY_PORT = 9001

# Inside the namespace: start one replica on the namespace's address, say so, and serve
# until stdin closes (the test ended, or died) or SIGTERM. PR_SET_PDEATHSIG stops it when
# the test process dies even by SIGKILL; Triton and nginx get theirs from this launcher.
REPLICA_SCRIPT = """
import ctypes, os, signal, sys
from pathlib import Path
ctypes.CDLL(None).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
def leave(*_):
    raise SystemExit(0)
signal.signal(signal.SIGTERM, leave)
from tvision.server import ServerPorts, TritonServer
ports = ServerPorts(grpc=int(sys.argv[4]), http=int(sys.argv[5]), metrics=int(sys.argv[6]))
server = TritonServer(Path(sys.argv[2]), ports, address=sys.argv[3], exit_timeout_s=5)
try:
    server.start()
    print("ready", server.grpc_url, flush=True)
    sys.stdin.read()
finally:
    server.stop(graceful=False)  # the tests are done with it (tvision/server/temporary.py)
"""

# Inside the namespace: accept on RELAY_PORT, connect to the replica's gRPC port, and pass
# each chunk the replica sends back on ``delay_s`` after it arrived (order kept, nothing
# throttled): one-way latency, as netem on the namespace's veth would add. The kernel here
# has no netem (CONFIG_NET_SCH_NETEM is not set), so nft redirects the client's gRPC
# connections to this relay (tvision.bench.relay.RELAY_SCRIPT) instead.


class NetnsError(RuntimeError):
    """The kernel or our permissions refused a namespace, a veth pair or an nft table."""


def _run(args: list[str], stdin: str | None = None) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` consecutive /30s of NETWORK, chosen by this process's pid."""
    first = (os.getpid() % (NETWORK.num_addresses // 4 // count)) * count
    subnets = list(NETWORK.subnets(new_prefix=30))
    return subnets[first : first + count]


@dataclass
class Namespace:
    """One network namespace, linked to the host by a veth pair with a private /30."""

    name: str
    subnet: ipaddress.IPv4Network
    created: list[str] = field(default_factory=list)

    @property
    def host_link(self) -> str:
        return f"{self.name}h"

    @property
    def link(self) -> str:
        return f"{self.name}n"

    @property
    def host_address(self) -> str:
        return str(self.subnet[1])

    @property
    def address(self) -> str:
        return str(self.subnet[2])

    def exec_args(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def create(self) -> Namespace:
        """Raises: NetnsError: the kernel or our permissions refused a step."""
        taken = _run(["ip", "-4", "-o", "addr", "show", "to", str(self.subnet)])
        if taken.strip():
            raise NetnsError(f"{self.subnet} is already used on this machine: {taken.strip()}")
        _run(["ip", "netns", "add", self.name])
        self.created.append("netns")
        _run(["ip", "link", "add", self.host_link, "type", "veth",
              "peer", "name", self.link, "netns", self.name])  # fmt: skip
        self.created.append("veth")
        prefix = self.subnet.prefixlen
        _run(["ip", "addr", "add", f"{self.host_address}/{prefix}", "dev", self.host_link])
        _run(["ip", "link", "set", self.host_link, "up"])
        _run(["ip", "-n", self.name, "addr", "add", f"{self.address}/{prefix}", "dev", self.link])
        _run(["ip", "-n", self.name, "link", "set", self.link, "up"])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        return self

    def nft(self, ruleset: str) -> None:
        """Apply an nft script inside the namespace (tables here touch no other one)."""
        if shutil.which("nft") is None:
            raise NetnsError("nft (nftables) is not installed")
        _run(self.exec_args("nft", "-f", "-"), stdin=ruleset)

    def has_table(self, family: str, table: str) -> bool:
        return f"table {family} {table}" in _run(self.exec_args("nft", "list", "tables"))

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in _run(["ip", "netns", "pids", self.name]).split()]
        except NetnsError:
            return []

    def delete(self) -> None:
        """Kill what still runs inside (by pid), then remove the veth pair and the namespace;
        the nft tables inside go with it. Safe to call after a partial ``create``."""
        if "netns" in self.created:
            deadline = time.monotonic() + 10
            while (pids := self.pids()) and time.monotonic() < deadline:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
        if "veth" in self.created:
            with contextlib.suppress(NetnsError):
                _run(["ip", "link", "del", self.host_link])
        if "netns" in self.created:
            with contextlib.suppress(NetnsError):
                _run(["ip", "netns", "del", self.name])
        self.created.clear()


def namespaces(count: int) -> list[Namespace]:
    """``count`` namespaces named tvnf<pid>a, tvnf<pid>b, ... (not created yet)."""
    return [
        Namespace(f"tvnf{os.getpid()}{chr(ord('a') + index)}", subnet)
        for index, subnet in enumerate(_subnets(count))
    ]


def remove_stale() -> list[str]:
    """Delete the namespaces of earlier runs whose process died without cleaning up (SIGKILL):
    their processes went with it (PR_SET_PDEATHSIG), the namespace and veth pair did not."""
    removed = []
    for name in _run(["ip", "netns", "list"]).split():
        found = re.fullmatch(r"tvnf(\d+)[a-z]", name)
        if found and int(found.group(1)) != os.getpid() and not process_alive(int(found.group(1))):
            space = Namespace(name, NETWORK, created=["netns", "veth"])
            space.delete()
            removed.append(name)
    return removed


def leftovers(names: list[str]) -> list[str]:
    """Namespaces and links of these names that still exist."""
    found = [name for name in names if name in _run(["ip", "netns", "list"]).split()]
    links = _run(["ip", "-o", "link", "show"])
    return found + [f"{name}h" for name in names if f" {name}h@" in links]


class InNamespace:
    """A Python script run inside a namespace, in its own process group, until stdin closes.

    ``wait_ready`` reads its stdout for the "ready" line; ``stop`` closes stdin, waits, and
    kills the group if it is still there.
    """

    def __init__(self, namespace: Namespace, script: str, args: list[str], log: Path) -> None:
        self.namespace = namespace
        self.log_path = log
        self._log = log.open("w")
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        self.process = subprocess.Popen(
            namespace.exec_args(sys.executable, "-c", script, str(os.getpid()), *args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=ROOT, env=env, text=True, start_new_session=True,
        )  # fmt: skip
        self.ready_line = ""
        self.connections = 0  # "connection" lines: the relay counts those it accepted
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("ready") and not self._ready.is_set():
                self.ready_line = line.strip()
                self._ready.set()
            self.connections += line.startswith("connection")
            self._log.write(line)
        self._ready.set()  # it exited: wait_ready sees no ready line

    def wait_ready(self, timeout_s: float) -> None:
        """Raises: RuntimeError: it exited or said nothing within ``timeout_s``."""
        if not self._ready.wait(timeout_s) or not self.ready_line:
            raise RuntimeError(
                f"{self.namespace.name}: not ready within {timeout_s:g} s "
                f"(exit code {self.process.poll()}):\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        self._log.close()


def start_replica(namespace: Namespace, repository: Path, log: Path) -> InNamespace:
    args = [str(repository), namespace.address, str(GRPC_PORT), str(HTTP_PORT), str(METRICS_PORT)]
    return InNamespace(namespace, REPLICA_SCRIPT, args, log)


def start_relay(namespace: Namespace, delay_s: float, log: Path) -> InNamespace:
    args = [str(RELAY_PORT), namespace.address, str(GRPC_PORT), str(delay_s)]
    return InNamespace(namespace, RELAY_SCRIPT, args, log)


def black_hole_ruleset(table: str) -> str:
    """Drop every packet in and out of the namespace except on its loopback (nginx reaches
    Triton there); nothing is closed or refused."""
    return f"""
table inet {table} {{
    chain input {{ type filter hook input priority filter; policy drop; iif "lo" accept; }}
    chain output {{ type filter hook output priority filter; policy drop; oif "lo" accept; }}
}}
"""


def delay_ruleset(table: str, link: str) -> str:
    """Send new gRPC connections arriving on ``link`` to the delaying relay."""
    return f"""
table ip {table} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{link}" tcp dport {GRPC_PORT} redirect to :{RELAY_PORT}
    }}
}}
"""


def metric(address: str, name: str, model: str, timeout_s: float = 5) -> float:
    """A Triton counter, summed over its series for ``model``, from the namespace's metrics
    port; no proxy, whatever the environment says."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}:{METRICS_PORT}/metrics", timeout=timeout_s) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model="{model}"' in line
    )
