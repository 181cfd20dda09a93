"""Writes the seed corpus of fold_fuzz.c: event sequences of a task's whole
life and an agent's, and a snapshot in the format of snapshot.c, with
payloads built from the API descriptor set.
Usage: /usr/bin/python3 gen_seeds.py API_DESC OUT_DIR"""

import os
import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

TYPES = ["AgentRegistered", "AgentUpdated", "AgentDeregistered",
         "AgentWentOnline", "AgentWentOffline", "TaskSubmitted", "TaskAssigned",
         "TaskStarted", "TaskProgressed", "TaskCompleted", "TaskFailed",
         "TaskCancelled", "TaskRetried"]
STREAMS = ["agent-a0", "agent-a1", "task-t0", "task-t1", "task-t2", "other-x"]

pool = descriptor_pool.DescriptorPool()
factory = message_factory.MessageFactory(pool)
fds = descriptor_pb2.FileDescriptorSet()
fds.ParseFromString(open(sys.argv[1], "rb").read())
for f in fds.file:
    pool.Add(f)


def msg(type_name_, **kw):
    cls = factory.GetPrototype(pool.FindMessageTypeByName("agentmesh.v1." + type_name_))
    return cls(**kw)


def record(type_name, stream, payload):
    data = payload.SerializeToString()
    assert len(data) < 256
    return bytes([TYPES.index(type_name), STREAMS.index(stream), len(data)]) + data


def events(*recs):
    return b"\x00" + b"".join(recs)


out = sys.argv[2]
os.makedirs(out, exist_ok=True)
seeds = {
    "lifecycle": events(
        record("AgentRegistered", "agent-a0", msg("AgentRegistered", agent_id="a0", name="w",
                                                  capabilities=["py"], labels={"k": "v"},
                                                  max_concurrency=2)),
        record("TaskSubmitted", "task-t0", msg("TaskSubmitted", task_id="t0",
                                               required_capabilities=["py"], input="{}",
                                               priority=1, idempotency_key="k0")),
        record("TaskAssigned", "task-t0", msg("TaskAssigned", task_id="t0", agent_id="a0",
                                              attempt=1)),
        record("TaskStarted", "task-t0", msg("TaskStarted", task_id="t0", agent_id="a0")),
        record("TaskProgressed", "task-t0", msg("TaskProgressed", task_id="t0", phase="p",
                                                progress_percent=50)),
        record("TaskFailed", "task-t0", msg("TaskFailed", task_id="t0", error="e")),
        record("TaskRetried", "task-t0", msg("TaskRetried", task_id="t0", attempt=2)),
        record("TaskAssigned", "task-t0", msg("TaskAssigned", task_id="t0", agent_id="a0",
                                              attempt=2)),
        record("TaskStarted", "task-t0", msg("TaskStarted", task_id="t0")),
        record("TaskCompleted", "task-t0", msg("TaskCompleted", task_id="t0", output="o")),
        record("TaskSubmitted", "task-t1", msg("TaskSubmitted", task_id="t1", agent_id="a0",
                                               priority=5)),
        record("TaskCancelled", "task-t1", msg("TaskCancelled", task_id="t1", reason="r")),
    ),
    "agent": events(
        record("AgentRegistered", "agent-a1", msg("AgentRegistered", agent_id="a1", name="x")),
        record("AgentUpdated", "agent-a1", msg("AgentUpdated", agent_id="a1",
                                               capabilities=["go"], max_concurrency=3)),
        record("AgentWentOffline", "agent-a1", msg("AgentWentOffline", agent_id="a1")),
        record("AgentWentOnline", "agent-a1", msg("AgentWentOnline", agent_id="a1")),
        record("AgentDeregistered", "agent-a1", msg("AgentDeregistered", agent_id="a1")),
        record("AgentRegistered", "agent-a1", msg("AgentRegistered", agent_id="a1", name="y")),
    ),
}
agent = msg("Agent", agent_id="a0", name="w", capabilities=["py"], labels={"k": "v"},
            max_concurrency=2, status=1, version=0, position=1).SerializeToString()
task = msg("Task", task_id="t0", agent_id="a0", required_capabilities=["py"], input="{}",
           state=2, attempt=1, version=1, position=3, idempotency_key="k0").SerializeToString()
pending = msg("Task", task_id="t1", state=1, attempt=1, version=0, position=4,
              priority=3).SerializeToString()
snap = b"AMS1" + struct.pack("<QI", 4, 1) + struct.pack("<I", len(agent)) + agent
snap += struct.pack("<I", 2)
snap += struct.pack("<I", 2) + b"a0" + struct.pack("<I", len(task)) + task
snap += struct.pack("<I", 0) + struct.pack("<I", len(pending)) + pending
seeds["snapshot"] = b"\x01" + snap
seeds["snapshot_truncated"] = b"\x01" + snap[:40]
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
