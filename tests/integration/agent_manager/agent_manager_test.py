"""Integration tests of agent-manager: the real binary on free loopback ports
with a temporary data directory, driven by Python grpcio (message classes
built from the API descriptor set at run time). Covers every AgentManager
RPC and error code, the assignment rule, heartbeats, WatchTask, the
EventStore read API, health, reflection, restart and SIGTERM under load.
Usage: agent_manager_test.py AGENT_MANAGER API_DESC"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import grpc

import agentmesh_testlib as lib

BINARY, API_DESC = sys.argv[1:3]
del sys.argv[1:3]

MSG = lib.Messages(API_DESC)
TOKEN = "am-internal-token"
AM = "/agentmesh.v1.AgentManager/"
ES = "/agentmesh.v1.EventStore/"

PENDING, ASSIGNED, RUNNING, COMPLETED, FAILED, CANCELLED = 1, 2, 3, 4, 5, 6
ONLINE, OFFLINE, DEREGISTERED = 1, 2, 3
BACKWARD = 1


def uid(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class Client:
    """Unary and streaming callables for every method, on one channel."""

    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        for name in ("RegisterAgent", "GetAgent", "UpdateAgent",
                     "DeregisterAgent", "Heartbeat", "SubmitTask", "GetTask",
                     "StartTask", "ReportProgress", "CompleteTask", "FailTask",
                     "CancelTask", "RetryTask"):
            setattr(self, name, self._wrap(MSG.unary(self.channel, AM + name),
                                           AM + name))
        self.WatchTask = self._wrap(
            MSG.server_stream(self.channel, AM + "WatchTask"), AM + "WatchTask")
        for name in ("ReadStream", "ReadAll"):
            setattr(self, name, self._wrap(MSG.unary(self.channel, ES + name),
                                           ES + name))
        self.SubscribeAll = self._wrap(
            MSG.server_stream(self.channel, ES + "SubscribeAll"),
            ES + "SubscribeAll")

    @staticmethod
    def _wrap(stub, method):
        req_cls, _ = MSG.method(method)

        def call(metadata=None, timeout=30, **fields):
            return stub(req_cls(**fields), metadata=metadata, timeout=timeout)
        return call

    def close(self):
        self.channel.close()


# Flags every server of this run gets: the BUILD runs the suite once as is
# and once with SubmitTask on worker threads (--fast-submit=false).
SERVER_FLAGS = os.environ.get("AGENT_MANAGER_TEST_FLAGS", "").split()


def start_server(data_dir, *extra, nats_url=""):
    return lib.Server(BINARY, ["--data-dir=" + data_dir, "--listen=127.0.0.1:0",
                               "--admin=127.0.0.1:0", "--nats-url=" + nats_url,
                               "--internal-token=" + TOKEN] + SERVER_FLAGS +
                      list(extra)).start()


def details(exc):
    """{detail type name: decoded message} of a failure's google.rpc.Status."""
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "no grpc-status-details-bin"
    st = MSG.cls("google.rpc.Status").FromString(raw)
    out = {}
    for d in st.details:
        name = d.type_url.split("/")[-1]
        out[name] = MSG.cls(name).FromString(d.value)
    return out


def metrics(server):
    status, text = lib.http_get(server.admin_url + "/metrics")
    assert status == 200, status
    return text


class AgentManagerTest(unittest.TestCase):
    """Tests against one shared server (default heartbeat timeout)."""

    @classmethod
    def setUpClass(cls):
        cls.data = tempfile.mkdtemp(prefix="am-test-")
        cls.server = start_server(os.path.join(cls.data, "agents"))
        cls.c = Client(cls.server.grpc_target)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        code = cls.server.stop()
        shutil.rmtree(cls.data, ignore_errors=True)
        assert code == 0, "exit code %r:\n%s" % (code, cls.server.log())

    def assertCode(self, code, fn, *args, **kw):
        return self.assertFails(code, fn, *args, **kw).details()

    def assertFails(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception

    def agent(self, caps=("py",), conc=4, **kw):
        return self.c.RegisterAgent(name="worker", capabilities=list(caps),
                                    max_concurrency=conc, **kw)

    def stream(self, name):
        return list(self.c.ReadStream(stream=name, limit=1000).events)

    # ---- agents ---------------------------------------------------------

    def test_agent_lifecycle_and_patch(self):
        a = self.agent(caps=["py", "gpu"], labels={"team": "a", "zone": "z1"},
                       agent_id=uid("agent"))
        self.assertEqual(a.status, ONLINE)
        self.assertEqual(a.version, 0)
        self.assertGreater(a.position, 0)
        got = self.c.GetAgent(agent_id=a.agent_id)
        self.assertEqual(got.name, "worker")
        self.assertEqual(dict(got.labels), {"team": "a", "zone": "z1"})
        u = self.c.UpdateAgent(agent_id=a.agent_id, labels={"zone": "", "new": "x"},
                               max_concurrency=0, expected_version=0)
        self.assertEqual(list(u.capabilities), ["py", "gpu"])
        self.assertEqual(u.max_concurrency, 4)
        self.assertEqual(dict(u.labels), {"team": "a", "new": "x"})
        self.assertEqual(u.version, 1)
        self.assertGreater(u.position, a.position)
        details = self.assertCode(grpc.StatusCode.ABORTED, self.c.UpdateAgent,
                                  agent_id=a.agent_id, max_concurrency=2,
                                  expected_version=0)
        self.assertIn("version 1", details)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, self.agent,
                        agent_id=a.agent_id)
        d = self.c.DeregisterAgent(agent_id=a.agent_id, reason="done",
                                   expected_version=1)
        self.assertEqual(d.status, DEREGISTERED)
        before = len(self.stream("agent-" + a.agent_id))
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION,
                        self.c.DeregisterAgent, agent_id=a.agent_id)
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.UpdateAgent,
                        agent_id=a.agent_id, max_concurrency=3)
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.Heartbeat,
                        agent_id=a.agent_id)
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.SubmitTask,
                        agent_id=a.agent_id)
        self.assertEqual(len(self.stream("agent-" + a.agent_id)), before)
        types = [e.type for e in self.stream("agent-" + a.agent_id)]
        self.assertEqual(types, ["agentmesh.v1.AgentRegistered",
                                 "agentmesh.v1.AgentUpdated",
                                 "agentmesh.v1.AgentDeregistered"])
        again = self.agent(agent_id=a.agent_id)
        self.assertEqual(again.status, ONLINE)
        self.assertEqual(again.version, 3)

    def test_generated_ids_are_uuids(self):
        a = self.agent()
        uuid.UUID(a.agent_id)
        t = self.c.SubmitTask(required_capabilities=["py"])
        uuid.UUID(t.task_id)

    def test_invalid_arguments(self):
        bad = grpc.StatusCode.INVALID_ARGUMENT
        self.assertCode(bad, self.c.RegisterAgent, name="")
        self.assertCode(bad, self.c.RegisterAgent, name="x", capabilities=["GPU!"])
        self.assertCode(bad, self.c.RegisterAgent, name="x", agent_id="a b")
        self.assertCode(bad, self.c.RegisterAgent, name="x", agent_id="a" * 129)
        self.assertCode(bad, self.c.RegisterAgent, name="x", max_concurrency=5000)
        self.assertCode(bad, self.c.RegisterAgent, name="x",
                        labels={"k%d" % i: "v" for i in range(65)})
        self.assertCode(bad, self.c.RegisterAgent, name="x", labels={"-k": "v"})
        self.assertCode(bad, self.c.GetAgent, agent_id="")
        self.assertCode(bad, self.c.SubmitTask, required_capabilities=["Bad Cap"])
        details = self.assertCode(bad, self.c.SubmitTask, input="x" * (256 * 1024 + 1))
        self.assertIn("input", details)
        self.assertCode(bad, self.c.SubmitTask, task_id="bad/id")
        self.assertCode(bad, self.c.GetTask, task_id="")
        t = self.c.SubmitTask(required_capabilities=["nobody-has-this"])
        self.assertCode(bad, self.c.ReportProgress, task_id=t.task_id,
                        progress_percent=101)
        self.assertCode(bad, self.c.CompleteTask, task_id=t.task_id,
                        output="y" * (256 * 1024 + 1))
        self.assertCode(bad, self.c.ReadAll, limit=1001)
        self.assertCode(bad, self.c.ReadStream, stream="", limit=1)

    def test_rich_error_details(self):
        e = self.assertFails(grpc.StatusCode.INVALID_ARGUMENT, self.c.SubmitTask,
                             required_capabilities=["ok", "Not Ok"])
        br = details(e)["google.rpc.BadRequest"]
        self.assertEqual(br.field_violations[0].field, "required_capabilities[1]")
        t = self.c.SubmitTask(required_capabilities=[uid("rich")])
        e = self.assertFails(grpc.StatusCode.ABORTED, self.c.CancelTask,
                             task_id=t.task_id, expected_version=5)
        info = details(e)["google.rpc.ErrorInfo"]
        self.assertEqual(info.reason, "WRONG_EXPECTED_VERSION")
        self.assertEqual(info.metadata["current_version"], "0")
        e = self.assertFails(grpc.StatusCode.FAILED_PRECONDITION, self.c.StartTask,
                             task_id=t.task_id)
        pf = details(e)["google.rpc.PreconditionFailure"]
        self.assertIn("TASK_STATE_PENDING", pf.violations[0].description)

    def test_unknown_ids_are_not_found(self):
        nf = grpc.StatusCode.NOT_FOUND
        missing = uid("missing")
        for fn in (self.c.GetAgent, self.c.UpdateAgent, self.c.DeregisterAgent,
                   self.c.Heartbeat):
            self.assertCode(nf, fn, agent_id=missing)
        self.assertCode(nf, self.c.SubmitTask, agent_id=missing)
        for fn in (self.c.GetTask, self.c.StartTask, self.c.ReportProgress,
                   self.c.CompleteTask, self.c.FailTask, self.c.CancelTask,
                   self.c.RetryTask):
            self.assertCode(nf, fn, task_id=missing)
        self.assertCode(nf, lambda: list(self.c.WatchTask(task_id=missing)))
        self.assertCode(nf, self.c.ReadStream, stream="task-" + missing)

    # ---- tasks ----------------------------------------------------------

    def test_submit_assigns_in_one_append_and_lifecycle(self):
        cap = uid("cap")
        a = self.agent(caps=[cap])
        t = self.c.SubmitTask(required_capabilities=[cap], input='{"q":1}',
                              priority=3)
        self.assertEqual(t.state, ASSIGNED)
        self.assertEqual(t.agent_id, a.agent_id)
        self.assertEqual(t.attempt, 1)
        evs = self.stream("task-" + t.task_id)
        self.assertEqual([e.type for e in evs],
                         ["agentmesh.v1.TaskSubmitted", "agentmesh.v1.TaskAssigned"])
        self.assertEqual(evs[1].position, evs[0].position + 1)
        self.assertEqual(t.position, evs[1].position)
        self.assertEqual(self.c.GetAgent(agent_id=a.agent_id).active_tasks, 1)
        s = self.c.StartTask(task_id=t.task_id, expected_version=1)
        self.assertEqual((s.state, s.version), (RUNNING, 2))
        p = self.c.ReportProgress(task_id=t.task_id, phase="half",
                                  progress_percent=50)
        self.assertEqual((p.phase, p.progress_percent, p.state), ("half", 50, RUNNING))
        done = self.c.CompleteTask(task_id=t.task_id, output="ok")
        self.assertEqual((done.state, done.output), (COMPLETED, "ok"))
        self.assertEqual(done.position, self.stream("task-" + t.task_id)[-1].position)
        self.assertEqual(self.c.GetAgent(agent_id=a.agent_id).active_tasks, 0)
        before = len(self.stream("task-" + t.task_id))
        for fn in (self.c.StartTask, self.c.CompleteTask, self.c.FailTask,
                   self.c.CancelTask, self.c.RetryTask, self.c.ReportProgress):
            details = self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, fn,
                                      task_id=t.task_id)
            self.assertIn("TASK_STATE_COMPLETED", details)
        self.assertEqual(len(self.stream("task-" + t.task_id)), before)

    def test_pending_until_an_agent_registers(self):
        cap = uid("rare")
        t = self.c.SubmitTask(required_capabilities=[cap])
        self.assertEqual(t.state, PENDING)
        self.assertEqual(t.agent_id, "")
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.StartTask,
                        task_id=t.task_id)
        a = self.agent(caps=[cap, "other"])
        got = lib.poll_until(
            lambda: (lambda x: x if x.state == ASSIGNED else None)(
                self.c.GetTask(task_id=t.task_id)), what="assignment")
        self.assertEqual(got.agent_id, a.agent_id)

    def test_pending_queue_priority_when_agent_frees_up(self):
        cap = uid("one")
        a = self.agent(caps=[cap], conc=1)
        t1 = self.c.SubmitTask(required_capabilities=[cap])
        t2 = self.c.SubmitTask(required_capabilities=[cap], priority=0)
        t3 = self.c.SubmitTask(required_capabilities=[cap], priority=5)
        self.assertEqual((t1.state, t2.state, t3.state), (ASSIGNED, PENDING, PENDING))
        self.c.StartTask(task_id=t1.task_id)
        self.c.FailTask(task_id=t1.task_id, error="boom")
        self.assertEqual(self.c.GetTask(task_id=t3.task_id).state, ASSIGNED)
        self.assertEqual(self.c.GetTask(task_id=t2.task_id).state, PENDING)
        self.c.CancelTask(task_id=t3.task_id, reason="not needed")
        self.assertEqual(self.c.GetTask(task_id=t2.task_id).state, ASSIGNED)
        # Raising max_concurrency frees capacity too.
        t4 = self.c.SubmitTask(required_capabilities=[cap])
        self.assertEqual(t4.state, PENDING)
        self.c.UpdateAgent(agent_id=a.agent_id, max_concurrency=2)
        self.assertEqual(self.c.GetTask(task_id=t4.task_id).state, ASSIGNED)
        self.assertEqual(self.c.GetAgent(agent_id=a.agent_id).active_tasks, 2)

    def test_least_loaded_agent_wins(self):
        cap = uid("ll")
        a1 = self.agent(caps=[cap], conc=4)
        a2 = self.agent(caps=[cap], conc=4)
        got = [self.c.SubmitTask(required_capabilities=[cap]).agent_id
               for _ in range(4)]
        self.assertEqual(sorted(got), sorted([a1.agent_id, a2.agent_id] * 2))

    def test_targeted_task(self):
        a = self.agent(caps=["py"], conc=1)
        t = self.c.SubmitTask(agent_id=a.agent_id, input="x")
        self.assertEqual((t.state, t.agent_id), (ASSIGNED, a.agent_id))
        t2 = self.c.SubmitTask(agent_id=a.agent_id)
        self.assertEqual((t2.state, t2.agent_id), (PENDING, a.agent_id))
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.SubmitTask,
                        agent_id=a.agent_id, required_capabilities=["nope"])

    def test_fail_retry_cancel(self):
        cap = uid("retry")
        a = self.agent(caps=[cap])
        t = self.c.SubmitTask(required_capabilities=[cap])
        self.c.StartTask(task_id=t.task_id)
        f = self.c.FailTask(task_id=t.task_id, error="oops")
        self.assertEqual((f.state, f.error), (FAILED, "oops"))
        r = self.c.RetryTask(task_id=t.task_id, reason="again")
        self.assertEqual((r.state, r.attempt, r.agent_id), (ASSIGNED, 2, a.agent_id))
        types = [e.type for e in self.stream("task-" + t.task_id)][-2:]
        self.assertEqual(types, ["agentmesh.v1.TaskRetried", "agentmesh.v1.TaskAssigned"])
        c = self.c.CancelTask(task_id=t.task_id, reason="stop")
        self.assertEqual(c.state, CANCELLED)
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.c.RetryTask,
                        task_id=t.task_id)
        p = self.c.SubmitTask(required_capabilities=[uid("none")])
        self.assertEqual(self.c.CancelTask(task_id=p.task_id).state, CANCELLED)

    def test_expected_version_on_tasks(self):
        t = self.c.SubmitTask(required_capabilities=[uid("ev")])
        details = self.assertCode(grpc.StatusCode.ABORTED, self.c.CancelTask,
                                  task_id=t.task_id, expected_version=7)
        self.assertIn("version 0", details)
        self.assertEqual(self.c.GetTask(task_id=t.task_id).version, 0)
        self.c.CancelTask(task_id=t.task_id, expected_version=0)

    def test_idempotency_key_and_client_ids(self):
        key = uid("key")
        t1 = self.c.SubmitTask(required_capabilities=[uid("idem")],
                               idempotency_key=key, input="first")
        last = self.c.ReadAll(direction=BACKWARD, limit=1).events[0].position
        t2 = self.c.SubmitTask(required_capabilities=["other"],
                               idempotency_key=key, input="second")
        self.assertEqual(t2.task_id, t1.task_id)
        self.assertEqual(t2.input, "first")
        self.assertEqual(t2.idempotency_key, key)
        self.assertEqual(
            self.c.ReadAll(direction=BACKWARD, limit=1).events[0].position, last)
        tid = uid("task")
        t3 = self.c.SubmitTask(task_id=tid, required_capabilities=["zz"])
        self.assertEqual(t3.task_id, tid)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, self.c.SubmitTask,
                        task_id=tid)

    def test_concurrent_idempotent_submits_make_one_task(self):
        key = uid("race")
        ids, errors = [], []

        def submit():
            try:
                ids.append(self.c.SubmitTask(idempotency_key=key,
                                             required_capabilities=["x"]).task_id)
            except grpc.RpcError as e:
                errors.append(e)
        threads = [threading.Thread(target=submit) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(ids)), 1)

    # ---- events and metadata ------------------------------------------

    def test_event_envelope_and_metadata(self):
        md = [("x-correlation-id", "corr-1"), ("x-request-id", "req-1"),
              ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
        t = self.c.SubmitTask(required_capabilities=[uid("meta")], metadata=md)
        ev = self.stream("task-" + t.task_id)[0]
        self.assertEqual(ev.type, "agentmesh.v1.TaskSubmitted")
        self.assertEqual(ev.content_type, "application/x-protobuf")
        self.assertEqual(ev.source, "agents")
        self.assertEqual(ev.stream_version, 0)
        uuid.UUID(ev.event_id)
        payload = MSG.cls("agentmesh.v1.TaskSubmitted").FromString(ev.data)
        self.assertEqual(payload.task_id, t.task_id)
        self.assertIn('"taskId"', ev.data_json)
        self.assertEqual(ev.metadata.correlation_id, "corr-1")
        self.assertEqual(ev.metadata.causation_id, "req-1")
        self.assertEqual(ev.metadata.traceparent, md[2][1])
        self.assertEqual(ev.metadata.actor, "anonymous")
        trusted = [("x-agentmesh-principal", "alice"),
                   ("x-agentmesh-internal-token", TOKEN)]
        t2 = self.c.SubmitTask(required_capabilities=["m"], metadata=trusted)
        ev2 = self.stream("task-" + t2.task_id)[0]
        self.assertEqual(ev2.metadata.actor, "alice")
        self.assertTrue(ev2.metadata.correlation_id)
        self.assertTrue(ev2.metadata.traceparent.startswith("00-"))
        long = [("x-request-id", "r" * 5000), ("x-correlation-id", "c" * 5000),
                ("traceparent", "00-" + "a" * 3000)]
        t4 = self.c.SubmitTask(required_capabilities=["m"], metadata=long)
        ev4 = self.stream("task-" + t4.task_id)[0]
        self.assertEqual(ev4.metadata.causation_id, "r" * 128)
        self.assertEqual(ev4.metadata.correlation_id, "c" * 128)
        self.assertEqual(len(ev4.metadata.traceparent), 55)
        forged = [("x-agentmesh-principal", "mallory")]
        t3 = self.c.SubmitTask(required_capabilities=["m"], metadata=forged)
        self.assertEqual(self.stream("task-" + t3.task_id)[0].metadata.actor,
                         "anonymous")

    def test_assignment_after_release_is_caused_by_the_release(self):
        cap = uid("cause")
        self.agent(caps=[cap], conc=1)
        t1 = self.c.SubmitTask(required_capabilities=[cap])
        t2 = self.c.SubmitTask(required_capabilities=[cap])
        self.c.CancelTask(task_id=t1.task_id,
                          metadata=[("x-correlation-id", "c-rel")])
        cancel = self.stream("task-" + t1.task_id)[-1]
        assigned = self.stream("task-" + t2.task_id)[-1]
        self.assertEqual(assigned.type, "agentmesh.v1.TaskAssigned")
        self.assertEqual(assigned.metadata.causation_id, cancel.event_id)
        self.assertEqual(assigned.metadata.correlation_id, "c-rel")

    # ---- WatchTask ------------------------------------------------------

    def test_watch_task_sees_changes_from_another_client(self):
        cap = uid("watch")
        self.agent(caps=[cap])
        t = self.c.SubmitTask(required_capabilities=[cap])
        updates = []
        stream = self.c.WatchTask(task_id=t.task_id, timeout=60)
        first = next(stream)
        self.assertEqual((first.event_type, first.task.state), ("", ASSIGNED))

        def reader():
            for u in stream:
                updates.append(u)
        th = threading.Thread(target=reader)
        th.start()
        other = Client(self.server.grpc_target)
        try:
            other.StartTask(task_id=t.task_id)
            other.ReportProgress(task_id=t.task_id, progress_percent=10)
            other.CompleteTask(task_id=t.task_id, output="fin")
        finally:
            other.close()
        th.join(60)
        self.assertFalse(th.is_alive(), "the stream did not end at COMPLETED")
        self.assertEqual([u.event_type for u in updates],
                         ["agentmesh.v1.TaskStarted", "agentmesh.v1.TaskProgressed",
                          "agentmesh.v1.TaskCompleted"])
        self.assertEqual(updates[-1].task.output, "fin")
        self.assertEqual(updates[-1].task.version, 4)
        done = list(self.c.WatchTask(task_id=t.task_id))
        self.assertEqual(len(done), 1)

    def test_cancelled_watch_is_released(self):
        t = self.c.SubmitTask(required_capabilities=[uid("cw")])
        stream = self.c.WatchTask(task_id=t.task_id, timeout=60)
        self.assertEqual(next(stream).task.state, PENDING)
        lib.poll_until(lambda: lib.metric_value(
            metrics(self.server), "agentmesh_rpc_streams_open") >= 1,
            what="an open stream")
        stream.cancel()
        lib.poll_until(lambda: lib.metric_value(
            metrics(self.server), "agentmesh_rpc_streams_open") == 0,
            what="the stream to be released")

    # ---- EventStore API ---------------------------------------------------

    def test_read_stream_and_read_all(self):
        cap = uid("es")
        self.agent(caps=[cap])
        t = self.c.SubmitTask(required_capabilities=[cap])
        self.c.StartTask(task_id=t.task_id)
        name = "task-" + t.task_id
        fwd = self.c.ReadStream(stream=name, limit=2)
        self.assertEqual([e.stream_version for e in fwd.events], [0, 1])
        self.assertFalse(fwd.end_of_stream)
        rest = self.c.ReadStream(stream=name, from_version=2, limit=10)
        self.assertEqual([e.stream_version for e in rest.events], [2])
        self.assertTrue(rest.end_of_stream)
        back = self.c.ReadStream(stream=name, from_version=99, direction=BACKWARD,
                                 limit=10)
        self.assertEqual([e.stream_version for e in back.events], [2, 1, 0])
        page = self.c.ReadAll(from_position=1, limit=3)
        self.assertEqual([e.position for e in page.events], [1, 2, 3])
        self.assertEqual(page.next_position, 4)
        typed = self.c.ReadAll(from_position=1, limit=1000,
                               types=["agentmesh.v1.TaskStarted"],
                               stream_prefix=name)
        self.assertEqual([e.position for e in typed.events],
                         [rest.events[0].position])
        last = self.c.ReadAll(direction=BACKWARD, limit=1)
        self.assertEqual(last.events[0].position, rest.events[0].position)

    def test_subscribe_all_catch_up_then_live(self):
        start = self.c.ReadAll(direction=BACKWARD, limit=1).events[0].position
        sub = self.c.SubscribeAll(from_position=1, timeout=60)
        seen = []
        for ev in sub:
            seen.append(ev.position)
            if ev.position == start:
                break
        self.assertEqual(seen, list(range(1, start + 1)))
        t = self.c.SubmitTask(required_capabilities=[uid("live")])
        live = next(sub)
        self.assertEqual(live.position, start + 1)
        self.assertEqual(live.stream, "task-" + t.task_id)
        sub.cancel()
        filtered = self.c.SubscribeAll(from_position=start + 1,
                                       stream_prefix="task-" + t.task_id,
                                       types=["agentmesh.v1.TaskCancelled"],
                                       timeout=60)
        self.c.CancelTask(task_id=t.task_id)
        ev = next(filtered)
        self.assertEqual(ev.type, "agentmesh.v1.TaskCancelled")
        filtered.cancel()

    def test_metrics(self):
        self.c.SubmitTask(required_capabilities=[uid("metrics")])
        last = self.c.ReadAll(direction=BACKWARD, limit=1).events[0].position

        def refreshed():
            text = metrics(self.server)
            pos = lib.metric_value(text, "agentmesh_eventstore_last_position")
            pending = lib.metric_value(text, "agentmesh_tasks",
                                       {"state": "TASK_STATE_PENDING"})
            return pos is not None and pos >= last and pending and text
        text = lib.poll_until(refreshed, what="refreshed metrics")
        self.assertGreater(lib.metric_value(text, "agentmesh_eventstore_commits_total"), 0)
        self.assertGreater(lib.metric_value(text, "agentmesh_agents",
                                            {"status": "AGENT_STATUS_ONLINE"}), 0)
        self.assertIsNotNone(lib.metric_value(
            text, "agentmesh_rpc_requests_total",
            {"method": "/agentmesh.v1.AgentManager/SubmitTask", "code": "OK"}))
        # Where SubmitTask was decided: on the completion-queue thread unless
        # the lock was busy at that moment, never there with the fast path
        # off.
        fast = lib.metric_value(text, "agentmesh_agents_submits_total",
                                {"path": "fast"})
        worker = lib.metric_value(text, "agentmesh_agents_submits_total",
                                  {"path": "worker"})
        if "--fast-submit=false" in SERVER_FLAGS:
            self.assertEqual(fast, 0)
            self.assertGreater(worker, 0)
        else:
            self.assertGreater(fast, worker)

    # ---- health and reflection -------------------------------------------

    def test_health(self):
        check = MSG.unary(self.c.channel, "/grpc.health.v1.Health/Check")
        Req = MSG.cls("grpc.health.v1.HealthCheckRequest")
        for svc in ("", "agentmesh.v1.AgentManager", "agentmesh.v1.EventStore"):
            self.assertEqual(check(Req(service=svc), timeout=10).status, 1, svc)
        watch = MSG.server_stream(self.c.channel, "/grpc.health.v1.Health/Watch")
        w = watch(Req(service="agentmesh.v1.AgentManager"), timeout=10)
        self.assertEqual(next(w).status, 1)
        w.cancel()

    def test_reflection_lists_services(self):
        Req = MSG.cls("grpc.reflection.v1.ServerReflectionRequest")
        info = MSG.bidi(self.c.channel,
                        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        out = list(info(iter([Req(list_services="")]), timeout=30))
        names = {s.name for s in out[0].list_services_response.service}
        self.assertTrue({"agentmesh.v1.AgentManager", "agentmesh.v1.EventStore",
                         "grpc.health.v1.Health"} <= names, names)


class HeartbeatTest(unittest.TestCase):
    """A server with a short heartbeat timeout."""

    def test_offline_then_online(self):
        data = tempfile.mkdtemp(prefix="am-hb-")
        server = start_server(os.path.join(data, "agents"),
                              "--heartbeat-timeout=1500ms")
        c = Client(server.grpc_target)
        try:
            a = c.RegisterAgent(name="hb", capabilities=["hb"])
            hb = c.Heartbeat(agent_id=a.agent_id, active_tasks=0)
            self.assertEqual(hb.position, 0)
            self.assertGreater(hb.next_heartbeat_due_unix_nano, 0)
            self.assertEqual(hb.agent.version, 0)
            lib.poll_until(lambda: c.GetAgent(agent_id=a.agent_id).status == OFFLINE,
                           what="the agent to go OFFLINE")
            t = c.SubmitTask(required_capabilities=["hb"])
            self.assertEqual(t.state, PENDING)
            back = c.Heartbeat(agent_id=a.agent_id)
            self.assertEqual(back.agent.status, ONLINE)
            self.assertGreater(back.position, 0)
            evs = c.ReadStream(stream="agent-" + a.agent_id, limit=10).events
            self.assertEqual([e.type for e in evs][:3],
                             ["agentmesh.v1.AgentRegistered",
                              "agentmesh.v1.AgentWentOffline",
                              "agentmesh.v1.AgentWentOnline"])
            self.assertEqual(evs[1].metadata.actor, "agent-manager")
            self.assertEqual(c.GetTask(task_id=t.task_id).state, ASSIGNED)
        finally:
            c.close()
            code = server.stop()
            shutil.rmtree(data, ignore_errors=True)
        self.assertEqual(code, 0, server.log())


class PendingLimitTest(unittest.TestCase):
    """The pending queue is bounded: a full queue answers RESOURCE_EXHAUSTED."""

    def test_pending_limit(self):
        data = tempfile.mkdtemp(prefix="am-limit-")
        server = start_server(os.path.join(data, "agents"), "--max-pending=2")
        c = Client(server.grpc_target)
        try:
            t1 = c.SubmitTask(required_capabilities=["none"])
            c.SubmitTask(required_capabilities=["none"])
            with self.assertRaises(grpc.RpcError) as cm:
                c.SubmitTask(required_capabilities=["none"])
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            # A task an agent takes at once does not wait: still accepted.
            c.RegisterAgent(name="x", capabilities=["other"])
            self.assertEqual(c.SubmitTask(required_capabilities=["other"]).state,
                             ASSIGNED)
            c.CancelTask(task_id=t1.task_id)
            c.SubmitTask(required_capabilities=["none"])
        finally:
            c.close()
            code = server.stop()
            shutil.rmtree(data, ignore_errors=True)
        self.assertEqual(code, 0, server.log())


def comparable(msg):
    d = {f.name: v for f, v in msg.ListFields()}
    d.pop("last_seen_unix_nano", None)
    return d


class RestartTest(unittest.TestCase):
    """State survives restarts, with and without snapshots."""

    def test_restart_finds_same_state(self):
        data = tempfile.mkdtemp(prefix="am-restart-")
        path = os.path.join(data, "agents")
        try:
            server = start_server(path, "--snapshot-every=5")
            c = Client(server.grpc_target)
            agents, tasks = [], []
            for i in range(3):
                agents.append(c.RegisterAgent(name="r%d" % i, capabilities=["r"],
                                              max_concurrency=2,
                                              labels={"i": str(i)}).agent_id)
            for i in range(10):
                t = c.SubmitTask(required_capabilities=["r"], priority=i % 3,
                                 idempotency_key="k%d" % i, input="in%d" % i)
                tasks.append(t.task_id)
            c.StartTask(task_id=tasks[0])
            c.CompleteTask(task_id=tasks[0], output="o")
            c.StartTask(task_id=tasks[1])
            c.FailTask(task_id=tasks[1], error="e")
            c.CancelTask(task_id=tasks[2])
            c.DeregisterAgent(agent_id=agents[2])
            before_a = [comparable(c.GetAgent(agent_id=a)) for a in agents]
            before_t = [comparable(c.GetTask(task_id=t)) for t in tasks]
            c.close()
            self.assertEqual(server.stop(), 0, server.log())
            for round_ in range(2):
                server = start_server(path, "--snapshot-every=5")
                c = Client(server.grpc_target)
                self.assertEqual([comparable(c.GetAgent(agent_id=a)) for a in agents],
                                 before_a)
                self.assertEqual([comparable(c.GetTask(task_id=t)) for t in tasks],
                                 before_t)
                again = c.SubmitTask(idempotency_key="k3", required_capabilities=["q"])
                self.assertEqual(again.task_id, tasks[3])
                c.close()
                self.assertEqual(server.stop(), 0, server.log())
                loaded = [l for l in server.log_lines()
                          if "state loaded" in l.get("msg", "")]
                self.assertTrue(loaded and "snapshot at 0" not in loaded[0]["msg"],
                                loaded)
        finally:
            shutil.rmtree(data, ignore_errors=True)

    def test_sigterm_under_load_keeps_every_acknowledged_command(self):
        self.stop_under_load(signal.SIGTERM)

    def test_sigkill_under_load_keeps_every_acknowledged_command(self):
        self.stop_under_load(signal.SIGKILL)

    def stop_under_load(self, signo):
        data = tempfile.mkdtemp(prefix="am-term-")
        path = os.path.join(data, "agents")
        try:
            # Frequent snapshots, so that one is likely taken mid-load.
            server = start_server(path, "--snapshot-every=20")
            c = Client(server.grpc_target)
            c.RegisterAgent(name="load", capabilities=["l"], max_concurrency=1000)
            acked, submitted, lock = [], [], threading.Lock()
            go = threading.Event()

            def worker():
                cl = Client(server.grpc_target)
                try:
                    while True:
                        try:
                            t = cl.SubmitTask(required_capabilities=["l"], timeout=10)
                            # Acknowledged: it must survive whatever follows.
                            with lock:
                                submitted.append(t.task_id)
                            cl.StartTask(task_id=t.task_id, timeout=10)
                        except grpc.RpcError:
                            return
                        with lock:
                            acked.append(t.task_id)
                        go.set()
                finally:
                    cl.close()
            threads = [threading.Thread(target=worker) for _ in range(8)]
            for th in threads:
                th.start()
            go.wait(30)
            # Long enough for the monitor (1 s period) to snapshot mid-load.
            began = time.monotonic()
            lib.poll_until(lambda: len(acked) >= 50 and time.monotonic() - began > 1.5,
                           what="some load")
            server.proc.send_signal(signo)
            for th in threads:
                th.join(60)
            code = server.stop()
            if signo == signal.SIGTERM:
                self.assertEqual(code, 0, server.log())
            c.close()
            server = start_server(path)
            c = Client(server.grpc_target)
            for tid in acked:
                self.assertEqual(c.GetTask(task_id=tid).state, RUNNING)
            # Submits acknowledged just before the signal, not yet started.
            for tid in set(submitted) - set(acked):
                self.assertIn(c.GetTask(task_id=tid).state,
                              (PENDING, ASSIGNED, RUNNING), tid)
            self.assertGreaterEqual(len(submitted), len(acked))
            c.close()
            self.assertEqual(server.stop(), 0)
        finally:
            shutil.rmtree(data, ignore_errors=True)


NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@unittest.skipIf(os.environ.get("AGENTMESH_SANITIZER") == "tsan",
                 "libnats is not built with TSan")
@unittest.skipUnless(os.path.exists(NATS_SERVER), "nats-server not installed")
class OutboxTest(unittest.TestCase):
    """Every committed event reaches NATS; NATS down delays, loses nothing."""

    def start_nats(self, port, store):
        proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port),
                                 "-js", "-sd", store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        lib.poll_until(up, what="nats-server")
        return proc

    def test_sigterm_with_nats_unreachable(self):
        data = tempfile.mkdtemp(prefix="am-nonats-")
        url = "nats://127.0.0.1:%d" % lib.free_port()
        try:
            server = start_server(os.path.join(data, "agents"), nats_url=url)
            c = Client(server.grpc_target)
            t = c.SubmitTask(required_capabilities=["q"])
            c.close()
            self.assertEqual(server.stop(), 0, server.log())
            server = start_server(os.path.join(data, "agents"), nats_url=url)
            c = Client(server.grpc_target)
            self.assertEqual(c.GetTask(task_id=t.task_id).state, PENDING)
            c.close()
            self.assertEqual(server.stop(), 0, server.log())
        finally:
            shutil.rmtree(data, ignore_errors=True)

    def test_events_published_and_nats_outage(self):
        data = tempfile.mkdtemp(prefix="am-nats-")
        port = lib.free_port()
        nats = self.start_nats(port, os.path.join(data, "js"))
        server = start_server(os.path.join(data, "agents"),
                              nats_url="nats://127.0.0.1:%d" % port)
        c = Client(server.grpc_target)

        def published():
            return lib.metric_value(metrics(server), "agentmesh_outbox_published_total") or 0

        def last():
            return c.ReadAll(direction=BACKWARD, limit=1).events[0].position
        try:
            c.RegisterAgent(name="n", capabilities=["n"], max_concurrency=4)
            c.SubmitTask(required_capabilities=["n"])
            lib.poll_until(lambda: published() >= last(), what="publication")
            nats.terminate()
            nats.wait(30)
            t = c.SubmitTask(required_capabilities=["n"])
            c.StartTask(task_id=t.task_id)
            lib.poll_until(lambda: lib.metric_value(
                metrics(server), "agentmesh_outbox_backlog") > 0, what="a backlog")
            nats = self.start_nats(port, os.path.join(data, "js"))
            lib.poll_until(lambda: published() >= last(), timeout=60,
                           what="publication after NATS returned")
        finally:
            c.close()
            code = server.stop()
            nats.terminate()
            nats.wait(30)
            shutil.rmtree(data, ignore_errors=True)
        self.assertEqual(code, 0, server.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
