"""`agentmesh up` end to end: the supervisor starts nats-server with JetStream
and every service with its embedded defaults (ports moved to free ones through
the services' environment variables), a command goes through agent-manager
and memory-sync, the query service shows it (read-your-writes through
min_positions), events reach NATS, and Ctrl-C stops everything with exit 0.

usage: up_mesh_test.py AGENTMESH_BINARY DESCRIPTOR_SET"""

import os
import signal
import socket
import subprocess
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.join("tests", "integration", "bus"))
from agentmesh_testlib import Messages, free_port, poll_until
from nats_testlib import node_tool

SUPERVISOR = os.path.abspath(sys.argv[1])
MSGS = Messages(sys.argv[2])


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main():
    data = os.path.join(tempfile.mkdtemp(prefix="agentmesh-up-"), "data")
    ports = {k: free_port() for k in ("nats", "agents", "memory", "query",
                                       "agents_admin", "memory_admin", "query_admin")}
    env = dict(os.environ)
    env.update({
        "AGENTMESH_AGENTS_LISTEN": "127.0.0.1:%d" % ports["agents"],
        "AGENTMESH_AGENTS_ADMIN": "127.0.0.1:%d" % ports["agents_admin"],
        "AGENTMESH_MEMORY_LISTEN": "127.0.0.1:%d" % ports["memory"],
        "AGENTMESH_MEMORY_ADMIN": "127.0.0.1:%d" % ports["memory_admin"],
        "AGENTMESH_QUERY_LISTEN": "127.0.0.1:%d" % ports["query"],
        "AGENTMESH_QUERY_ADMIN": "127.0.0.1:%d" % ports["query_admin"],
        "AGENTMESH_QUERY_AGENTS_ADDR": "127.0.0.1:%d" % ports["agents"],
        "AGENTMESH_QUERY_MEMORY_ADDR": "127.0.0.1:%d" % ports["memory"],
    })
    log_path = os.path.join(os.path.dirname(data), "up.log")
    log = open(log_path, "wb")
    # The runfiles root holds the binaries at their package paths, as
    # bazel-bin does.
    proc = subprocess.Popen([SUPERVISOR, "up", "--data", data, "--bin", os.getcwd(),
                             "--nats-port", str(ports["nats"])],
                            stdout=log, stderr=log, env=env)
    try:
        for name in ("nats", "agents", "memory", "query"):
            poll_until(lambda: proc.poll() is None and port_open(ports[name]), 60,
                       what="%s to listen" % name)
        agents = grpc.insecure_channel("127.0.0.1:%d" % ports["agents"])
        memory = grpc.insecure_channel("127.0.0.1:%d" % ports["memory"])
        query = grpc.insecure_channel("127.0.0.1:%d" % ports["query"])

        Reg, _ = MSGS.method("/agentmesh.v1.AgentManager/RegisterAgent")
        agent = MSGS.unary(agents, "/agentmesh.v1.AgentManager/RegisterAgent")(
            Reg(name="worker", capabilities=["summarize"], max_concurrency=2), timeout=10)
        Sub, _ = MSGS.method("/agentmesh.v1.AgentManager/SubmitTask")
        task = MSGS.unary(agents, "/agentmesh.v1.AgentManager/SubmitTask")(
            Sub(required_capabilities=["summarize"], input='{"doc":1}'), timeout=10)
        assert task.agent_id == agent.agent_id, (task, agent)
        Put, _ = MSGS.method("/agentmesh.v1.MemorySync/PutMemory")
        entry = MSGS.unary(memory, "/agentmesh.v1.MemorySync/PutMemory")(
            Put(namespace="team", key="plan", value=b"step one", content_type="text/plain"), timeout=10)

        LT, _ = MSGS.method("/agentmesh.v1.Query/ListTasks")
        listed = MSGS.unary(query, "/agentmesh.v1.Query/ListTasks")(
            LT(min_positions={"agents": task.position, "memory": entry.position}), timeout=30)
        assert [t.task_id for t in listed.tasks] == [task.task_id], listed
        assert listed.positions["agents"] >= task.position, listed.positions
        SM, _ = MSGS.method("/agentmesh.v1.Query/SearchMemory")
        found = MSGS.unary(query, "/agentmesh.v1.Query/SearchMemory")(
            SM(namespace="team", min_positions={"memory": entry.position}), timeout=30)
        assert [e.key for e in found.entries] == ["plan"] and not found.entries[0].value, found

        # The events reached JetStream's AGENTMESH stream.
        url = "nats://127.0.0.1:%d" % ports["nats"]
        def published():
            subjects = [m["subject"] for m in node_tool("read-stream", url, "AGENTMESH")]
            return ("agentmesh.events.agents.task.TaskAssigned" in subjects
                    and "agentmesh.events.memory.memory.MemoryWritten" in subjects) and subjects
        subjects = poll_until(published, 60, what="events on NATS")
        for sub in ("agents", "memory", "query", "nats"):
            assert os.path.isdir(os.path.join(data, sub)), sub

        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=90)
        assert rc == 0, rc
        for name in ("nats", "agents", "memory", "query"):
            assert not port_open(ports[name]), "%s still listening after Ctrl-C" % name
        print("up: mesh served a command, its query and %d NATS events; Ctrl-C stopped it (exit 0)"
              % len(subjects))
    except BaseException:
        log.flush()
        sys.stdout.write(open(log_path, encoding="utf-8", errors="replace").read()[-6000:])
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
    print("1 passed, 0 failed")
