"""Integration tests of the gRPC runtime: the real rpc_echo_server binary on
free loopback ports, driven by Python grpcio with message classes built from
the build's descriptor sets. Usage: runtime_test.py SERVER ECHO_DESC API_DESC"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

import grpc

import agentmesh_testlib as lib

SERVER, ECHO_DESC, API_DESC = sys.argv[1:4]
del sys.argv[1:4]

MSG = lib.Messages(API_DESC, ECHO_DESC)
EchoRequest = MSG.cls("agentmesh.test.EchoRequest")
HealthCheckRequest = MSG.cls("grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = MSG.cls("grpc.health.v1.HealthCheckResponse")
Status = MSG.cls("google.rpc.Status")
BadRequest = MSG.cls("google.rpc.BadRequest")
ErrorInfo = MSG.cls("google.rpc.ErrorInfo")
RetryInfo = MSG.cls("google.rpc.RetryInfo")
FileDescriptorProto = MSG.cls("google.protobuf.FileDescriptorProto")

TOKEN = "s3cret-internal-token"
SERVING = 1
NOT_SERVING = 2
SERVICE_UNKNOWN = 3


def channel_for(server):
    return grpc.insecure_channel(server.grpc_target)


def metrics(server):
    status, text = lib.http_get(server.admin_url + "/metrics")
    assert status == 200, status
    return text


def inflight(server):
    return lib.metric_value(metrics(server), "agentmesh_rpc_calls_inflight")


class SharedServerTest(unittest.TestCase):
    """Tests against one server with default limits."""

    @classmethod
    def setUpClass(cls):
        cls.server = lib.Server(SERVER, ["--internal-token=" + TOKEN]).start()
        cls.channel = channel_for(cls.server)
        cls.echo = MSG.unary(cls.channel, "/agentmesh.test.Echo/Echo")

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        code = cls.server.stop()
        assert code == 0, "exit code %d:\n%s" % (code, cls.server.log())

    def test_echo(self):
        reply = self.echo(EchoRequest(message="hello"), timeout=30)
        self.assertEqual(reply.message, "hello")
        self.assertEqual(reply.actor, "anonymous")

    def test_well_known_metadata(self):
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        reply = self.echo(EchoRequest(message="m"), timeout=30, metadata=[
            ("traceparent", tp), ("x-request-id", "req-1")])
        self.assertEqual(reply.traceparent, tp)
        self.assertEqual(reply.request_id, "req-1")

    def test_principal_needs_internal_token(self):
        md = [("x-agentmesh-principal", "alice")]
        r = self.echo(EchoRequest(message="m"), timeout=30, metadata=md)
        self.assertEqual(r.actor, "anonymous")
        r = self.echo(EchoRequest(message="m"), timeout=30, metadata=md + [
            ("x-agentmesh-internal-token", "wrong")])
        self.assertEqual(r.actor, "anonymous")
        r = self.echo(EchoRequest(message="m"), timeout=30, metadata=md + [
            ("x-agentmesh-internal-token", TOKEN)])
        self.assertEqual(r.actor, "alice")

    def test_malformed_request_is_invalid_argument(self):
        raw = lib.raw_unary(self.channel, "/agentmesh.test.Echo/Echo")
        for bad in (b"\x0a\x05ab", b"\xff", b"\x0f\x01", b"\x10"):
            with self.assertRaises(grpc.RpcError) as ctx:
                raw(bad, timeout=30)
            self.assertEqual(ctx.exception.code(),
                             grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("agentmesh.test.EchoRequest", ctx.exception.details())
        self.assertEqual(self.echo(EchoRequest(message="still"),
                                   timeout=30).message, "still")

    def test_unknown_method_is_unimplemented(self):
        raw = lib.raw_unary(self.channel, "/agentmesh.test.Echo/Nope")
        with self.assertRaises(grpc.RpcError) as ctx:
            raw(b"", timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        raw = lib.raw_unary(self.channel, "/no.such.Service/Method")
        with self.assertRaises(grpc.RpcError) as ctx:
            raw(b"", timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_deadline_exceeded(self):
        block = MSG.unary(self.channel, "/agentmesh.test.Echo/Block")
        with self.assertRaises(grpc.RpcError) as ctx:
            block(EchoRequest(), timeout=0.3)
        self.assertEqual(ctx.exception.code(),
                         grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_rich_error_details(self):
        fail = MSG.unary(self.channel, "/agentmesh.test.Echo/Fail")
        with self.assertRaises(grpc.RpcError) as ctx:
            fail(EchoRequest(), timeout=30)
        err = ctx.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT)
        raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
        st = Status.FromString(raw)
        self.assertEqual(st.code, 3)
        self.assertEqual(st.message, "message must not be empty")
        urls = [d.type_url for d in st.details]
        self.assertEqual(urls, [
            "type.googleapis.com/google.rpc.BadRequest",
            "type.googleapis.com/google.rpc.ErrorInfo",
            "type.googleapis.com/google.rpc.RetryInfo"])
        br = BadRequest.FromString(st.details[0].value)
        self.assertEqual(br.field_violations[0].field, "message")
        ei = ErrorInfo.FromString(st.details[1].value)
        self.assertEqual(ei.reason, "EMPTY_MESSAGE")
        self.assertEqual(dict(ei.metadata), {"field": "message"})
        ri = RetryInfo.FromString(st.details[2].value)
        self.assertEqual((ri.retry_delay.seconds, ri.retry_delay.nanos),
                         (1, 500000000))

    def test_server_stream(self):
        count = MSG.server_stream(self.channel, "/agentmesh.test.Echo/Count")
        got = [r.index for r in count(EchoRequest(message="c", count=50),
                                      timeout=30)]
        self.assertEqual(got, list(range(50)))

    def test_cancelled_stream_is_freed(self):
        count = MSG.server_stream(self.channel, "/agentmesh.test.Echo/Count")
        calls = [count(EchoRequest(message="c", count=0, interval_ms=5),
                       timeout=60) for _ in range(3)]
        for call in calls:
            for _ in range(3):
                next(call)
        lib.poll_until(lambda: lib.metric_value(
            metrics(self.server), "agentmesh_rpc_streams_open") >= 3,
            what="three open streams")
        for call in calls:
            call.cancel()
        lib.poll_until(lambda: lib.metric_value(
            metrics(self.server), "agentmesh_rpc_streams_open") == 0,
            what="the open-stream gauge back at 0")

    def test_health_check(self):
        check = MSG.unary(self.channel, "/grpc.health.v1.Health/Check")
        r = check(HealthCheckRequest(service=""), timeout=30)
        self.assertEqual(r.status, SERVING)
        with self.assertRaises(grpc.RpcError) as ctx:
            check(HealthCheckRequest(service="no.such.Service"), timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_watch_sees_changes(self):
        watch = MSG.server_stream(self.channel, "/grpc.health.v1.Health/Watch")
        set_health = MSG.unary(self.channel, "/agentmesh.test.Echo/SetHealth")
        check = MSG.unary(self.channel, "/grpc.health.v1.Health/Check")
        stream = watch(HealthCheckRequest(service="svc.watch"), timeout=60)
        self.assertEqual(next(stream).status, SERVICE_UNKNOWN)
        set_health(EchoRequest(service="svc.watch", serving=True), timeout=30)
        self.assertEqual(next(stream).status, SERVING)
        set_health(EchoRequest(service="svc.watch", serving=False), timeout=30)
        self.assertEqual(next(stream).status, NOT_SERVING)
        self.assertEqual(check(HealthCheckRequest(service="svc.watch"),
                               timeout=30).status, NOT_SERVING)
        stream.cancel()

    def reflect(self, version, requests):
        Req = MSG.cls("grpc.reflection.%s.ServerReflectionRequest" % "v1")
        info = MSG.bidi(self.channel,
                        "/grpc.reflection.%s.ServerReflection/"
                        "ServerReflectionInfo" % version)
        return list(info(iter([Req(**r) for r in requests]), timeout=30))

    def check_reflection(self, version):
        ExtReq = MSG.cls("grpc.reflection.v1.ExtensionRequest")
        out = self.reflect(version, [
            {"list_services": ""},
            {"file_containing_symbol": "agentmesh.test.Echo"},
            {"file_containing_symbol": "agentmesh.test.Echo.Count"},
            {"file_containing_symbol": "grpc.health.v1.Health"},
            {"file_containing_symbol": "agentmesh.v1.Agent"},
            {"file_containing_symbol": "agentmesh.v1.TaskState"},
            {"file_by_filename": "agentmesh/v1/agents.proto"},
            {"file_containing_symbol": "no.such.Symbol"},
            {"file_containing_extension": ExtReq(
                containing_type="google.protobuf.MethodOptions",
                extension_number=72295728)},
        ])
        self.assertEqual(len(out), 9)
        services = {s.name for s in out[0].list_services_response.service}
        self.assertTrue({"agentmesh.test.Echo", "grpc.health.v1.Health",
                         "grpc.reflection.v1.ServerReflection",
                         "grpc.reflection.v1alpha.ServerReflection"} <= services,
                        services)

        def names(resp):
            return [FileDescriptorProto.FromString(b).name
                    for b in resp.file_descriptor_response.file_descriptor_proto]

        self.assertEqual(names(out[1]), ["echo.proto"])
        self.assertEqual(names(out[2]), ["echo.proto"])
        self.assertEqual(names(out[3]), ["grpc/health/v1/health.proto"])
        agents = names(out[4])
        self.assertEqual(agents[0], "agentmesh/v1/agents.proto")
        self.assertIn("google/api/annotations.proto", agents)
        self.assertIn("google/protobuf/descriptor.proto", agents)
        self.assertEqual(names(out[5])[0], "agentmesh/v1/agents.proto")
        self.assertEqual(names(out[6])[0], "agentmesh/v1/agents.proto")
        self.assertEqual(out[7].error_response.error_code, 5)
        self.assertEqual(names(out[8])[0], "google/api/annotations.proto")
        # The files are complete descriptors: a fresh pool accepts them.
        from google.protobuf import descriptor_pool
        pool = descriptor_pool.DescriptorPool()
        for b in reversed(out[4].file_descriptor_response.file_descriptor_proto):
            pool.Add(FileDescriptorProto.FromString(b))
        svc = pool.FindServiceByName("agentmesh.v1.AgentManager")
        self.assertIn("GetAgent", [m.name for m in svc.methods])

    def test_reflection_v1(self):
        self.check_reflection("v1")

    def test_reflection_v1alpha(self):
        self.check_reflection("v1alpha")

    def test_admin_http(self):
        self.echo(EchoRequest(message="count me"), timeout=30)
        status, body = lib.http_get(self.server.admin_url + "/healthz")
        self.assertEqual(status, 200)
        text = metrics(self.server)
        self.assertGreaterEqual(lib.metric_value(
            text, "agentmesh_rpc_requests_total",
            {"method": "/agentmesh.test.Echo/Echo", "code": "OK"}), 1)
        self.assertGreaterEqual(lib.metric_value(
            text, "agentmesh_rpc_request_duration_seconds_count",
            {"method": "/agentmesh.test.Echo/Echo", "code": "OK"}), 1)
        self.assertIn("# TYPE agentmesh_rpc_request_duration_seconds histogram",
                      text)
        status, _ = lib.http_get(self.server.admin_url + "/nope")
        self.assertEqual(status, 404)

    def test_log_lines_are_json(self):
        lines = self.server.log_lines()
        serving = [l for l in lines if l.get("msg") == "serving"]
        self.assertEqual(len(serving), 1)
        self.assertEqual(int(serving[0]["grpc_port"]), self.server.ports["grpc"])
        for l in lines:
            self.assertIn("time", l)
            self.assertIn("level", l)


class OverloadTest(unittest.TestCase):
    """One worker and a queue of one: a third call is rejected at once."""

    def test_resource_exhausted(self):
        with lib.Server(SERVER, ["--worker-threads=1", "--queue-depth=1"]) as srv:
            ch = channel_for(srv)
            block = MSG.unary(ch, "/agentmesh.test.Echo/Block")
            echo = MSG.unary(ch, "/agentmesh.test.Echo/Echo")
            first = block.future(EchoRequest(), timeout=120)
            lib.poll_until(lambda: inflight(srv) == 1, what="one call in flight")
            second = block.future(EchoRequest(), timeout=120)
            lib.poll_until(lambda: inflight(srv) == 2, what="two calls in flight")
            with self.assertRaises(grpc.RpcError) as ctx:
                echo(EchoRequest(message="x"), timeout=30)
            self.assertEqual(ctx.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("overloaded", ctx.exception.details())
            # Health answers on the completion-queue thread even now.
            check = MSG.unary(ch, "/grpc.health.v1.Health/Check")
            self.assertEqual(check(HealthCheckRequest(), timeout=30).status,
                             SERVING)
            first.cancel()
            second.cancel()
            lib.poll_until(lambda: inflight(srv) == 0, what="calls drained")
            self.assertEqual(echo(EchoRequest(message="ok"), timeout=30).message,
                             "ok")
            ch.close()
            self.assertEqual(srv.stop(), 0, srv.log())


def worker_policies(pid, n):
    """The scheduling policies of pid's n rpc-worker threads, once there are
    n of them and all have the same one (each sets it as it starts), else
    None."""
    got = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() == "rpc-worker":
                    got.append(os.sched_getscheduler(int(tid)))
        except OSError:
            pass
    return got if len(got) == n and len(set(got)) == 1 else None


class WorkerPolicyTest(unittest.TestCase):
    """--worker-policy: the handler threads' Linux scheduling policy."""

    def policies_of(self, args, n, env=None):
        with lib.Server(SERVER, args + ["--worker-threads=%d" % n],
                        env=env) as srv:
            ch = channel_for(srv)
            echo = MSG.unary(ch, "/agentmesh.test.Echo/Echo")
            self.assertEqual(echo(EchoRequest(message="p"), timeout=30).message,
                             "p")
            ch.close()
            got = lib.poll_until(lambda: worker_policies(srv.proc.pid, n),
                                 what="%d rpc-worker threads" % n)
            self.assertEqual(srv.stop(), 0, srv.log())
            return got

    def test_default_is_batch(self):
        self.assertEqual(self.policies_of([], 3), [os.SCHED_BATCH] * 3)

    def test_normal(self):
        self.assertEqual(self.policies_of(["--worker-policy=normal"], 2),
                         [os.SCHED_OTHER] * 2)
        env = dict(os.environ, AGENTMESH_ECHO_WORKER_POLICY="normal")
        self.assertEqual(self.policies_of([], 2, env), [os.SCHED_OTHER] * 2)

    def test_bad_policy_is_refused(self):
        r = subprocess.run([SERVER, "--worker-policy=fifo"],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = [json.loads(l) for l in r.stderr.decode().splitlines()]
        self.assertEqual(lines[0]["level"], "error")
        self.assertEqual(lines[0]["msg"],
                         '--worker-policy must be batch or normal, not "fifo"')


class LimitsTest(unittest.TestCase):

    def test_queued_past_deadline_skips_the_handler(self):
        with lib.Server(SERVER, ["--worker-threads=1", "--queue-depth=4"]) as srv:
            ch = channel_for(srv)
            block = MSG.unary(ch, "/agentmesh.test.Echo/Block")
            echo = MSG.unary(ch, "/agentmesh.test.Echo/Echo")
            first = block.future(EchoRequest(), timeout=120)
            lib.poll_until(lambda: inflight(srv) == 1, what="the worker busy")
            with self.assertRaises(grpc.RpcError) as ctx:
                echo(EchoRequest(message="late"), timeout=0.5)
            self.assertEqual(ctx.exception.code(),
                             grpc.StatusCode.DEADLINE_EXCEEDED)
            first.cancel()
            labels = {"method": "/agentmesh.test.Echo/Echo",
                      "code": "DEADLINE_EXCEEDED"}
            lib.poll_until(lambda: lib.metric_value(
                metrics(srv), "agentmesh_rpc_requests_total", labels) == 1,
                what="the late call answered DEADLINE_EXCEEDED by the runtime")
            self.assertIsNone(lib.metric_value(
                metrics(srv), "agentmesh_rpc_requests_total",
                {"method": "/agentmesh.test.Echo/Echo", "code": "OK"}))
            ch.close()
            self.assertEqual(srv.stop(), 0, srv.log())

    def test_max_message_size(self):
        with lib.Server(SERVER, ["--max-message-size=64K"]) as srv:
            ch = channel_for(srv)
            echo = MSG.unary(ch, "/agentmesh.test.Echo/Echo")
            with self.assertRaises(grpc.RpcError) as ctx:
                echo(EchoRequest(message="x" * 100000), timeout=30)
            self.assertEqual(ctx.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(echo(EchoRequest(message="y" * 60000),
                                  timeout=30).message, "y" * 60000)
            ch.close()
            self.assertEqual(srv.stop(), 0, srv.log())


class AccessLogTest(unittest.TestCase):

    def test_debug_access_log_line(self):
        with lib.Server(SERVER, ["--log-level=debug"]) as srv:
            ch = channel_for(srv)
            echo = MSG.unary(ch, "/agentmesh.test.Echo/Echo")
            tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            echo(EchoRequest(message="logged"), timeout=30,
                 metadata=[("traceparent", tp)])

            def line():
                return [l for l in srv.log_lines() if l.get("msg") == "rpc"
                        and l.get("method") == "/agentmesh.test.Echo/Echo"]
            got = lib.poll_until(line, what="an access log line")[0]
            self.assertEqual(got["code"], "OK")
            self.assertEqual(got["level"], "debug")
            self.assertEqual(got["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736")
            self.assertEqual(got["span_id"], "00f067aa0ba902b7")
            self.assertTrue(got["peer"].startswith("ipv4:127.0.0.1:"), got)
            self.assertEqual(got["actor"], "anonymous")
            ch.close()
            self.assertEqual(srv.stop(), 0, srv.log())


class ShutdownTest(unittest.TestCase):

    def test_sigterm_lets_inflight_calls_finish(self):
        with lib.Server(SERVER, ["--grace-period=60s"]) as srv:
            ch = channel_for(srv)
            echo = MSG.unary(ch, "/agentmesh.test.Echo/Echo")
            count = MSG.server_stream(ch, "/agentmesh.test.Echo/Count")
            n = 6
            futures = [echo.future(EchoRequest(message="m%d" % i,
                                               interval_ms=1500), timeout=120)
                       for i in range(n)]
            stream = count(EchoRequest(count=0, interval_ms=10), timeout=120)
            next(stream)
            lib.poll_until(lambda: inflight(srv) == n + 1,
                           what="%d calls in flight" % (n + 1))
            srv.send_signal(signal.SIGTERM)
            lib.poll_until(lambda: lib.http_get(srv.admin_url + "/healthz")[0]
                           == 503, what="/healthz 503 while draining")
            for i, f in enumerate(futures):
                self.assertEqual(f.result().message, "m%d" % i)
            # The open-ended stream was told to end.
            with self.assertRaises(grpc.RpcError) as ctx:
                for _ in stream:
                    pass
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(srv.stop(), 0, srv.log())
            ch.close()

    def test_sigint_exits_zero(self):
        with lib.Server(SERVER) as srv:
            self.assertEqual(srv.stop(signal.SIGINT), 0, srv.log())
            self.assertIn("shutting down (SIGINT)", srv.log())

    def test_grace_period_cancels_stuck_calls(self):
        with lib.Server(SERVER, ["--grace-period=500ms"]) as srv:
            ch = channel_for(srv)
            block = MSG.unary(ch, "/agentmesh.test.Echo/Block")
            f = block.future(EchoRequest())
            lib.poll_until(lambda: inflight(srv) == 1, what="a blocked call")
            srv.send_signal(signal.SIGTERM)
            with self.assertRaises(grpc.RpcError) as ctx:
                f.result()
            self.assertIn(ctx.exception.code(), (grpc.StatusCode.CANCELLED,
                                                 grpc.StatusCode.UNAVAILABLE))
            self.assertEqual(srv.stop(), 0, srv.log())
            ch.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
