"""memory-sync's events on a real nats-server (JetStream on), read by an
independent client, Node's `nats`: CloudEvents shape, subjects, headers and
position order; no value bytes in any message (plaintext or base64);
nats-server killed during a stream of commands (they keep succeeding) and
restarted (everything arrives, duplicates only with identical ids); and
memory-sync killed mid-publication and restarted (nothing lost).
Usage: nats_test.py MEMORY_SYNC API_DESC"""

import base64
import json
import os
import re
import signal
import sys
import tempfile
import uuid

import grpc

import agentmesh_testlib as lib  # noqa: E402

# The NATS harness of tests/integration/bus, from the runfiles.
sys.path.insert(0, os.path.join("tests", "integration", "bus"))
from nats_testlib import NatsServer, NodeSubscriber, node_tool  # noqa: E402

BINARY, API_DESC = sys.argv[1:3]
MSG = lib.Messages(API_DESC)
MS = "/agentmesh.v1.MemorySync/"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
Change = MSG.cls("agentmesh.v1.SyncChange")


def start(data, url):
    return lib.Server(BINARY, ["--data-dir=" + data, "--listen=127.0.0.1:0",
                               "--admin=127.0.0.1:0", "--nats-url=" + url,
                               "--jetstream=true", "--outbox-flush=10s"]).start()


class Calls:
    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)

    def __call__(self, method, **fields):
        req, _ = MSG.method(MS + method)
        return MSG.unary(self.channel, MS + method)(
            req(**fields), timeout=30, metadata=[("traceparent", TRACEPARENT)])

    def close(self):
        self.channel.close()


def secret(i):
    return b"PLAINTEXT-VALUE-%d-%s" % (i, uuid.uuid4().hex.encode())


def leak_forms(value):
    out = [value]
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            b = enc(b"\0" * shift + value)[4:-4]
            if len(b) > 8:
                out.append(b)
    return out


def check_no_values(msgs, values):
    for m in msgs:
        body = json.dumps(m).encode()
        for v in values:
            for f in leak_forms(v):
                assert f not in body, "value bytes in a NATS message: %s" % m["subject"]
        data = m["json"]["data"]
        assert "sealedValue" not in data and "sealed_value" not in data, data


def check_cloudevent(m):
    ce = m["json"]
    assert ce["specversion"] == "1.0", ce
    assert UUID.match(ce["id"]), ce
    assert ce["source"] == "agentmesh/memory", ce
    assert TIME.match(ce["time"]), ce
    assert ce["datacontenttype"] == "application/json", ce
    assert ce["subject"].startswith("memory-"), ce
    short = ce["type"].rsplit(".", 1)[1]
    assert short in ("MemoryWritten", "MemoryDeleted", "MemoryConflictResolved",
                     "NamespaceForgotten"), ce
    assert m["subject"] == "agentmesh.events.memory.memory." + short, m["subject"]
    assert ce["traceparent"] == TRACEPARENT, ce
    h = m["headers"]
    assert h["Nats-Msg-Id"] == ce["id"], h
    assert h["traceparent"] == TRACEPARENT, h
    assert h["content-type"] == "application/cloudevents+json", h
    data = ce["data"]
    assert data["namespace"] == ce["subject"][len("memory-"):], ce
    if short == "MemoryWritten":
        assert int(data["version"]) >= 1 and "size" in data or data.get("size") is None
        assert len(base64.b64decode(data["contentHash"])) == 32, data
    return int(ce["sequence"])


def check_stream(url, expected):
    msgs = node_tool("read-stream", url, "AGENTMESH")
    seen, order = {}, []
    for m in msgs:
        pos = check_cloudevent(m)
        mid = m["headers"]["Nats-Msg-Id"]
        if mid in seen:
            assert seen[mid] == m["json"], "a duplicate with other content"
            continue
        seen[mid] = m["json"]
        order.append(pos)
    assert order == sorted(order), "out of position order"
    assert order == list(expected), ("missing %s extra %s" % (
        sorted(set(expected) - set(order))[:10], sorted(set(order) - set(expected))[:10]))
    return msgs


def test_live_cloudevents_without_values():
    with NatsServer() as nats:
        data = tempfile.mkdtemp()
        server = start(data, nats.url)
        c = Calls(server.grpc_target)
        values = []
        try:
            # 1 put + 1 put + delete + sync(2 applied) + conflict(+written) + forget
            sub = NodeSubscriber(nats.url, "agentmesh.events.memory.>", 9, 60000)
            for i in range(2):
                values.append(secret(i))
                c("PutMemory", namespace="live", key="k%d" % i, value=values[-1])
            c("DeleteMemory", namespace="live", key="k0")
            values += [secret(2), secret(3), secret(4)]
            c("SyncMemory", namespace="live", replica_id="r1", changes=[
                Change(key="a", value=values[2], hlc=1), Change(key="b", value=values[3], hlc=2)])
            now = c("PutMemory", namespace="clock", key="c", value=b"").hlc
            r = c("SyncMemory", namespace="live", replica_id="r2", changes=[
                Change(key="a", value=values[4], base_version=0, hlc=now + 1000)])
            assert r.conflicts[0].resolution == 2, r
            c("ForgetNamespace", namespace="live")
            got = sub.messages()
        finally:
            c.close()
            assert server.stop() == 0, server.log()
        live = [m for m in got if m["json"]["subject"] == "memory-live"]
        types = [m["json"]["type"].rsplit(".", 1)[1] for m in live]
        assert types == ["MemoryWritten", "MemoryWritten", "MemoryDeleted", "MemoryWritten",
                         "MemoryWritten", "MemoryConflictResolved", "MemoryWritten",
                         "NamespaceForgotten"], types
        positions = [check_cloudevent(m) for m in got]
        assert positions == sorted(positions) and len(set(positions)) == len(positions), positions
        check_no_values(got, values)
        w = live[0]["json"]["data"]
        assert (w["key"], w["version"], w["size"]) == ("k0", "1", str(len(values[0]))), w
        msgs = check_stream(nats.url, range(1, positions[-1] + 1))
        check_no_values(msgs, values)
    print("live: %d CloudEvents in order with headers, no value bytes" % len(got))


def test_nats_outage_and_restart():
    nats = NatsServer().start()
    data = tempfile.mkdtemp()
    server = start(data, nats.url)
    c = Calls(server.grpc_target)
    values = []
    try:
        for i in range(100):
            values.append(secret(i))
            c("PutMemory", namespace="outage", key="k%d" % (i % 17), value=values[-1])
        nats.kill()
        # commands keep succeeding while NATS is down
        for i in range(100, 250):
            values.append(secret(i))
            c("PutMemory", namespace="outage", key="k%d" % (i % 17), value=values[-1])
        nats.start()
        for i in range(250, 300):
            values.append(secret(i))
            c("PutMemory", namespace="outage", key="k%d" % (i % 17), value=values[-1])

        def published():
            msgs = node_tool("read-stream", nats.url, "AGENTMESH")
            return len({m["headers"]["Nats-Msg-Id"] for m in msgs}) >= 300
        lib.poll_until(published, 120, interval=0.5, what="300 events on JetStream")
        msgs = check_stream(nats.url, range(1, 301))
        check_no_values(msgs, values)
    finally:
        c.close()
        server.stop()
        nats.kill()
    print("outage: NATS killed after 100 commands, 150 more succeeded, all 300 published in order")


def test_memory_sync_killed_mid_publication():
    """200 commands published, NATS down for 200 more (a backlog is sure),
    memory-sync SIGKILLed, NATS back, memory-sync restarted."""
    nats = NatsServer().start()
    data = tempfile.mkdtemp()
    server = start(data, nats.url)
    c = Calls(server.grpc_target)
    try:
        for i in range(200):
            c("PutMemory", namespace="kill", key="k%d" % (i % 23), value=b"v")
        nats.kill()
        for i in range(200, 400):
            c("PutMemory", namespace="kill", key="k%d" % (i % 23), value=b"v")
        server.send_signal(signal.SIGKILL)
        server.stop()
        c.close()
        nats.start()
        server = start(data, nats.url)

        def all_there():
            msgs = node_tool("read-stream", nats.url, "AGENTMESH")
            return len({m["headers"]["Nats-Msg-Id"] for m in msgs}) >= 400
        lib.poll_until(all_there, 120, interval=0.5, what="400 events on JetStream")
        check_stream(nats.url, range(1, 401))
        assert server.stop() == 0, server.log()
    finally:
        server.kill()
        nats.kill()
    print("killed: memory-sync SIGKILLed with a backlog of 200, restarted: all 400 published once, in order")


if __name__ == "__main__":
    tests = [test_live_cloudevents_without_values, test_nats_outage_and_restart,
             test_memory_sync_killed_mid_publication]
    failed = 0
    for t in tests:
        try:
            t()
        except Exception as e:  # noqa: BLE001 - report every scenario
            failed += 1
            import traceback
            traceback.print_exc()
            print("FAIL %s: %r" % (t.__name__, e))
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    sys.exit(1 if failed else 0)
