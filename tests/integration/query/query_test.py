"""Integration tests of the query service: real agent-manager, memory-sync,
nats-server and query processes on free loopback ports, driven by Python
grpcio (message classes from the API descriptor set at run time).

Covers: a scripted scenario of agents, tasks and memory commands with every
Query RPC checked against the read model expected from the sources' own
answers; exactly-once under faults in one 10,000-event run (the query
service started after events were published, killed with SIGKILL in the
middle, nats-server stopped for a while), with exact counts, stats and
feeds after each fault; min_positions read-your-writes and its deadline;
pagination under concurrent inserts; the idle poll (skipped for a source
whose events NATS brings, still finding a source's events NATS does not
carry); rebuild equivalence (dump, rebuild, dump, identical); health,
reflection and SIGTERM.
Usage: query_test.py QUERY AGENT_MANAGER MEMORY_SYNC API_DESC"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc

import agentmesh_testlib as lib

# The NATS harness, from the runfiles (or the source tree when run by hand).
BUS = os.path.join("tests", "integration", "bus")
if not os.path.exists(os.path.join(BUS, "nats_testlib.py")):
    BUS = os.path.join(lib.repo_root_from(os.path.abspath(__file__)), BUS)
sys.path.insert(0, BUS)
from nats_testlib import NatsServer  # noqa: E402

QUERY, AGENT_MANAGER, MEMORY_SYNC, API_DESC = sys.argv[1:5]
del sys.argv[1:5]

MSG = lib.Messages(API_DESC)
SANITIZED = bool(os.environ.get("AGENTMESH_SANITIZER"))
# libnats is not built with TSan: under TSan the mesh runs without NATS (the
# query service then lives on catch-up alone) and the run is shorter.
TSAN = os.environ.get("AGENTMESH_SANITIZER") == "tsan"
USE_NATS = not TSAN
FAULT_EVENTS = 4000 if TSAN else 10000
PENDING, ASSIGNED, RUNNING, COMPLETED, FAILED, CANCELLED = 1, 2, 3, 4, 5, 6
ONLINE, OFFLINE, DEREGISTERED = 1, 2, 3
STATE_NAMES = {1: "TASK_STATE_PENDING", 2: "TASK_STATE_ASSIGNED",
               3: "TASK_STATE_RUNNING", 4: "TASK_STATE_COMPLETED",
               5: "TASK_STATE_FAILED", 6: "TASK_STATE_CANCELLED"}
SERVICES = {
    "AgentManager": ("RegisterAgent", "GetAgent", "UpdateAgent",
                     "DeregisterAgent", "SubmitTask", "GetTask", "StartTask",
                     "ReportProgress", "CompleteTask", "FailTask",
                     "CancelTask", "RetryTask"),
    "MemorySync": ("PutMemory", "GetMemory", "DeleteMemory", "ListMemory",
                   "ForgetNamespace"),
    "EventStore": ("ReadAll", "ReadStream"),
    "Query": ("ListAgents", "GetAgent", "ListTasks", "GetTaskTimeline",
              "GetStats", "SearchMemory", "ListEvents"),
}


def uid(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class Client:
    """Callables for one service's methods on one channel."""

    def __init__(self, target, service):
        self.channel = grpc.insecure_channel(target)
        for name in SERVICES[service]:
            full = "/agentmesh.v1.%s/%s" % (service, name)
            setattr(self, name, self._wrap(MSG.unary(self.channel, full), full))
        if service == "Query":
            full = "/agentmesh.v1.Query/SubscribeEvents"
            self.SubscribeEvents = self._wrap(
                MSG.server_stream(self.channel, full), full)

    @staticmethod
    def _wrap(stub, method):
        req_cls, _ = MSG.method(method)

        def call(timeout=30, metadata=None, **fields):
            return stub(req_cls(**fields), timeout=timeout, metadata=metadata)
        return call

    def close(self):
        self.channel.close()


class Mesh:
    """nats-server, agent-manager, memory-sync and query in one temporary
    directory; each can be stopped and started again on the same data."""

    def __init__(self, start_query=True, memory_nats=True):
        self.dir = tempfile.mkdtemp(prefix="query-test-")
        self.nats = NatsServer().start() if USE_NATS else None
        self.am = lib.Server(AGENT_MANAGER, [
            "--data-dir=" + os.path.join(self.dir, "agents"),
            "--listen=127.0.0.1:0", "--admin=127.0.0.1:0",
            "--nats-url=" + self.nats_url, "--no-sync"]).start()
        self.ms = lib.Server(MEMORY_SYNC, [
            "--data-dir=" + os.path.join(self.dir, "memory"),
            "--listen=127.0.0.1:0", "--admin=127.0.0.1:0",
            "--nats-url=" + (self.nats_url if memory_nats else ""),
            "--no-sync"]).start()
        self.agents = Client(self.am.grpc_target, "AgentManager")
        self.agents_es = Client(self.am.grpc_target, "EventStore")
        self.memory = Client(self.ms.grpc_target, "MemorySync")
        self.memory_es = Client(self.ms.grpc_target, "EventStore")
        self.qs = None
        self.q = None
        if start_query:
            self.start_query()

    @property
    def nats_url(self):
        return self.nats.url if self.nats else ""

    @property
    def query_dir(self):
        return os.path.join(self.dir, "query")

    def query_args(self):
        return ["--data-dir=" + self.query_dir, "--listen=127.0.0.1:0",
                "--admin=127.0.0.1:0", "--agents-addr=" + self.am.grpc_target,
                "--memory-addr=" + self.ms.grpc_target,
                "--nats-url=" + self.nats_url]

    def start_query(self):
        self.qs = lib.Server(QUERY, self.query_args()).start()
        self.q = Client(self.qs.grpc_target, "Query")
        return self.qs

    def stop_query(self, signo=signal.SIGTERM):
        if self.q:
            self.q.close()
            self.q = None
        if signo == signal.SIGKILL:
            self.qs.kill()
            return None
        return self.qs.stop(signo)

    def heads(self):
        """The last position of each source's log."""
        out = {}
        for name, es in (("agents", self.agents_es), ("memory", self.memory_es)):
            r = es.ReadAll(direction=1, limit=1)
            out[name] = r.events[0].position if r.events else 0
        return out

    def caught_up(self, timeout=120):
        """Waits until the query service has projected both logs to their
        current heads; returns the heads."""
        heads = self.heads()
        self.q.GetStats(min_positions=heads, timeout=timeout)
        return heads

    def close(self):
        for c in (self.agents, self.agents_es, self.memory, self.memory_es,
                  self.q):
            if c:
                c.close()
        codes = {}
        for name, s in (("query", self.qs), ("agent-manager", self.am),
                        ("memory-sync", self.ms)):
            if s and s.proc:
                codes[name] = s.stop() if s.proc.poll() is None \
                    else s.proc.returncode
                if codes[name] != 0 and not (name == "query" and s.signalled):
                    print("%s exited with %r:\n%s" % (name, codes[name],
                                                      s.log()[-8000:]),
                          file=sys.stderr)
        if self.nats:
            self.nats.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        return codes


def agent_dict(a):
    return {"agent_id": a.agent_id, "name": a.name,
            "capabilities": list(a.capabilities), "labels": dict(a.labels),
            "max_concurrency": a.max_concurrency, "status": a.status,
            "active_tasks": a.active_tasks, "version": a.version,
            "position": a.position,
            "registered_at_unix_nano": a.registered_at_unix_nano}


def task_dict(t):
    return {f.name: (list(v) if f.name == "required_capabilities" else v)
            for f, v in t.ListFields()}


def memory_dict(e):
    """An entry's metadata. updated_at_unix_nano is left out: memory-sync
    answers its clock at the command, the read model the event's commit
    time (what memory-sync itself shows after replaying its log)."""
    d = {f.name: v for f, v in e.ListFields()}
    d.pop("value", None)
    d.pop("updated_at_unix_nano", None)
    return d


def all_pages(fn, field, page_size=7, **kw):
    out, token = [], ""
    for _ in range(10000):
        r = fn(page_size=page_size, page_token=token, **kw)
        out.extend(getattr(r, field))
        token = r.next_page_token
        if not token:
            return out
    raise AssertionError("pagination does not end")


def feed(q, source, **kw):
    """Every event of a source's feed (or the merged one), paged."""
    out, after = [], 0
    while True:
        r = q.ListEvents(source=source, after_position=after, limit=1000, **kw)
        out.extend(r.events)
        if r.positions["cursor"] == after:
            return out
        after = r.positions["cursor"]


class ScenarioTest(unittest.TestCase):
    """One scripted scenario through the real services; every Query RPC is
    checked against the read model the sources' own answers imply."""

    @classmethod
    def setUpClass(cls):
        cls.mesh = Mesh()
        cls.run_scenario()

    @classmethod
    def tearDownClass(cls):
        codes = cls.mesh.close()
        assert all(c == 0 for c in codes.values()), codes

    @classmethod
    def run_scenario(cls):
        m = cls.mesh
        a = m.agents
        cls.gpu = a.RegisterAgent(name="gpu", capabilities=["py", "gpu"],
                                  labels={"team": "ml", "zone": "z1"},
                                  max_concurrency=2, agent_id=uid("agent"))
        cls.cpu = a.RegisterAgent(name="cpu", capabilities=["py"],
                                  labels={"team": "web"}, max_concurrency=4,
                                  agent_id=uid("agent"))
        cls.gone = a.RegisterAgent(name="gone", capabilities=["go"],
                                   agent_id=uid("agent"))
        a.UpdateAgent(agent_id=cls.cpu.agent_id, labels={"zone": "z2"},
                      expected_version=0)
        a.DeregisterAgent(agent_id=cls.gone.agent_id, reason="retired")
        cls.tasks = []
        for i in range(12):
            t = a.SubmitTask(required_capabilities=["py"], input='{"n":%d}' % i,
                             priority=i % 3)
            cls.tasks.append(t.task_id)
        pinned = a.SubmitTask(agent_id=cls.gpu.agent_id, input="pinned")
        cls.tasks.append(pinned.task_id)
        lonely = a.SubmitTask(required_capabilities=["rust"], input="waits")
        cls.tasks.append(lonely.task_id)
        cls.lonely = lonely.task_id
        # Drive tasks through every state.
        done = []
        for tid in cls.tasks[:6]:
            t = a.GetTask(task_id=tid)
            if t.state != ASSIGNED:
                continue
            a.StartTask(task_id=tid)
            a.ReportProgress(task_id=tid, phase="half", progress_percent=50)
            a.CompleteTask(task_id=tid, output="ok")
            done.append(tid)
        cls.completed = done
        t = a.GetTask(task_id=cls.tasks[6])
        if t.state == ASSIGNED:
            a.StartTask(task_id=cls.tasks[6])
            a.FailTask(task_id=cls.tasks[6], error="boom")
            a.RetryTask(task_id=cls.tasks[6], reason="again")
        a.CancelTask(task_id=cls.tasks[7], reason="no longer needed")
        t = a.GetTask(task_id=cls.tasks[8])
        if t.state == ASSIGNED:
            a.StartTask(task_id=cls.tasks[8])
            a.FailTask(task_id=cls.tasks[8], error="bad input")
        # Memory: values never reach the query service.
        mem = m.memory
        cls.secret = b"top-secret-value-%s" % uuid.uuid4().hex.encode()
        for i in range(5):
            mem.PutMemory(namespace="proj", key="doc/%d" % i,
                          value=cls.secret, content_type="text/plain")
        mem.PutMemory(namespace="proj", key="doc/1", value=b"v2")
        mem.PutMemory(namespace="proj", key="notes", value=b"n")
        mem.DeleteMemory(namespace="proj", key="doc/4")
        for i in range(3):
            mem.PutMemory(namespace="private", key="k%d" % i, value=cls.secret)
        mem.ForgetNamespace(namespace="private", reason="erasure")
        cls.heads = m.caught_up()

    def test_positions_reach_the_sources(self):
        heads = self.heads
        self.assertGreater(heads["agents"], 30)
        self.assertGreater(heads["memory"], 8)
        r = self.mesh.q.GetStats()
        self.assertEqual(dict(r.positions), heads)

    def test_agents(self):
        q, a = self.mesh.q, self.mesh.agents
        ids = [self.gpu.agent_id, self.cpu.agent_id, self.gone.agent_id]
        expected = {i: agent_dict(a.GetAgent(agent_id=i)) for i in ids}
        for i in ids:
            self.assertEqual(agent_dict(q.GetAgent(agent_id=i)), expected[i])
        listed = all_pages(q.ListAgents, "agents", page_size=2)
        self.assertEqual(sorted(x.agent_id for x in listed), sorted(ids))
        self.assertEqual([x.agent_id for x in listed],
                         sorted(x.agent_id for x in listed))
        for x in listed:
            self.assertEqual(agent_dict(x), expected[x.agent_id])

        def ids_of(**kw):
            return sorted(x.agent_id for x in all_pages(q.ListAgents, "agents",
                                                        **kw))
        self.assertEqual(ids_of(status=ONLINE),
                         sorted([self.gpu.agent_id, self.cpu.agent_id]))
        self.assertEqual(ids_of(status=DEREGISTERED), [self.gone.agent_id])
        self.assertEqual(ids_of(capability="gpu"), [self.gpu.agent_id])
        self.assertEqual(ids_of(capability="py"),
                         sorted([self.gpu.agent_id, self.cpu.agent_id]))
        self.assertEqual(ids_of(label_selector="team=web"), [self.cpu.agent_id])
        self.assertEqual(ids_of(label_selector="team=web,zone=z2"),
                         [self.cpu.agent_id])
        self.assertEqual(ids_of(label_selector="team=web,zone=z1"), [])
        self.assertEqual(ids_of(capability="py", status=ONLINE,
                                label_selector="zone=z1"), [self.gpu.agent_id])
        with self.assertRaises(grpc.RpcError) as cm:
            q.GetAgent(agent_id="nobody")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            q.ListAgents(label_selector="novalue")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_tasks(self):
        q, a = self.mesh.q, self.mesh.agents
        expected = {t: task_dict(a.GetTask(task_id=t)) for t in self.tasks}
        listed = all_pages(q.ListTasks, "tasks", page_size=5)
        self.assertEqual([t.task_id for t in listed], self.tasks)
        for t in listed:
            self.assertEqual(task_dict(t), expected[t.task_id])

        def ids_of(**kw):
            return [t.task_id for t in all_pages(q.ListTasks, "tasks", **kw)]
        for state in STATE_NAMES:
            self.assertEqual(ids_of(state=state),
                             [t for t in self.tasks
                              if expected[t]["state"] == state], state)
        for agent in (self.gpu.agent_id, self.cpu.agent_id):
            self.assertEqual(ids_of(agent_id=agent),
                             [t for t in self.tasks
                              if expected[t].get("agent_id") == agent])
            self.assertEqual(
                ids_of(agent_id=agent, state=COMPLETED),
                [t for t in self.tasks if expected[t].get("agent_id") == agent
                 and expected[t]["state"] == COMPLETED])
        times = sorted(expected[t]["submitted_at_unix_nano"] for t in self.tasks)
        since, until = times[3], times[9]
        self.assertEqual(
            sorted(ids_of(since_unix_nano=since, until_unix_nano=until)),
            sorted(t for t in self.tasks
                   if since <= expected[t]["submitted_at_unix_nano"] < until))
        self.assertEqual(len(ids_of(since_unix_nano=since)), len(self.tasks) - 3)

    def test_timeline(self):
        q, es = self.mesh.q, self.mesh.agents_es
        for tid in self.tasks:
            got = q.GetTaskTimeline(task_id=tid).events
            want = es.ReadStream(stream="task-" + tid, limit=1000).events
            self.assertEqual([(e.event_id, e.type, e.position, e.stream_version,
                               e.time_unix_nano, e.data) for e in got],
                             [(e.event_id, e.type, e.position, e.stream_version,
                               e.time_unix_nano, e.data) for e in want])
            self.assertTrue(all(e.source == "agents" and e.data_json
                                for e in got))
        with self.assertRaises(grpc.RpcError) as cm:
            q.GetTaskTimeline(task_id="missing")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_stats(self):
        q, a = self.mesh.q, self.mesh.agents
        states = {}
        for t in self.tasks:
            name = STATE_NAMES[a.GetTask(task_id=t).state]
            states[name] = states.get(name, 0) + 1
        r = q.GetStats()
        self.assertEqual(dict(r.tasks_by_state), states)
        self.assertEqual(dict(r.agents_by_status),
                         {"AGENT_STATUS_ONLINE": 2,
                          "AGENT_STATUS_DEREGISTERED": 1})
        self.assertEqual(r.events_total,
                         self.heads["agents"] + self.heads["memory"])
        self.assertGreater(r.events_per_second, 0)
        if self.completed:
            self.assertGreater(r.submit_to_complete_p50_ms, 0)
            self.assertLessEqual(r.submit_to_complete_p50_ms,
                                 r.submit_to_complete_p90_ms)
            self.assertLessEqual(r.submit_to_complete_p90_ms,
                                 r.submit_to_complete_p99_ms)

    def test_memory(self):
        q, mem = self.mesh.q, self.mesh.memory
        want = [memory_dict(e) for e in all_pages(
            mem.ListMemory, "entries", page_size=100, namespace="proj")]
        got = all_pages(q.SearchMemory, "entries", page_size=2, namespace="proj")
        self.assertEqual([memory_dict(e) for e in got], want)
        self.assertTrue(all(e.value == b"" for e in got))
        self.assertNotIn("doc/4", [e.key for e in got])
        docs = all_pages(q.SearchMemory, "entries", namespace="proj",
                         prefix="doc/")
        self.assertEqual([e.key for e in docs], ["doc/0", "doc/1", "doc/2",
                                                 "doc/3"])
        self.assertEqual(all_pages(q.SearchMemory, "entries",
                                   namespace="private"), [])
        everything = all_pages(q.SearchMemory, "entries")
        self.assertEqual({e.namespace for e in everything}, {"proj"})
        by_prefix = all_pages(q.SearchMemory, "entries", prefix="note")
        self.assertEqual([e.key for e in by_prefix], ["notes"])

    def test_event_feeds(self):
        q = self.mesh.q
        mw = MSG.cls("agentmesh.v1.MemoryWritten")
        for source, es in (("agents", self.mesh.agents_es),
                           ("memory", self.mesh.memory_es)):
            got = feed(q, source)
            self.assertEqual([e.position for e in got],
                             list(range(1, self.heads[source] + 1)))
            want = []
            after = 1
            while True:
                r = es.ReadAll(from_position=after, limit=1000)
                want.extend(r.events)
                if r.end_of_stream or not r.events:
                    break
                after = r.next_position
            self.assertEqual([(e.event_id, e.type, e.stream) for e in got],
                             [(e.event_id, e.type, e.stream) for e in want])
            for e in got:
                self.assertEqual(e.source, source)
                self.assertNotIn(self.secret, e.data)
                self.assertNotIn(self.secret.decode(), e.data_json)
                if e.type == "agentmesh.v1.MemoryWritten":
                    self.assertEqual(mw.FromString(e.data).sealed_value, b"")
        merged = feed(q, "")
        self.assertEqual(len(merged), self.heads["agents"] + self.heads["memory"])
        for source in ("agents", "memory"):
            positions = [e.position for e in merged if e.source == source]
            self.assertEqual(positions, sorted(positions))
        types = ["agentmesh.v1.TaskCompleted", "agentmesh.v1.MemoryDeleted"]
        filtered = feed(q, "", types=types)
        self.assertEqual(len(filtered),
                         len(self.completed) + 1)
        self.assertTrue(all(e.type in types for e in filtered))
        prefixed = feed(q, "agents", stream_prefix="agent-")
        self.assertTrue(prefixed and all(e.stream.startswith("agent-")
                                         for e in prefixed))
        limited = q.ListEvents(source="memory", after_position=2, limit=3)
        self.assertEqual([e.position for e in limited.events], [3, 4, 5])
        with self.assertRaises(grpc.RpcError) as cm:
            q.ListEvents(source="elsewhere")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_read_all_omits_data_json_on_request(self):
        # The catch-up client asks the sources for pages without data_json;
        # without that metadata (or with another value) they keep it.
        es = self.mesh.agents_es
        full = es.ReadAll(from_position=1, limit=1000).events
        self.assertTrue(full and all(e.data_json for e in full))
        lean = es.ReadAll(from_position=1, limit=1000,
                          metadata=(("x-agentmesh-omit-data-json", "1"),)).events
        self.assertEqual([(e.position, e.event_id, e.type, e.data)
                          for e in lean],
                         [(e.position, e.event_id, e.type, e.data)
                          for e in full])
        self.assertTrue(all(e.data_json == "" for e in lean))
        other = es.ReadAll(from_position=1, limit=3,
                           metadata=(("x-agentmesh-omit-data-json", "0"),))
        self.assertTrue(all(e.data_json for e in other.events))
        stream = full[0].stream
        one = self.mesh.agents_es.ReadStream(
            stream=stream, metadata=(("x-agentmesh-omit-data-json", "1"),))
        self.assertTrue(one.events and
                        all(e.data_json == "" for e in one.events))

    def test_subscribe_events(self):
        q = self.mesh.q
        stream = q.SubscribeEvents(source="agents", after_position=0, timeout=30)
        got = []
        for e in stream:
            got.append(e.position)
            if len(got) == self.heads["agents"]:
                break
        self.assertEqual(got, list(range(1, self.heads["agents"] + 1)))
        # Live: a new command's events arrive on an open stream.
        stream = q.SubscribeEvents(source="agents",
                                   after_position=self.heads["agents"],
                                   types=["agentmesh.v1.AgentRegistered"],
                                   timeout=30)
        new = self.mesh.agents.RegisterAgent(name="late", capabilities=["x"])
        first = next(iter(stream))
        stream.cancel()
        self.assertEqual(first.position, new.position)
        self.assertEqual(first.type, "agentmesh.v1.AgentRegistered")


class ReadYourWritesTest(unittest.TestCase):
    """min_positions: a command, then a query with the command's position,
    always sees the command; a position the projection cannot reach in time
    is DEADLINE_EXCEEDED."""

    def test_read_your_writes(self):
        mesh = Mesh()
        try:
            a, q = mesh.agents, mesh.q
            agent = a.RegisterAgent(name="w", capabilities=["py"],
                                    max_concurrency=1000)
            got = q.GetAgent(agent_id=agent.agent_id,
                             min_positions={"agents": agent.position})
            self.assertEqual(got.position, agent.position)
            for i in range(100 if SANITIZED else 300):
                t = a.SubmitTask(required_capabilities=["py"], input=str(i))
                r = q.ListTasks(agent_id=agent.agent_id, state=t.state,
                                since_unix_nano=t.submitted_at_unix_nano,
                                min_positions={"agents": t.position})
                self.assertIn(t.task_id, [x.task_id for x in r.tasks])
                self.assertGreaterEqual(r.positions["agents"], t.position)
                if i % 10 == 0:
                    tl = q.GetTaskTimeline(task_id=t.task_id,
                                           min_positions={"agents": t.position})
                    self.assertEqual(tl.events[-1].position, t.position)
            e = mesh.memory.PutMemory(namespace="ryw", key="k", value=b"v")
            r = q.SearchMemory(namespace="ryw",
                               min_positions={"memory": e.position})
            self.assertEqual([x.version for x in r.entries], [e.version])
            with self.assertRaises(grpc.RpcError) as cm:
                q.GetStats(min_positions={"agents": 10 ** 12}, timeout=0.5)
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.DEADLINE_EXCEEDED)
            with self.assertRaises(grpc.RpcError) as cm:
                q.GetStats(min_positions={"other": 1})
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.INVALID_ARGUMENT)
        finally:
            codes = mesh.close()
        self.assertTrue(all(c == 0 for c in codes.values()), codes)


class PaginationTest(unittest.TestCase):
    """Paging while inserts go on: every item that existed at the first page
    is seen exactly once; a token is bound to its filters."""

    def test_pages_under_concurrent_inserts(self):
        mesh = Mesh()
        try:
            a, q = mesh.agents, mesh.q
            before = [a.SubmitTask(input="t%d" % i,
                                   required_capabilities=["none"]).task_id
                      for i in range(120)]
            agents_before = [a.RegisterAgent(name="a%d" % i,
                                             capabilities=["c"]).agent_id
                             for i in range(40)]
            mesh.caught_up()
            stop = threading.Event()

            def writer():
                i = 0
                while not stop.is_set():
                    a.SubmitTask(input="late%d" % i, required_capabilities=["none"])
                    a.RegisterAgent(name="late%d" % i, capabilities=["c"])
                    i += 1

            th = threading.Thread(target=writer)
            th.start()
            try:
                seen, token, pages = [], "", 0
                while True:
                    r = q.ListTasks(page_size=7, page_token=token,
                                    state=PENDING)
                    seen.extend(t.task_id for t in r.tasks)
                    token = r.next_page_token
                    pages += 1
                    time.sleep(0.01)
                    if not token:
                        break
                agents_seen = [x.agent_id for x in
                               all_pages(q.ListAgents, "agents", page_size=3,
                                         capability="c")]
            finally:
                stop.set()
                th.join()
            self.assertGreater(pages, 10)
            self.assertEqual(len(seen), len(set(seen)))
            self.assertEqual([t for t in seen if t in set(before)], before)
            self.assertEqual(len(agents_seen), len(set(agents_seen)))
            self.assertTrue(set(agents_before) <= set(agents_seen))
            r = q.ListTasks(page_size=5)
            with self.assertRaises(grpc.RpcError) as cm:
                q.ListTasks(page_size=5, page_token=r.next_page_token,
                            state=COMPLETED)
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.INVALID_ARGUMENT)
            with self.assertRaises(grpc.RpcError) as cm:
                q.ListAgents(page_token="not a token")
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.INVALID_ARGUMENT)
        finally:
            codes = mesh.close()
        self.assertTrue(all(c == 0 for c in codes.values()), codes)


def read_all_calls(server):
    """EventStore.ReadAll calls a source has served, from its /metrics."""
    status, text = lib.http_get(server.admin_url + "/metrics")
    assert status == 200, status
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("agentmesh_rpc_requests_total{")
               and "EventStore/ReadAll" in line)


@unittest.skipUnless(USE_NATS, "needs NATS")
class PollTest(unittest.TestCase):
    """agent-manager publishes on NATS, memory-sync has no outbox: while
    agents' events flow through NATS, the query service does not poll
    agent-manager, and it keeps polling memory-sync, whose events only the
    poll brings (--poll-interval 250ms)."""

    def test_poll_only_a_quiet_source(self):
        m = Mesh(memory_nats=False)
        try:
            m.caught_up()
            stop = threading.Event()
            sent = []

            def stream():
                while not stop.is_set():
                    m.agents.SubmitTask(required_capabilities=["none"],
                                        input="x")
                    sent.append(1)
                    time.sleep(0.01)
            t = threading.Thread(target=stream)
            t.start()
            try:
                lib.poll_until(lambda: len(sent) > 5, what="agents' stream")
                before = read_all_calls(m.am)
                start = time.monotonic()
                # Memory events come by the poll alone, during the stream.
                m.memory.PutMemory(namespace="quiet", key="k", value=b"v")
                heads = m.heads()
                m.q.GetStats(min_positions={"memory": heads["memory"]},
                             timeout=5)
                while time.monotonic() - start < 2.5:
                    time.sleep(0.05)
                during = read_all_calls(m.am) - before
                n_sent = len(sent)
                live = lib.metric_value(
                    lib.http_get(m.qs.admin_url + "/metrics")[1],
                    "agentmesh_query_events_applied_total",
                    {"source": "agents", "path": "nats"})
                # SIGTERM while NATS delivers: a clean exit (the handler
                # applying a burst is waited for), then a restart catches up.
                self.assertEqual(m.stop_query(), 0)
            finally:
                stop.set()
                t.join()
            # Ten poll intervals went by; a pause of the stream longer than
            # an interval (a slow machine) may let one or two polls through.
            self.assertLessEqual(during, 2, "agent-manager polled while "
                                 "NATS brought its events")
            # All but the few in flight (or read by a poll at the start).
            self.assertGreaterEqual(live or 0, n_sent - 10)
            m.start_query()
            heads = m.caught_up()
            r = m.q.GetStats()
            self.assertEqual(dict(r.positions), heads)
            self.assertEqual(r.events_total, heads["agents"] + heads["memory"])
        finally:
            m.close()


class FaultsTest(unittest.TestCase):
    """Exactly-once under faults, in one run of FAULT_EVENTS events: the
    query service starts only after events were published, is killed with
    SIGKILL in the middle, and nats-server is stopped for a while. After
    each fault every count is exact: no event missing, none twice."""

    def setUp(self):
        self.mesh = Mesh(start_query=False)
        self.tasks = 0
        self.puts = 0
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(8)

    def tearDown(self):
        self.pool.shutdown()
        codes = self.mesh.close()
        self.assertTrue(all(c == 0 for c in codes.values()), codes)

    def produce(self, events):
        """About `events` events: pending tasks (one event each) and memory
        writes (one each), from 8 threads."""
        def one(i):
            if i % 5 == 4:
                self.mesh.memory.PutMemory(namespace="ns%d" % (i % 7),
                                           key=uuid.uuid4().hex, value=b"v")
                with self.lock:
                    self.puts += 1
            else:
                self.mesh.agents.SubmitTask(required_capabilities=["none"],
                                            input="x")
                with self.lock:
                    self.tasks += 1
        list(self.pool.map(one, range(events)))

    def check_exact(self):
        m = self.mesh
        heads = m.caught_up()
        self.assertEqual(heads["agents"], self.tasks)
        self.assertEqual(heads["memory"], self.puts)
        r = m.q.GetStats()
        self.assertEqual(dict(r.positions), heads)
        self.assertEqual(r.events_total, self.tasks + self.puts)
        self.assertEqual(dict(r.tasks_by_state),
                         {"TASK_STATE_PENDING": self.tasks})
        for source in ("agents", "memory"):
            self.assertEqual([e.position for e in feed(m.q, source)],
                             list(range(1, heads[source] + 1)), source)
        merged = feed(m.q, "")
        self.assertEqual(len(merged), self.tasks + self.puts)
        self.assertEqual(len({(e.source, e.position) for e in merged}),
                         len(merged))
        tasks = all_pages(m.q.ListTasks, "tasks", page_size=1000)
        self.assertEqual(len(tasks), self.tasks)
        self.assertEqual(len({t.task_id for t in tasks}), self.tasks)
        mem = all_pages(m.q.SearchMemory, "entries", page_size=1000)
        self.assertEqual(len(mem), self.puts)

    def test_exactly_once_under_faults(self):
        m = self.mesh
        quarter = FAULT_EVENTS // 4
        # 1. Published before the query service exists: it catches up.
        self.produce(quarter)
        m.start_query()
        self.check_exact()
        # 2. SIGKILL in the middle of a burst, then a restart.
        base = self.tasks
        burst = self.pool.submit(self.produce, quarter)
        lib.poll_until(lambda: m.heads()["agents"] > base + quarter // 4,
                       what="the burst to be under way")
        m.stop_query(signal.SIGKILL)
        burst.result()
        m.start_query()
        self.check_exact()
        # 3. nats-server down for a while during a burst, then back.
        base = self.tasks
        burst = self.pool.submit(self.produce, quarter)
        if m.nats:
            lib.poll_until(lambda: m.heads()["agents"] > base + quarter // 8,
                           what="the burst to be under way")
            m.nats.kill()
            lib.poll_until(lambda: m.heads()["agents"] > base + quarter // 2,
                           what="events committed while NATS is down")
            m.nats.start()
        burst.result()
        self.check_exact()
        # 4. The rest with everything up, then a restart with SIGTERM.
        self.produce(FAULT_EVENTS - 3 * quarter)
        self.check_exact()
        status, text = lib.http_get(m.qs.admin_url + "/metrics")
        self.assertEqual(status, 200)
        live = lib.metric_value(text, "agentmesh_query_events_applied_total",
                                {"source": "agents", "path": "nats"})
        if USE_NATS:
            self.assertGreater(live or 0, 0, "no event came through NATS")
        self.assertEqual(m.stop_query(), 0)
        m.start_query()
        self.check_exact()
        self.assertEqual(self.tasks + self.puts, FAULT_EVENTS)


class RebuildTest(unittest.TestCase):
    """Rebuild equivalence: dump the read models, rebuild from the sources,
    dump again: identical. Also health, reflection and SIGTERM."""

    def dump(self, mesh):
        out = os.path.join(mesh.dir, "dump-%s.txt" % uuid.uuid4().hex[:6])
        subprocess.run([QUERY, "--data-dir=" + mesh.query_dir,
                        "--dump=" + out], check=True, timeout=120)
        with open(out) as f:
            return f.read()

    def test_rebuild_identical(self):
        mesh = Mesh()
        try:
            a, mem = mesh.agents, mesh.memory
            agent = a.RegisterAgent(name="r", capabilities=["py"],
                                    labels={"k": "v"}, max_concurrency=3)
            for i in range(40):
                t = a.SubmitTask(required_capabilities=["py"], input=str(i))
                if t.state == ASSIGNED:
                    a.StartTask(task_id=t.task_id)
                    a.CompleteTask(task_id=t.task_id, output="done")
                mem.PutMemory(namespace="n%d" % (i % 3), key="k%d" % i,
                              value=b"secret")
            mem.ForgetNamespace(namespace="n1")
            a.UpdateAgent(agent_id=agent.agent_id, labels={"k": "w"})
            mesh.caught_up()
            self.health_and_reflection(mesh)
            self.assertEqual(mesh.stop_query(), 0)
            before = self.dump(mesh)
            self.assertIn("checkpoint agents", before)
            self.assertNotIn("secret".encode().hex(), before)
            # Every read model the scenario fills is in the dump, so equal
            # dumps mean equal read models, not two empty ones.
            lines = before.splitlines()
            for ns in ("q.agents", "q.agents.cap", "q.agents.label",
                       "q.tasks", "q.tasks.state", "q.tasks.time",
                       "q.timeline", "q.memory", "q.stats", "q.latency",
                       "q.feed.agents", "q.feed.memory", "q.feed"):
                self.assertTrue(any(l.startswith(ns + " ") for l in lines),
                                ns)
            self.assertGreater(len(lines), 500)
            out = subprocess.run(QUERY_REBUILD(mesh), capture_output=True,
                                 text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("rebuild: done:", out.stderr)
            self.assertIn("events/s", out.stderr)
            after = self.dump(mesh)
            self.assertEqual(lines, after.splitlines())
            # From the logs' files in place (the services still running),
            # alone and then followed by the EventStore APIs: the same.
            logs = ["--agents-log=" + os.path.join(mesh.dir, "agents"),
                    "--memory-log=" + os.path.join(mesh.dir, "memory")]
            only_logs = [QUERY, "--rebuild", "--data-dir=" + mesh.query_dir,
                         "--agents-addr=", "--memory-addr="] + logs
            for argv in (only_logs, QUERY_REBUILD(mesh) + logs):
                out = subprocess.run(argv, capture_output=True, text=True,
                                     timeout=300)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertIn("replaying agents from its log in", out.stderr)
                self.assertIn("replaying memory from its log in", out.stderr)
                self.assertEqual(lines, self.dump(mesh).splitlines())
            bad = [QUERY, "--rebuild", "--data-dir=" + mesh.query_dir,
                   "--agents-addr=", "--memory-addr=",
                   "--agents-log=" + os.path.join(mesh.dir, "nowhere")]
            out = subprocess.run(bad, capture_output=True, text=True,
                                 timeout=60)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("cannot open the agents log", out.stderr)
            # Put the read models back for the restart below.
            out = subprocess.run(QUERY_REBUILD(mesh), capture_output=True,
                                 text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr)
            mesh.start_query()
            r = mesh.q.GetStats()
            self.assertEqual(dict(r.positions), mesh.heads())
        finally:
            codes = mesh.close()
        self.assertTrue(all(c == 0 for c in codes.values()), codes)

    def health_and_reflection(self, mesh):
        ch = grpc.insecure_channel(mesh.qs.grpc_target)
        try:
            check = lib.raw_unary(ch, "/grpc.health.v1.Health/Check")
            # HealthCheckRequest{service}: field 1, string.
            for svc in (b"", b"agentmesh.v1.Query"):
                req = b"\x0a" + bytes([len(svc)]) + svc if svc else b""
                self.assertEqual(check(req, timeout=10), b"\x08\x01")
            refl = ch.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=None, response_deserializer=None)
            # ServerReflectionRequest{list_services: "*"} (field 7).
            reply = next(iter(refl(iter([b"\x3a\x01*"]), timeout=10)))
            self.assertIn(b"agentmesh.v1.Query", reply)
            status, body = lib.http_get(mesh.qs.admin_url + "/healthz")
            self.assertEqual(status, 200, body)
            status, body = lib.http_get(mesh.qs.admin_url + "/metrics")
            self.assertEqual(status, 200)
        finally:
            ch.close()


def QUERY_REBUILD(mesh):
    return [QUERY, "--rebuild"] + [a for a in mesh.query_args()
                                   if not a.startswith("--nats-url")]


if __name__ == "__main__":
    unittest.main(verbosity=2)
