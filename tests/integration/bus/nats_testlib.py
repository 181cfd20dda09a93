"""A real nats-server for integration tests: started on a free loopback port
with JetStream in a temporary store, killed and restarted on the same port
and store at will; plus the Node `nats` client (nats_tool.js) to read what
arrived."""

import json
import os
import socket
import subprocess
import tempfile
import time

from agentmesh_testlib import free_port, poll_until

NATS_SERVER = "/usr/sbin/nats-server"
HERE = os.path.dirname(os.path.abspath(__file__))


class NatsServer:
    def __init__(self, jetstream=True, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="agentmesh-nats-")
        self.port = free_port()
        self.jetstream = jetstream
        self.extra = list(extra_args)
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)] + self.extra
        if self.jetstream:
            args += ["-js", "-sd", os.path.join(self.dir, "js")]
        self.log = open(os.path.join(self.dir, "nats.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nats-server exited: %d" % self.proc.returncode)
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.makefile().readline().startswith("INFO")

        poll_until(up, 30, what="nats-server to accept connections")
        return self

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        return False


def node_tool(*args, timeout=120):
    """Runs nats_tool.js with the workspace's node_modules; returns the JSON
    lines it printed."""
    runner = os.path.join("tests", "lib", "run_node.sh")
    out = subprocess.run(["sh", runner, os.path.join(HERE, "nats_tool.js")] + list(args),
                         capture_output=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise AssertionError("nats_tool.js %s failed: %s" % (args[0], out.stderr.decode()))
    return [json.loads(l) for l in out.stdout.decode().splitlines() if l.strip()]


class NodeSubscriber:
    """A live core-NATS subscription in a Node process, started before the
    events are produced."""

    def __init__(self, url, subject, count, timeout_ms):
        runner = os.path.join("tests", "lib", "run_node.sh")
        self.proc = subprocess.Popen(
            ["sh", runner, os.path.join(HERE, "nats_tool.js"), "subscribe", url, subject,
             str(count), str(timeout_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = self.proc.stdout.readline()
        if not first or not json.loads(first).get("ready"):
            raise AssertionError("subscriber did not start: %s" % self.proc.stderr.read().decode())

    def messages(self, timeout=120):
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise AssertionError("subscriber failed: %s" % err.decode())
        return [json.loads(l) for l in out.decode().splitlines() if l.strip()]
