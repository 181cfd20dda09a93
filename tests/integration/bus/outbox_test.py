"""The outbox relay against a real nats-server, checked by an independent
client (Node's `nats`): CloudEvents shape and headers, position order,
dead letters, NATS killed and restarted mid-stream, the relay killed and
restarted mid-publication, JetStream refusing messages, the stream deleted
mid-stream, and JetStream switched off.

usage: outbox_test.py OUTBOX_DEMO"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

from agentmesh_testlib import poll_until
from nats_testlib import NatsServer, NodeSubscriber, node_tool

DEMO = os.path.abspath(sys.argv[1])
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Demo:
    """outbox_demo in the background; its stdout lines are collected."""

    def __init__(self, data, url, *args):
        self.lines = []
        self.proc = subprocess.Popen([DEMO, "--data", data, "--nats", url] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def appended(self):
        return [l["appended"] for l in self.lines if "appended" in l]

    def wait(self, timeout=180):
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return rc, (self.lines[-1] if self.lines else {})

    def stderr(self):
        return self.proc.stderr.read().decode(errors="replace")


def check_cloudevent(msg):
    """One NATS message is a CloudEvents 1.0 event with the right headers."""
    ce = msg["json"]
    assert ce["specversion"] == "1.0", ce
    assert UUID.match(ce["id"]), ce
    assert ce["source"] == "agentmesh/test", ce
    assert ce["type"] in ("agentmesh.v1.TaskSubmitted", "agentmesh.v1.AgentWentOnline"), ce
    assert TIME.match(ce["time"]), ce["time"]
    assert ce["datacontenttype"] == "application/json", ce
    assert ce["traceparent"] == TRACEPARENT, ce
    assert ce["sequence"].isdigit() and ce["streamversion"].isdigit(), ce
    category = ce["subject"].split("-", 1)[0]
    short = ce["type"].rsplit(".", 1)[1]
    assert msg["subject"] == "agentmesh.events.test.%s.%s" % (category, short), msg["subject"]
    h = msg["headers"]
    assert h["Nats-Msg-Id"] == ce["id"], h
    assert h["traceparent"] == TRACEPARENT, h
    assert h["content-type"] == "application/cloudevents+json", h
    if short == "TaskSubmitted":
        assert ce["data"]["taskId"] == ce["subject"][len("task-"):], ce
        assert json.loads(ce["data"]["input"])["n"] == int(ce["sequence"]), ce
    else:
        assert ce["data"]["agentId"] == ce["subject"][len("agent-"):], ce
        assert ce["data"]["atUnixNano"] == ce["sequence"], ce  # int64 as a string
    return int(ce["sequence"])


def check_stream(url, expected_positions):
    """The JetStream stream holds each expected position once, in order;
    a duplicate may only repeat an earlier message exactly."""
    msgs = node_tool("read-stream", url, "AGENTMESH")
    seen = {}
    order = []
    for m in msgs:
        pos = check_cloudevent(m)
        if m["headers"]["Nats-Msg-Id"] in seen:
            assert seen[m["headers"]["Nats-Msg-Id"]] == m["json"], "duplicate with other content"
            continue
        seen[m["headers"]["Nats-Msg-Id"]] = m["json"]
        order.append(pos)
    assert order == sorted(order), "stream out of position order"
    assert order == list(expected_positions), (
        "stream positions differ: missing %s, extra %s"
        % (sorted(set(expected_positions) - set(order))[:10], sorted(set(order) - set(expected_positions))[:10]))
    return len(msgs)


def test_live_cloudevents():
    with NatsServer() as nats:
        data = tempfile.mkdtemp()
        sub = NodeSubscriber(nats.url, "agentmesh.events.>", 300, 60000)
        demo = Demo(data, nats.url, "--events", "300", "--wait", "60")
        rc, stats = demo.wait()
        assert rc == 0, demo.stderr()
        assert stats["checkpoint"] == 300 and stats["published"] == 300, stats
        got = sub.messages()
        assert len(got) == 300, len(got)
        positions = [check_cloudevent(m) for m in got]
        assert positions == list(range(1, 301)), positions[:20]
        check_stream(nats.url, range(1, 301))
    print("live: 300 CloudEvents in position order with headers")


def test_dead_letter():
    with NatsServer() as nats:
        data = tempfile.mkdtemp()
        sub = NodeSubscriber(nats.url, "agentmesh.deadletter.test", 1, 60000)
        demo = Demo(data, nats.url, "--events", "50", "--unknown-at", "10", "--wait", "60")
        rc, stats = demo.wait()
        assert rc == 0, demo.stderr()
        assert stats["dead_lettered"] == 1 and stats["published"] == 49, stats
        dl = sub.messages()
        assert len(dl) == 1, dl
        note = dl[0]["json"]
        assert note["sequence"] == "10" and "NoSuchEvent" in note["reason"], note
        assert dl[0]["headers"]["Nats-Msg-Id"] == note["id"]
        check_stream(nats.url, [p for p in range(1, 51) if p != 10])
    print("dead letter: the unpublishable event is reported, the rest flows")


def test_nats_outage():
    nats = NatsServer().start()
    try:
        data = tempfile.mkdtemp()
        demo = Demo(data, nats.url, "--events", "3000", "--pace-us", "300", "--wait", "120")
        poll_until(lambda: len(demo.appended()) >= 500, 60, what="500 appends")
        nats.kill()
        down_at = len(demo.appended())
        # Commands (appends) go on while NATS is down.
        poll_until(lambda: len(demo.appended()) >= down_at + 1000, 60, what="appends while NATS is down")
        nats.start()
        rc, stats = demo.wait()
        assert rc == 0, demo.stderr()
        assert stats["checkpoint"] == 3000, stats
        total = check_stream(nats.url, range(1, 3001))
    finally:
        nats.kill()
    print("outage: NATS killed after %d appends, restarted; 3000 events, %d stored messages, in order"
          % (down_at, total))


def test_relay_killed():
    with NatsServer() as nats:
        data = tempfile.mkdtemp()
        demo = Demo(data, nats.url, "--events", "2000", "--wait", "120")
        poll_until(lambda: len(demo.appended()) >= 1000, 60, what="1000 appends")
        demo.proc.send_signal(signal.SIGKILL)
        demo.wait()
        acked = demo.appended()
        again = Demo(data, nats.url, "--events", "0", "--wait", "120")
        rc, stats = again.wait()
        assert rc == 0, again.stderr()
        last = stats["last_position"]
        assert last >= acked[-1], (last, acked[-1])
        check_stream(nats.url, range(1, last + 1))
    print("relay killed after %d acknowledged appends: all %d published once, in order" % (len(acked), last))


def test_nats_never_up():
    """NATS unreachable from the start: appends succeed, the relay stops
    cleanly with nothing published, and a later start publishes it all."""
    nats = NatsServer()
    data = tempfile.mkdtemp()
    demo = Demo(data, nats.url, "--events", "5", "--wait", "1")
    rc, stats = demo.wait()
    assert rc == 3, (rc, demo.stderr())  # 3: not everything published, no crash
    assert stats["checkpoint"] == 0 and stats["last_position"] == 5, stats
    with nats.start():
        again = Demo(data, nats.url, "--events", "0", "--wait", "60")
        rc, stats = again.wait()
        assert rc == 0 and stats["checkpoint"] == 5, (rc, stats, again.stderr())
        check_stream(nats.url, range(1, 6))
    print("NATS never up: 5 appends kept, published once NATS came")


def test_core_nats():
    with NatsServer(jetstream=False) as nats:
        data = tempfile.mkdtemp()
        sub = NodeSubscriber(nats.url, "agentmesh.events.>", 100, 60000)
        demo = Demo(data, nats.url, "--core", "--events", "100", "--wait", "60")
        rc, stats = demo.wait()
        assert rc == 0, demo.stderr()
        got = sub.messages()
        assert [check_cloudevent(m) for m in got] == list(range(1, 101))
    print("core NATS: 100 CloudEvents in order without JetStream")


def test_checkpoint_throttled():
    """Single-event appends 2 ms apart, each published and acknowledged
    before the next: the checkpoint is still written at most once per 20 ms
    (CHECKPOINT_MS) of the run, not once per event."""
    with NatsServer() as nats:
        data = tempfile.mkdtemp()
        events = 300
        demo = Demo(data, nats.url, "--events", str(events), "--pace-us", "2000", "--wait", "60")
        rc, stats = demo.wait()
        assert rc == 0, demo.stderr()
        assert stats["checkpoint"] == events and stats["published"] == events, stats
        checkpoint_writes = stats["commits"] - events  # one commit per append
        # Writes are >= 20 ms apart on a millisecond clock (so > 19 ms in
        # truth), plus the first one and the one at the stop.
        bound = stats["elapsed_ms"] // 19 + 3
        assert 1 <= checkpoint_writes <= bound, (checkpoint_writes, bound, stats)
    print("checkpoint: %d writes for %d events over %d ms (bound %d)"
          % (checkpoint_writes, events, stats["elapsed_ms"], bound))


def test_refused_by_jetstream():
    """The stream exists but refuses messages past its tenth (max_msgs,
    discard new): the first ten are stored and acknowledged, each later one
    is refused with JetStream's error on every attempt and dead-lettered
    with that error as the reason, in order, and the relay finishes."""
    with NatsServer() as nats:
        node_tool("add-stream", nats.url, "AGENTMESH", "10")
        data = tempfile.mkdtemp()
        sub = NodeSubscriber(nats.url, "agentmesh.deadletter.test", 15, 60000)
        demo = Demo(data, nats.url, "--events", "25", "--wait", "60")
        rc, stats = demo.wait()
        assert rc == 0, demo.stderr()
        assert stats["published"] == 10 and stats["dead_lettered"] == 15 and stats["checkpoint"] == 25, stats
        notes = [m["json"] for m in sub.messages()]
        assert [int(n["sequence"]) for n in notes] == list(range(11, 26)), notes[:3]
        # 10077: JetStream's "maximum messages exceeded".
        assert all("refused by JetStream 3 times (error 10077" in n["reason"] for n in notes), notes[0]
        check_stream(nats.url, range(1, 11))
    print("refused: 10 stored, 15 refused by JetStream and dead-lettered with its error")


def test_stream_deleted():
    """The AGENTMESH stream is deleted mid-run: publishes find no stream
    (NATS answers "no responders"), the relay creates it again and
    re-sends in order; the new stream holds every event from where it
    resumed to the last, once and in order."""
    with NatsServer() as nats:
        data = tempfile.mkdtemp()
        demo = Demo(data, nats.url, "--events", "2000", "--pace-us", "500", "--wait", "120")
        poll_until(lambda: len(demo.appended()) >= 400, 60, what="400 appends")
        node_tool("delete-stream", nats.url, "AGENTMESH")
        deleted_at = len(demo.appended())
        rc, stats = demo.wait()
        assert rc == 0, demo.stderr()
        assert stats["checkpoint"] == 2000 and stats["dead_lettered"] == 0, stats
        msgs = node_tool("read-stream", nats.url, "AGENTMESH")
        first = int(msgs[0]["json"]["sequence"])
        assert first > 1, "the stream was not recreated"
        check_stream(nats.url, range(first, 2001))
    print("stream deleted after %d appends: recreated, events %d-2000 stored once, in order" % (deleted_at, first))


if __name__ == "__main__":
    tests = [test_live_cloudevents, test_dead_letter, test_nats_outage, test_relay_killed, test_nats_never_up,
             test_core_nats, test_checkpoint_throttled, test_refused_by_jetstream, test_stream_deleted]
    failed = 0
    for t in tests:
        try:
            t()
        except Exception as e:  # noqa: BLE001 - report every scenario
            failed += 1
            print("FAIL %s: %r" % (t.__name__, e))
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    sys.exit(1 if failed else 0)
