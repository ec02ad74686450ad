"""Faults this machine can make, scoped to the test's own addresses and ports and undone on exit:
iptables rules in a chain of the test's own, a loopback packet capture, a CPU hog, and a cluster of
gossip nodes each on its own 127.0.0.0/8 address (so rules can tell them apart).

Needs root and iptables (CI runs as root; .ci/run installs iptables and faketime). Nothing here
skips: a machine without them fails the tests that need them, with the reason."""
import atexit
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from cluster import GossipNode, keygen, wait_until
from conftest import free_port


def require(tool):
    if os.geteuid() != 0:
        pytest.fail("network fault tests need root (iptables); CI runs them as root")
    if shutil.which(tool) is None:
        pytest.fail(f"network fault tests need {tool}; .ci/run installs it (apt-get install iptables faketime)")


class Firewall:
    """iptables rules in a chain of this test process's own, jumped to from OUTPUT (loopback
    traffic passes OUTPUT once). Every rule names the gossip address and port it is about."""

    def __init__(self):
        require("iptables")
        self.chain = f"SBTEST{os.getpid()}"[:28]
        self._run("-N", self.chain)
        self._run("-I", "OUTPUT", "-j", self.chain)
        atexit.register(self.close)
        self.closed = False

    def _run(self, *args, check=True):
        return subprocess.run(["iptables", "-w", *args], check=check, capture_output=True, text=True)

    def add(self, *rule):
        self._run("-A", self.chain, *rule)

    def block(self, source, target, probability=None, protocols=("udp", "tcp")):
        """Drops gossip from `source` (a node) to `target` (a node), UDP and TCP, all or at random."""
        for protocol in protocols:
            rule = ["-s", source.ip, "-d", target.ip, "-p", protocol, "--dport", str(target.gossip_port)]
            if probability is not None:
                rule += ["-m", "statistic", "--mode", "random", "--probability", str(probability)]
            self.add(*rule, "-j", "DROP")

    def cut(self, group_a, group_b):
        for a in group_a:
            for b in group_b:
                self.block(a, b)
                self.block(b, a)

    def drop_outgoing_udp(self, node):
        """Every datagram the node sends from its gossip socket: its sendmsg fails with EPERM."""
        self.add("-s", node.ip, "-p", "udp", "--sport", str(node.gossip_port), "-j", "DROP")

    def clear(self):
        self._run("-F", self.chain)

    def close(self):
        if self.closed:
            return
        self.closed = True
        self._run("-D", "OUTPUT", "-j", self.chain, check=False)
        self._run("-F", self.chain, check=False)
        self._run("-X", self.chain, check=False)


class LoopbackCapture:
    """Reads packets on `lo` (AF_PACKET, root): what a node sends, byte for byte, to replay it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)

    def close(self):
        self.sock.close()

    def next(self, protocol, dst_ip, dst_port, min_payload=1, timeout=10):
        """The payload of the next IPv4 `protocol` (17 UDP, 6 TCP) packet to dst_ip:dst_port."""
        deadline = time.time() + timeout
        target = socket.inet_aton(dst_ip)
        while time.time() < deadline:
            try:
                frame = self.sock.recv(70000)
            except socket.timeout:
                continue
            packet = frame[14:]  # loopback frames carry an (empty) Ethernet header
            if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != protocol or packet[16:20] != target:
                continue
            header = (packet[0] & 0x0F) * 4
            total = struct.unpack("!H", packet[2:4])[0]
            segment = packet[header:total]
            port = struct.unpack("!H", segment[2:4])[0]
            if port != dst_port:
                continue
            payload = segment[8:] if protocol == 17 else segment[(segment[12] >> 4) * 4:]
            if len(payload) >= min_payload:
                return payload
        raise AssertionError(f"no packet to {dst_ip}:{dst_port} captured in {timeout} s")


class CPUHog:
    """Busy processes pinned to one CPU, to starve a node pinned there at a lower priority."""

    def __init__(self, cpu, count=2):
        self.procs = [subprocess.Popen(["taskset", "-c", str(cpu), "python3", "-c", "while True: pass"]) for _ in range(count)]

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


class Cluster:
    """`size` gossip nodes n0…, each on 127.X.Y.(i+2), all joining through n0."""

    def __init__(self, size, workdir=None, extra=(), wrappers=None, envs=None, key_per_node=False):
        self.workdir = workdir or tempfile.mkdtemp(prefix="signalbox-faults-")
        self.key = keygen(os.path.join(self.workdir, "cluster.key"))
        self.key_files = [self.key] * size
        if key_per_node:
            self.key_files = [os.path.join(self.workdir, f"n{i}.key") for i in range(size)]
            for path in self.key_files:
                shutil.copyfile(self.key, path)
        base = f"127.{20 + os.getpid() % 200}.{(os.getpid() // 200) % 250}"
        self.ips = [f"{base}.{i + 2}" for i in range(size)]
        seed_port = free_port()
        seed = GossipNode("n0", self.workdir, self.key_files[0], f"{self.ips[0]}:{seed_port}", gossip_port=seed_port, ip=self.ips[0],
                          extra=extra, wrapper=(wrappers or {}).get(0, ()), env=(envs or {}).get(0))
        self.nodes = [seed]
        for i in range(1, size):
            self.nodes.append(GossipNode(f"n{i}", self.workdir, self.key_files[i], seed.gossip, ip=self.ips[i], extra=extra,
                                         wrapper=(wrappers or {}).get(i, ()), env=(envs or {}).get(i)))
        wait_until(lambda: all(node.ready() for node in self.nodes), 60, "every node to join")
        self.wait_all_alive(20)

    def names(self):
        return [node.name for node in self.nodes]

    def views(self, nodes=None):
        """name → {member: state} for every (given) node that answers."""
        views = {}
        for node in nodes or self.nodes:
            try:
                views[node.name] = node.states()
            except Exception:
                pass
        return views

    def all_alive(self, nodes=None):
        nodes = nodes or self.nodes
        views = self.views(nodes)
        names = set(self.names())
        return len(views) == len(nodes) and all(set(v) == names and all(s == "alive" for s in v.values()) for v in views.values())

    def wait_all_alive(self, timeout, nodes=None):
        started = time.time()
        wait_until(lambda: self.all_alive(nodes), timeout, f"every member alive on every node (views: {self.views(nodes)})")
        return time.time() - started

    def close(self):
        for node in self.nodes:
            node.stop(signal.SIGKILL)


def watch_states(cluster, nodes, member, stop, seen):
    """Records every state `nodes` report for `member` until `stop` is set (run in a thread)."""
    while not stop.is_set():
        for node in nodes:
            try:
                seen.add(node.states()[member])
            except Exception:
                pass
        time.sleep(0.05)


def udp_socket_descriptors(node):
    """The node's descriptors of its gossip UDP socket (by inode, from /proc/net/udp)."""
    ip_hex = "".join(f"{int(part):02X}" for part in reversed(node.ip.split(".")))
    local = f"{ip_hex}:{node.gossip_port:04X}"
    inodes = set()
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local:
                inodes.add(fields[9])
    descriptors = []
    for fd in os.listdir(f"/proc/{node.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{node.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            descriptors.append(int(fd))
    return sorted(descriptors)
