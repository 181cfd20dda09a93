"""Shared helpers for agentmesh integration tests in Python (Debian's
/usr/bin/python3 with grpcio and protobuf): start a server binary on free
loopback ports and learn them from its port file, stop it with SIGTERM and
collect its exit code, build message classes from a descriptor set at run
time (no generated code), call gRPC methods by full name, read HTTP, and poll
with deadlines instead of sleeping."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def free_port():
    """A loopback port that was free a moment ago (prefer letting the server
    bind port 0 and reading its port file)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_until(predicate, timeout=30.0, interval=0.02, what="condition"):
    """Calls predicate() until it returns a truthy value or the deadline
    passes; returns that value or raises AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                "timed out after %.1fs waiting for %s (last error: %r)"
                % (timeout, what, last_exc))
        time.sleep(interval)


def repo_root_from(path):
    """The source tree's root, found by resolving a runfile symlink (Bazel
    runfiles point into the workspace) and walking up to package.json."""
    p = os.path.dirname(os.path.realpath(path))
    while p != "/":
        if os.path.exists(os.path.join(p, "package.json")) and \
                os.path.exists(os.path.join(p, "WORKSPACE")):
            return p
        p = os.path.dirname(p)
    raise RuntimeError("no workspace root above " + path)


class Server:
    """A server process started with `--port-file` and ports 0. Use as a
    context manager, or call start() and stop()."""

    def __init__(self, binary, args=(), env=None, startup_timeout=60.0):
        self.binary = binary
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.startup_timeout = startup_timeout
        self.tmpdir = tempfile.mkdtemp(prefix="agentmesh-test-")
        self.port_file = os.path.join(self.tmpdir, "ports")
        self.log_path = os.path.join(self.tmpdir, "stderr.log")
        self.proc = None
        self.ports = {}
        self.returncode = None
        self.signalled = False

    def start(self):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--port-file=" + self.port_file] + self.args,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %d during startup:\n%s"
                                     % (self.binary, self.proc.returncode,
                                        self.log()))
            if not os.path.exists(self.port_file):
                return None
            with open(self.port_file) as f:
                pairs = [l.split("=", 1) for l in f.read().split()]
            return {k: int(v) for k, v in pairs}

        try:
            self.ports = poll_until(ready, self.startup_timeout,
                                    what="the server's port file")
        except AssertionError:
            self.kill()
            raise
        return self

    @property
    def grpc_target(self):
        return "127.0.0.1:%d" % self.ports["grpc"]

    @property
    def admin_url(self):
        return "http://127.0.0.1:%d" % self.ports["admin"]

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self):
        """The JSON log lines written so far (non-JSON lines skipped)."""
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def send_signal(self, signo):
        self.signalled = True
        self.proc.send_signal(signo)

    def stop(self, signo=signal.SIGTERM, timeout=60.0):
        """Sends signo (unless send_signal already did) and waits for the
        exit; returns the exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None and not self.signalled:
            self.proc.send_signal(signo)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s did not exit within %.0fs of signal %d:\n%s"
                                 % (self.binary, timeout, signo, self.log()))
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.returncode = self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        return False


class Messages:
    """Message classes built at run time from serialized FileDescriptorSets
    (the .desc files the build produces)."""

    def __init__(self, *desc_paths):
        self.pool = descriptor_pool.DescriptorPool()
        self.factory = message_factory.MessageFactory(self.pool)
        seen = set()
        for path in desc_paths:
            fds = descriptor_pb2.FileDescriptorSet()
            with open(path, "rb") as f:
                fds.ParseFromString(f.read())
            for fdp in fds.file:
                if fdp.name in seen:
                    continue
                seen.add(fdp.name)
                self.pool.Add(fdp)

    def cls(self, full_name):
        desc = self.pool.FindMessageTypeByName(full_name)
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(desc)
        return self.factory.GetPrototype(desc)

    def method(self, full_method):
        """(request class, reply class) of "/pkg.Service/Method"."""
        svc, name = full_method.lstrip("/").rsplit("/", 1)
        m = self.pool.FindServiceByName(svc).FindMethodByName(name)
        return self.cls(m.input_type.full_name), self.cls(m.output_type.full_name)

    def unary(self, channel, full_method):
        req, rep = self.method(full_method)
        return channel.unary_unary(full_method,
                                   request_serializer=req.SerializeToString,
                                   response_deserializer=rep.FromString)

    def server_stream(self, channel, full_method):
        req, rep = self.method(full_method)
        return channel.unary_stream(full_method,
                                    request_serializer=req.SerializeToString,
                                    response_deserializer=rep.FromString)

    def bidi(self, channel, full_method):
        req, rep = self.method(full_method)
        return channel.stream_stream(full_method,
                                     request_serializer=req.SerializeToString,
                                     response_deserializer=rep.FromString)


def raw_unary(channel, full_method):
    """A unary callable that sends and returns raw bytes."""
    return channel.unary_unary(full_method, request_serializer=None,
                               response_deserializer=None)


def http_get(url, timeout=10.0):
    """(status, body text) of a GET, without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def metric_value(text, name, labels=None):
    """The value of one sample in Prometheus text, or None. `labels` is a
    dict that must match the sample's labels exactly."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if "{" in series:
            metric, _, rest = series.partition("{")
            got = {}
            for part in rest.rstrip("}").split('",'):
                if not part:
                    continue
                k, _, v = part.partition("=")
                got[k] = v.strip('"')
        else:
            metric, got = series, {}
        if metric == name and got == (labels or {}):
            return float(value)
    return None
