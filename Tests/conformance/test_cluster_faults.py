"""The cluster at production size and under real network faults: real router processes, each with
its gossip on an address of its own, broken with iptables, SIGSTOP, SIGKILL, a closed socket,
libfaketime and replayed packets. Every check asserts a measured figure and first asserts the
cluster formed. Figures are printed (pytest -s) for Docs/cluster.md."""
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from cluster import wait_until
from faults import Cluster, CPUHog, Firewall, LoopbackCapture, require, udp_socket_descriptors, watch_states


@pytest.fixture
def firewall():
    wall = Firewall()
    yield wall
    wall.close()


@pytest.fixture
def three():
    cluster = Cluster(3)
    yield cluster
    cluster.close()


@pytest.fixture
def five():
    cluster = Cluster(5)
    yield cluster
    cluster.close()


def endpoint_count(node, of):
    report = node.get("/admin/cluster/health")["data"]["nodes"].get(of)
    return len(report["endpoints"]) if report else 0


def test_a_whole_catalog_health_report_crosses_the_cluster_and_steers_every_node(three):
    n0, others = three.nodes[0], three.nodes[1:]
    models = [m["id"] for m in n0.get("/models")["data"]]
    assert len(models) >= 40

    def ask(model):
        try:
            n0.chat({"model": model, "max_tokens": 4})
        except Exception:
            pass  # a model whose endpoints all fail still lands in the report

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(ask, models))
    served_at = time.time()
    own = endpoint_count(n0, "n0")
    assert own >= 40, f"n0 reports on {own} endpoints"
    reached = {}
    while len(reached) < len(others) and time.time() - served_at < 10:
        for node in others:
            if node.name not in reached and endpoint_count(node, "n0") == own:
                reached[node.name] = time.time() - served_at
        time.sleep(0.02)
    state = {e["key"]: e for e in n0.get("/admin/cluster/state")["data"]}
    print(f"\nn0's report: {own} endpoints, {state['health/n0']['bytes']} bytes; whole on every node after "
          f"{max(reached.values()) if reached else float('nan'):.2f} s")
    assert len(reached) == len(others) and max(reached.values()) <= 2.0, reached
    # Nothing was dropped anywhere, and no datagram went over the limit.
    for node in three.nodes:
        metrics = node.metrics()
        assert metrics['signalbox_gossip_datagrams{kind="dropped"}'] == 0, node.name
        assert metrics['signalbox_gossip_datagrams{kind="received"}'] > 0, node.name
        assert metrics['signalbox_gossip_send_errors'] == 0, node.name
        # State moved over TCP: joins, and the large report fetched (every node opened or answered exchanges).
        assert metrics['signalbox_gossip_streams{kind="opened"}'] + metrics['signalbox_gossip_streams{kind="served"}'] > 0, node.name
    assert n0.metric('signalbox_gossip_streams{kind="served"}') > 0  # its report was fetched from it
    # A provider failing behind n0 only steers the others within a second.
    assert all(node.chat()["provider"] == "OpenAI" for node in others)
    n0.fault(provider="openai", kind="status", status=503)
    assert n0.chat()["provider"] == "Azure"
    failed_at = time.time()
    avoided = {}
    while len(avoided) < len(others) and time.time() - failed_at < 5:
        for node in others:
            if node.name not in avoided and "openai/gpt-4o-mini|openai" in node.get("/admin/cluster/health")["data"]["routed_around"]:
                avoided[node.name] = time.time() - failed_at
        time.sleep(0.01)
    print(f"a failure behind n0 avoided by every node after {max(avoided.values()) if avoided else float('nan'):.2f} s")
    assert len(avoided) == len(others) and max(avoided.values()) <= 1.0, avoided
    assert all(node.chat()["provider"] == "Azure" for node in others)


def table(node, region="eu"):
    return node.get(f"/admin/routing/{region}")


def test_a_two_minute_partition_heals_by_itself_and_the_later_write_wins(five, firewall):
    nodes = five.nodes
    side_a, side_b = nodes[:2], nodes[2:]
    firewall.cut(side_a, side_b)
    cut_at = time.time()
    # Each side sees the other dead within 60 s (here: seconds).
    wait_until(lambda: all(all(node.states()[o.name] == "dead" for o in (side_b if node in side_a else side_a)) for node in nodes),
               60, "each side to see the other dead")
    print(f"\npartition: each side saw the other dead after {time.time() - cut_at:.1f} s")
    # Both sides write the same region's table during the cut; b's write is the later one.
    side_a[0].put("/admin/routing/eu", {"allowed": ["openai", "azure"], "preferred": ["openai"]})
    time.sleep(1.5)
    side_b[0].put("/admin/routing/eu", {"allowed": ["openai", "azure"], "preferred": ["azure"]})
    side_a[1].put("/admin/routing/us", {"allowed": ["openai"], "preferred": []})  # only one side writes this one
    time.sleep(max(0, 120 - (time.time() - cut_at)))
    # Still apart after two minutes.
    assert all(nodes[0].states()[o.name] == "dead" for o in side_b)
    firewall.clear()
    healed_at = time.time()
    took = five.wait_all_alive(10)
    print(f"partition of 120 s healed: every member alive on every node {took:.2f} s after the heal")
    wait_until(lambda: all(table(node)["preferred"] == ["azure"] and table(node, "us")["set"] for node in nodes),
               max(0.5, 5 - (time.time() - healed_at)), "the later table everywhere within 5 s of the heal")
    print(f"routing tables reconciled {time.time() - healed_at:.2f} s after the heal")
    incarnations = {node.name: node.members() for node in nodes}
    # One view: every node agrees on every member's incarnation.
    for member in five.names():
        assert len({view[member]["incarnation"] for view in incarnations.values()}) == 1, member


def test_an_asymmetric_partition_does_not_take_anyone_down(five, firewall):
    nodes = five.nodes
    # n1 cannot send to n3 and n4, but hears them; everyone else is fine.
    firewall.block(nodes[1], nodes[3])
    firewall.block(nodes[1], nodes[4])
    started = time.time()
    seen = set()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_states, args=(five, [nodes[0], nodes[2]], "n1", stop, seen))
    watcher.start()
    time.sleep(30)
    stop.set()
    watcher.join()
    views = five.views()
    print(f"\nasymmetric partition, 30 s: n1 as n0/n2 saw it: {sorted(seen)}; views after: "
          f"{ {name: sorted(set(v.values())) for name, v in views.items()} }")
    assert "dead" not in seen
    # The rules did bite: n1's datagrams to n3 and n4 were refused (EPERM), so it lived through indirect probes.
    assert nodes[1].metric("signalbox_gossip_send_errors") > 0
    firewall.clear()
    five.wait_all_alive(10)


def test_ten_percent_loss_for_two_minutes_with_a_cpu_starved_member_declares_no_one_dead(firewall):
    require("taskset")
    cpu = os.cpu_count() - 1
    cluster = Cluster(5, wrappers={4: ("taskset", "-c", str(cpu), "nice", "-n", "19")})
    hog = CPUHog(cpu)
    try:
        nodes = cluster.nodes
        for a in nodes:
            for b in nodes:
                if a is not b:
                    firewall.block(a, b, probability=0.1)
        seen = {}
        stop = threading.Event()
        threads = []
        for member in cluster.names():
            seen[member] = set()
            others = [n for n in nodes if n.name != member]
            threads.append(threading.Thread(target=watch_states, args=(cluster, others, member, stop, seen[member])))
        for thread in threads:
            thread.start()
        time.sleep(120)
        stop.set()
        for thread in threads:
            thread.join()
        dropped = sum(node.metric('signalbox_gossip_datagrams{kind="received"}') for node in nodes)
        suspected = sorted(m for m, states in seen.items() if "suspect" in states)
        print(f"\n10% loss for 120 s, n4 starved: suspected at some point: {suspected}; "
              f"declared dead: {sorted(m for m, s in seen.items() if 'dead' in s)}; datagrams received in all: {int(dropped)}")
        assert all("dead" not in states for states in seen.values()), seen
        assert all(seen.values())  # the watchers did see every member
        # The loss was real: every node had datagrams refused by the random-drop rule.
        assert all(node.metric("signalbox_gossip_send_errors") > 0 for node in nodes)
    finally:
        hog.close()
        firewall.clear()
        cluster.close()


def test_a_member_paused_for_thirty_seconds_rejoins_under_a_higher_incarnation(five):
    nodes = five.nodes
    victim = nodes[2]
    before = nodes[0].members()["n2"]["incarnation"]
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: all(n.states()["n2"] == "dead" for n in nodes if n is not victim), 30, "n2 to be declared dead")
        time.sleep(30)
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    took = five.wait_all_alive(10)
    after = {n.name: n.members()["n2"]["incarnation"] for n in nodes}
    print(f"\nSIGSTOP 30 s: n2 alive everywhere {took:.2f} s after SIGCONT, incarnation {before} → {set(after.values())}")
    assert len(set(after.values())) == 1 and after["n0"] > before
    assert time.time() - resumed_at < 10


def test_a_node_whose_outgoing_gossip_is_dropped_keeps_its_socket_and_rejoins(five, firewall):
    nodes = five.nodes
    victim = nodes[3]
    firewall.drop_outgoing_udp(victim)
    wait_until(lambda: victim.metric("signalbox_gossip_send_errors") > 0, 10, "sends to fail with EPERM")
    time.sleep(30)
    errors = victim.metric("signalbox_gossip_send_errors")
    firewall.clear()
    removed_at = time.time()
    took = five.wait_all_alive(10)
    # The socket is up again (kept or bound anew) and the node is ready.
    status, body = victim.readyz()
    print(f"\noutgoing gossip dropped for 30 s: {int(errors)} send errors counted, socket failures "
          f"{int(victim.metric('signalbox_gossip_socket_failures'))}; every member alive everywhere {took:.2f} s after the rule went")
    assert status == 200 and body.get("gossip") == "ok"
    assert time.time() - removed_at < 10


def test_a_node_ten_minutes_ahead_demotes_nothing_and_its_table_writes_do_not_win(firewall):
    require("faketime")
    cluster = Cluster(3, wrappers={2: ("faketime", "-f", "+10m")}, envs={2: {"FAKETIME_DONT_FAKE_MONOTONIC": "1"}})
    try:
        n0, n1, fast = cluster.nodes
        offset = n0.members()["n2"]["clock_offset_ms"]
        assert -610_000 < offset < -590_000, offset  # the fast clock is real, and seen
        # Traffic everywhere; nothing failed, so nothing may be routed around anywhere.
        for _ in range(5):
            for node in cluster.nodes:
                assert node.chat()["provider"] == "OpenAI"
        time.sleep(2)
        for node in cluster.nodes:
            health = node.get("/admin/cluster/health")["data"]
            assert health["routed_around"] == [], (node.name, health["routed_around"])
            assert health["nodes"].get("n2", {}).get("endpoints"), node.name  # n2's report did arrive
        # Concurrent writes of one region's table while n2 is cut off: n2 writes first, n0 later.
        firewall.cut([fast], [n0, n1])
        wait_until(lambda: n0.states()["n2"] == "dead", 30, "n2 cut off")
        fast.put("/admin/routing/eu", {"allowed": [], "preferred": ["openai"]})
        time.sleep(1.5)
        n0.put("/admin/routing/eu", {"allowed": [], "preferred": ["azure"]})
        firewall.clear()
        cluster.wait_all_alive(15)
        wait_until(lambda: all(table(node)["preferred"] == ["azure"] for node in cluster.nodes), 10,
                   "the later write (n0's) on every node, n2 included")
        skew = fast.get("/admin/cluster/state")["clock_skew_ms"]
        print(f"\nnode 10 min ahead: offset seen by n0 {offset} ms, its own skew estimate {skew} ms; nothing routed around; "
              f"the later table won everywhere")
        assert 590_000 < skew < 610_000
        assert "clock differs from the cluster" in fast.output()
    finally:
        firewall.clear()
        cluster.close()


def test_a_replayed_datagram_is_dropped_and_a_spoofed_state_request_gets_nothing(three):
    n0, n1, n2 = three.nodes
    capture = LoopbackCapture()
    try:
        datagram = capture.next(17, n1.ip, n1.gossip_port, min_payload=40)
        before = n1.metric('signalbox_gossip_dropped{reason="replayed"}')
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attacker.bind((three.ips[0].rsplit(".", 1)[0] + ".250", 0))
        attacker.sendto(datagram, (n1.ip, n1.gossip_port))
        wait_until(lambda: n1.metric('signalbox_gossip_dropped{reason="replayed"}') == before + 1, 5, "the replay to be counted")
        # A state exchange: n2 restarts and joins through n0 over TCP; its request is captured.
        n2.stop(signal.SIGKILL)
        n2.start()
        request = capture.next(6, n0.ip, n0.gossip_port, min_payload=60)
        assert int.from_bytes(request[:4], "big") == len(request) - 4 and request[4] == 1  # one length-prefixed sealed frame
    finally:
        capture.close()
    sealed = request[4:]
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind((three.ips[0].rsplit(".", 1)[0] + ".251", 0))
    victim.settimeout(2)
    dropped_before = n0.metric('signalbox_gossip_datagrams{kind="dropped"}')
    victim.sendto(sealed, (n0.ip, n0.gossip_port))  # as if its source were spoofed to the victim's address
    with pytest.raises(socket.timeout):
        victim.recv(65536)
    # Replayed over TCP, the same request is closed without an answer.
    with socket.create_connection((n0.ip, n0.gossip_port), timeout=5) as connection:
        connection.sendall(request)
        assert connection.recv(65536) == b""
    dropped = n0.metric('signalbox_gossip_datagrams{kind="dropped"}') - dropped_before
    print(f"\nreplays: a captured datagram was dropped as replayed; a captured state request replayed by UDP and TCP got "
          f"nothing back ({int(dropped)} frames dropped)")
    assert dropped == 2
    assert n0.metric(f'signalbox_gossip_dropped_by_sender{{sender="{victim.getsockname()[0]}:{victim.getsockname()[1]}"}}') == 1


def test_the_gossip_socket_closed_under_a_running_node_is_reported_and_bound_again(three):
    require("gdb")
    node = three.nodes[1]
    descriptors = udp_socket_descriptors(node)
    assert len(descriptors) == 2, descriptors  # read by SwiftNIO, and its duplicate that datagrams leave through
    seen = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                seen.append(node.readyz()[1].get("gossip"))
            except Exception:
                pass
            time.sleep(0.005)

    watcher = threading.Thread(target=poll)
    watcher.start()
    # Close the send descriptor inside the running process.
    subprocess.run(["gdb", "-p", str(node.pid), "-batch", "-ex", f"call (int)close({descriptors[-1]})"],
                   check=True, capture_output=True, timeout=60)
    closed_at = time.time()
    wait_until(lambda: node.metric("signalbox_gossip_socket_failures") == 1 and node.readyz()[1].get("gossip") == "ok", 10,
               "the socket to be bound again")
    stop.set()
    watcher.join()
    print(f"\nsocket closed under the node: noticed and bound again within {time.time() - closed_at:.2f} s; readyz said "
          f"{sorted(set(s for s in seen if s))}")
    assert "down" in seen and seen[-1] == "ok"
    assert "gossip socket was closed under the node" in node.output() and "gossip socket bound again" in node.output()
    assert len(udp_socket_descriptors(node)) == 2
    three.wait_all_alive(10)


def test_a_node_restarted_twice_under_traffic_is_ready_within_five_seconds_and_views_converge(five):
    nodes = five.nodes
    stop = threading.Event()
    served = []

    def traffic():
        while not stop.is_set():
            for node in nodes:
                try:
                    node.chat(timeout=5)
                    served.append(node.name)
                except Exception:
                    pass

    thread = threading.Thread(target=traffic)
    thread.start()
    victim = nodes[3]
    ready_after = []
    try:
        for _ in range(2):
            victim.stop(signal.SIGKILL)
            victim.start()
            wait_until(victim.ready, 15, "the restarted node to be ready")
            ready_after.append(time.time() - victim.started_at)
        took = five.wait_all_alive(10)
        # Every node may still say alive under the first restart's incarnation (a restart within
        # 0.1 s is never noticed as a death); the second one's refutation reaches all by gossip.
        converging = time.time()
        wait_until(lambda: len({n.members()["n3"]["incarnation"] for n in nodes}) == 1, 10,
                   "every node to hold n3's newest incarnation")
        converged = time.time() - converging
    finally:
        stop.set()
        thread.join()
    incarnations = {n.name: n.members()["n3"]["incarnation"] for n in nodes}
    print(f"\nrestarted twice under traffic: ready {', '.join(f'{t:.2f} s' for t in ready_after)} after start; one view "
          f"everywhere {took:.2f} s after the second start's readiness, one incarnation {converged:.2f} s later; "
          f"{len(served)} requests served meanwhile")
    assert max(ready_after) <= 5.0
    assert len(set(incarnations.values())) == 1
    assert max(incarnations.values()) == victim.members()["n3"]["incarnation"]


def test_sigterm_with_a_ten_second_stream_in_flight_ends_left_never_suspect_or_dead(five):
    nodes = five.nodes
    leaving, peers = nodes[4], nodes[:4]
    leaving.fault(provider="openai", kind="slow", delay_ms=10_000, count=1)
    result = {}

    def stream():
        body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(leaving.base + "/api/v1/chat/completions", data=body,
                                         headers={"Authorization": f"Bearer {leaving.demo_key()}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            result["body"] = response.read().decode()

    streamer = threading.Thread(target=stream)
    streamer.start()
    time.sleep(1)
    seen = set()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_states, args=(five, peers, "n4", stop, seen))
    watcher.start()
    terminated_at = time.time()
    leaving.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: all(p.states()["n4"] == "leaving" for p in peers), 3, "peers to hear n4 is leaving")
    streamer.join(60)
    leaving.proc.wait(60)
    exited_after = time.time() - terminated_at
    wait_until(lambda: all(p.states()["n4"] == "left" for p in peers), 5, "every peer to see n4 left")
    time.sleep(2)
    stop.set()
    watcher.join()
    print(f"\nSIGTERM with a 10 s stream in flight: the node drained for {exited_after:.1f} s; peers saw {sorted(seen)}")
    assert "[DONE]" in result.get("body", "")
    assert exited_after >= 8
    assert seen <= {"alive", "leaving", "left"} and "leaving" in seen and "left" in seen
    assert all(p.states()["n4"] == "left" for p in peers)


def test_rotating_the_key_out_of_order_recovers_by_itself_once_the_keys_match():
    cluster = Cluster(3, key_per_node=True)
    try:
        n0, n1, n2 = cluster.nodes
        old = [line for line in open(cluster.key).read().splitlines() if line and not line.startswith("#")][0]
        fresh_path = os.path.join(cluster.workdir, "fresh.key")
        subprocess.run([os.environ.get("SIGNALBOX_BIN", ".build/debug/signalbox"), "cluster", "keygen", "--out", fresh_path],
                       check=True, capture_output=True)
        fresh = [line for line in open(fresh_path).read().splitlines() if line and not line.startswith("#")][0]
        # Out of order: n0 starts sending with the new key before the others accept it.
        open(cluster.key_files[0], "w").write(f"{fresh}\n{old}\n")
        wait_until(lambda: n1.states()["n0"] == "dead" and n2.states()["n0"] == "dead", 40, "n0 to be unheard by n1 and n2")
        assert "gossip frame dropped" in n1.output() and f"from={n0.ip}:{n0.gossip_port}" in n1.output()
        assert n1.metric(f'signalbox_gossip_dropped_by_sender{{sender="{n0.ip}:{n0.gossip_port}"}}') > 0
        # The others take the new key too: the keys match again.
        for path in cluster.key_files[1:]:
            open(path, "w").write(f"{fresh}\n{old}\n")
        fresh_id = n0.get("/admin/cluster/keyring")["data"]["sends_with"]
        wait_until(lambda: all(node.get("/admin/cluster/keyring")["data"]["sends_with"] == fresh_id for node in cluster.nodes), 15,
                   "every node to reload its key file")
        matched_at = time.time()
        took = cluster.wait_all_alive(10)
        peers = n1.get("/admin/cluster/keyring")["data"]["peers_send_with"]
        print(f"\nkey rotated out of order: n0 was unheard (dead) on n1 and n2; every member alive {took:.2f} s after the keys "
              f"matched; n1 sees peers sending with {peers}")
        assert time.time() - matched_at < 10
        assert peers == {"n0": fresh_id, "n2": fresh_id}
    finally:
        cluster.close()
