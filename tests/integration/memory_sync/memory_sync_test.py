"""Integration tests of memory-sync: the real binary on free loopback ports
with a temporary data directory, driven by Python grpcio (message classes
from the API descriptor set at run time). Covers every MemorySync RPC and
its error codes, versions and expected versions, tombstones, stable
pagination under concurrent writes, the sync scenarios (each strategy,
idempotent resend, cursor paging through 1,000 changes), WatchMemory,
forgetting (the raw LMDB file searched for plaintext before and after),
the EventStore API, health, reflection, restart and SIGTERM.
Usage: memory_sync_test.py MEMORY_SYNC API_DESC"""

import base64
import glob
import os
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
import uuid

import grpc

import agentmesh_testlib as lib

BINARY, API_DESC = sys.argv[1:3]
del sys.argv[1:3]

MSG = lib.Messages(API_DESC)
MS = "/agentmesh.v1.MemorySync/"
ES = "/agentmesh.v1.EventStore/"
LWW, PRIORITY, KEEP = 1, 2, 3
SERVER_WON, CLIENT_WON, KEPT_BOTH = 1, 2, 3
Change = MSG.cls("agentmesh.v1.SyncChange")


def uid(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


class Client:
    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        for name in ("PutMemory", "GetMemory", "DeleteMemory", "ListMemory",
                     "SyncMemory", "ForgetNamespace"):
            setattr(self, name, self._wrap(MSG.unary(self.channel, MS + name), MS + name))
        self.WatchMemory = self._wrap(MSG.server_stream(self.channel, MS + "WatchMemory"),
                                      MS + "WatchMemory")
        for name in ("ReadStream", "ReadAll"):
            setattr(self, name, self._wrap(MSG.unary(self.channel, ES + name), ES + name))

    @staticmethod
    def _wrap(stub, method):
        req_cls, _ = MSG.method(method)

        def call(timeout=30, metadata=None, **fields):
            return stub(req_cls(**fields), timeout=timeout, metadata=metadata)
        return call

    def close(self):
        self.channel.close()


def start(data_dir, *extra):
    return lib.Server(BINARY, ["--data-dir=" + data_dir, "--listen=127.0.0.1:0",
                               "--admin=127.0.0.1:0", "--nats-url="] + list(extra)).start()


def code_of(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("call succeeded")


def raw_bytes(data_dir):
    with open(os.path.join(data_dir, "data.mdb"), "rb") as f:
        return f.read()


def lmdb_get(data_dir, key):
    """A caller key of the event store, read from the LMDB file directly
    (the store's "user" database holds "<namespace>\0<key>")."""
    import lmdb
    env = lmdb.open(data_dir, readonly=True, lock=True, max_dbs=16)
    try:
        db = env.open_db(b"user", create=False)
        with env.begin() as txn:
            v = txn.get(key, db=db)
            return bytes(v) if v is not None else None
    finally:
        env.close()


def forms(value):
    """The plaintext and the base64 spellings a leak could take."""
    out = [value]
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            # base64 of the value at any alignment inside a larger buffer
            b = enc(b"\0" * shift + value)[4:-4]
            if len(b) > 8:
                out.append(b)
    return out


class MemorySyncTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = tempfile.mkdtemp(prefix="ms-data-")
        cls.server = start(cls.data, "--strategy",
                           "prio-*=SOURCE_PRIORITY,order=lead|dev;keep-*=KEEP_BOTH")
        cls.c = Client(cls.server.grpc_target)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        rc = cls.server.stop()
        assert rc == 0, cls.server.log()

    # ---- single keys ---------------------------------------------------------

    def test_put_get_versions(self):
        ns = uid("v")
        e = self.c.PutMemory(namespace=ns, key="a", value=b"one", content_type="text/plain",
                             replica_id="agent-1")
        self.assertEqual((e.version, e.value, e.replica_id, e.deleted), (1, b"one", "agent-1", False))
        self.assertGreater(e.position, 0)
        self.assertGreater(e.hlc >> 16, 1600000000000)
        e2 = self.c.PutMemory(namespace=ns, key="a", value=b"two", expected_version=1)
        self.assertEqual(e2.version, 2)
        self.assertGreater(e2.hlc, e.hlc)
        self.assertEqual(e2.replica_id, "server")
        g = self.c.GetMemory(namespace=ns, key="a")
        self.assertEqual((g.version, g.value, g.position), (2, b"two", e2.position))
        code, msg = code_of(self.c.PutMemory, namespace=ns, key="a", value=b"x", expected_version=1)
        self.assertEqual(code, grpc.StatusCode.ABORTED)
        self.assertIn("current version is 2", msg)
        code, msg = code_of(self.c.PutMemory, namespace=ns, key="new", value=b"x", expected_version=3)
        self.assertEqual(code, grpc.StatusCode.ABORTED)
        self.assertIn("current version is 0", msg)
        self.assertEqual(self.c.PutMemory(namespace=ns, key="new", value=b"",
                                          expected_version=0).version, 1)
        self.assertEqual(self.c.GetMemory(namespace=ns, key="new").value, b"")
        self.assertEqual(code_of(self.c.GetMemory, namespace=ns, key="none")[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code_of(self.c.GetMemory, namespace=uid("never"), key="a")[0],
                         grpc.StatusCode.NOT_FOUND)

    def test_invalid_arguments(self):
        bad = [dict(namespace="", key="a"), dict(namespace="a b", key="a"),
               dict(namespace="x" * 129, key="a"), dict(namespace="ok", key=""),
               dict(namespace="ok", key="k" * 257),
               dict(namespace="ok", key="a", value=b"v" * (256 * 1024 + 1)),
               dict(namespace="ok", key="a", content_type="x" * 129),
               dict(namespace="ok", key="a\0b")]
        for fields in bad:
            code, msg = code_of(self.c.PutMemory, **fields)
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, (fields.keys(), msg))
        self.assertEqual(code_of(self.c.SyncMemory, namespace="ok", replica_id="r",
                                 changes=[Change(key="a\0b", value=b"v")])[0],
                         grpc.StatusCode.INVALID_ARGUMENT)
        ok = self.c.PutMemory(namespace="x" * 128, key="k" * 256, value=b"v" * (256 * 1024))
        self.assertEqual(ok.version, 1)
        self.assertEqual(code_of(self.c.ListMemory, namespace="ok2", page_token="!!")[0],
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(code_of(self.c.SyncMemory, namespace="ok", replica_id="")[0],
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(code_of(self.c.SyncMemory, namespace="ok", replica_id="r",
                                 cursor="garbage")[0], grpc.StatusCode.INVALID_ARGUMENT)
        far = (2 ** 47) << 16
        self.assertEqual(code_of(self.c.SyncMemory, namespace="ok", replica_id="r",
                                 changes=[Change(key="a", value=b"v", hlc=far)])[0],
                         grpc.StatusCode.INVALID_ARGUMENT)
        too_many = [Change(key="k%d" % i, value=b"v") for i in range(401)]
        self.assertEqual(code_of(self.c.SyncMemory, namespace="ok", replica_id="r",
                                 changes=too_many)[0], grpc.StatusCode.INVALID_ARGUMENT)

    def test_long_client_headers(self):
        # metadata from headers is bounded: a long header never fails a command
        ns = uid("hdr")
        md = [("x-request-id", "r" * 5000), ("x-correlation-id", "c" * 5000),
              ("traceparent", "00-" + "f" * 3000)]
        e = self.c.PutMemory(namespace=ns, key="a", value=b"1", metadata=md)
        self.assertEqual(e.version, 1)
        ev = self.c.ReadStream(stream="memory-" + ns, limit=1).events[0]
        self.assertLessEqual(len(ev.metadata.causation_id), 127)
        self.assertLessEqual(len(ev.metadata.correlation_id), 127)
        self.assertEqual(len(ev.metadata.traceparent), 55)
        good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        self.c.PutMemory(namespace=ns, key="a", value=b"2", metadata=[("traceparent", good)])
        ev = self.c.ReadStream(stream="memory-" + ns, limit=10).events[1]
        self.assertEqual(ev.metadata.traceparent, good)

    def test_tombstones(self):
        ns = uid("t")
        self.c.PutMemory(namespace=ns, key="a", value=b"1")
        self.c.PutMemory(namespace=ns, key="b", value=b"2")
        code, msg = code_of(self.c.DeleteMemory, namespace=ns, key="a", expected_version=7)
        self.assertEqual(code, grpc.StatusCode.ABORTED)
        self.assertIn("current version is 1", msg)
        d = self.c.DeleteMemory(namespace=ns, key="a", expected_version=1)
        self.assertEqual((d.deleted, d.version, d.value), (True, 2, b""))
        self.assertEqual(code_of(self.c.GetMemory, namespace=ns, key="a")[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code_of(self.c.DeleteMemory, namespace=ns, key="a")[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code_of(self.c.DeleteMemory, namespace=ns, key="zz")[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual([e.key for e in self.c.ListMemory(namespace=ns).entries], ["b"])
        # the version line goes on after the tombstone
        code, msg = code_of(self.c.PutMemory, namespace=ns, key="a", value=b"x", expected_version=0)
        self.assertIn("current version is 2", msg)
        self.assertEqual(self.c.PutMemory(namespace=ns, key="a", value=b"3",
                                          expected_version=2).version, 3)
        events = self.c.ReadStream(stream="memory-" + ns, limit=100).events
        self.assertEqual([e.type.rsplit(".", 1)[1] for e in events],
                         ["MemoryWritten", "MemoryWritten", "MemoryDeleted", "MemoryWritten"])

    def test_pagination_stable_under_writes(self):
        ns = uid("p")
        keys = ["k%04d" % i for i in range(0, 500, 2)]
        self.c.SyncMemory(namespace=ns, replica_id="loader",
                          changes=[Change(key=k, value=k.encode()) for k in keys[:200]])
        self.c.SyncMemory(namespace=ns, replica_id="loader",
                          changes=[Change(key=k, value=k.encode()) for k in keys[200:]])
        self.c.PutMemory(namespace=ns, key="other", value=b"x")
        seen, token, pages = [], "", 0
        while True:
            r = self.c.ListMemory(namespace=ns, prefix="k", page_size=37, page_token=token)
            self.assertLessEqual(len(r.entries), 37)
            for e in r.entries:
                self.assertEqual(e.value, e.key.encode())
            seen += [e.key for e in r.entries]
            pages += 1
            # concurrent writers: odd keys appear, some later keys go away
            self.c.PutMemory(namespace=ns, key="k%04d" % (pages * 31 % 500 | 1), value=b"new")
            self.c.PutMemory(namespace=ns, key="k%04d" % (pages * 53 % 500 | 1), value=b"new")
            if not r.next_page_token:
                break
            token = r.next_page_token
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(len(seen), len(set(seen)), "a key was repeated")
        self.assertTrue(set(keys) <= set(seen), "a key that existed throughout was skipped")
        self.assertNotIn("other", seen)
        self.assertEqual(code_of(self.c.ListMemory, namespace=uid("p2"))[0],
                         grpc.StatusCode.NOT_FOUND)
        other = uid("p3")
        self.c.PutMemory(namespace=other, key="a", value=b"1")
        self.assertEqual(code_of(self.c.ListMemory, namespace=other, page_token=token)[0],
                         grpc.StatusCode.INVALID_ARGUMENT)
        # page_size above the cap is served at the cap (1000)
        self.assertLessEqual(len(self.c.ListMemory(namespace=ns, page_size=5000).entries), 1000)

    # ---- sync ------------------------------------------------------------------

    def two_replicas(self, ns, r1, h1, r2, h2, strategy=0):
        base = self.c.PutMemory(namespace=ns, key="doc", value=b"base")
        a = self.c.SyncMemory(namespace=ns, replica_id=r1, strategy=strategy,
                              changes=[Change(key="doc", value=r1.encode(), base_version=1, hlc=h1)])
        b = self.c.SyncMemory(namespace=ns, replica_id=r2, strategy=strategy,
                              changes=[Change(key="doc", value=r2.encode(), base_version=1, hlc=h2)])
        self.assertEqual(base.version, 1)
        self.assertEqual([e.version for e in a.applied], [2])
        self.assertEqual(len(a.conflicts), 0)
        self.assertEqual(len(b.conflicts), 1)
        return b

    def conflict_events(self, ns):
        return [e for e in self.c.ReadStream(stream="memory-" + ns, limit=1000).events
                if e.type == "agentmesh.v1.MemoryConflictResolved"]

    def test_sync_last_writer_wins(self):
        now = self.c.PutMemory(namespace=uid("clock"), key="k", value=b"").hlc
        # the later clock wins whichever replica syncs second
        ns = uid("lww")
        b = self.two_replicas(ns, "r1", now + 10, "r2", now + 20)
        self.assertEqual(b.conflicts[0].resolution, CLIENT_WON)
        self.assertEqual(b.conflicts[0].server_entry.value, b"r1")
        self.assertEqual(b.conflicts[0].client_change.value, b"r2")
        self.assertEqual([e.version for e in b.applied], [3])
        self.assertEqual(self.c.GetMemory(namespace=ns, key="doc").value, b"r2")
        ns = uid("lww")
        b = self.two_replicas(ns, "r1", now + 20, "r2", now + 10)
        self.assertEqual(b.conflicts[0].resolution, SERVER_WON)
        self.assertEqual(len(b.applied), 0)
        self.assertEqual(self.c.GetMemory(namespace=ns, key="doc").value, b"r1")
        # equal clocks: the greater replica id wins
        ns = uid("lww")
        b = self.two_replicas(ns, "r9", now + 30, "r1", now + 30)
        self.assertEqual(b.conflicts[0].resolution, SERVER_WON)
        ns = uid("lww")
        b = self.two_replicas(ns, "r1", now + 30, "r9", now + 30)
        self.assertEqual(b.conflicts[0].resolution, CLIENT_WON)
        ev = self.conflict_events(ns)
        self.assertEqual(len(ev), 1)
        payload = MSG.cls("agentmesh.v1.MemoryConflictResolved").FromString(ev[0].data)
        self.assertEqual((payload.strategy, payload.resolution, payload.client_replica_id,
                          payload.server_replica_id, payload.client_base_version,
                          payload.server_version), (LWW, CLIENT_WON, "r9", "r1", 1, 2))

    def test_sync_source_priority(self):
        now = self.c.PutMemory(namespace=uid("clock"), key="k", value=b"").hlc
        # configured: prio-* orders lead before dev before everyone else
        ns = uid("prio")
        b = self.two_replicas(ns, "dev", now + 50, "lead", now + 1)
        self.assertEqual(b.conflicts[0].resolution, CLIENT_WON)
        self.assertEqual(self.c.GetMemory(namespace=ns, key="doc").value, b"lead")
        ns = uid("prio")
        b = self.two_replicas(ns, "lead", now + 1, "dev", now + 50)
        self.assertEqual(b.conflicts[0].resolution, SERVER_WON)
        ns = uid("prio")
        b = self.two_replicas(ns, "stranger", now + 50, "dev", now + 1)
        self.assertEqual(b.conflicts[0].resolution, CLIENT_WON)
        # two unlisted replicas: by clock
        ns = uid("prio")
        b = self.two_replicas(ns, "x", now + 50, "y", now + 1)
        self.assertEqual(b.conflicts[0].resolution, SERVER_WON)
        payload = MSG.cls("agentmesh.v1.MemoryConflictResolved").FromString(
            self.conflict_events(ns)[0].data)
        self.assertEqual(payload.strategy, PRIORITY)

    def test_sync_keep_both(self):
        now = self.c.PutMemory(namespace=uid("clock"), key="k", value=b"").hlc
        for ns, strategy in ((uid("keep"), 0), (uid("req"), KEEP)):
            b = self.two_replicas(ns, "r1", now + 1, "r2", now + 50, strategy)
            self.assertEqual(b.conflicts[0].resolution, KEPT_BOTH)
            self.assertEqual(b.conflicts[0].server_entry.value, b"r1")
            self.assertEqual(b.conflicts[0].server_entry.version, 2)
            self.assertEqual(b.conflicts[0].client_change.value, b"r2")
            self.assertEqual(len(b.applied), 0)
            # the client resolves by writing on the server's version
            r = self.c.SyncMemory(namespace=ns, replica_id="r2", changes=[
                Change(key="doc", value=b"merged", base_version=2, hlc=now + 60)])
            self.assertEqual([e.version for e in r.applied], [3])
        # a strategy named by a request sticks to the namespace
        ns = uid("req")
        self.c.SyncMemory(namespace=ns, replica_id="r0", strategy=KEEP,
                          changes=[Change(key="doc", value=b"v", hlc=now)])
        r = self.c.SyncMemory(namespace=ns, replica_id="r1", strategy=LWW, changes=[
            Change(key="doc", value=b"w", base_version=0, hlc=now + 99)])
        self.assertEqual(r.conflicts[0].resolution, KEPT_BOTH)
        # a configured pattern wins over a request's choice
        ns = uid("keep")
        self.c.SyncMemory(namespace=ns, replica_id="r0", strategy=LWW,
                          changes=[Change(key="doc", value=b"v", hlc=now)])
        r = self.c.SyncMemory(namespace=ns, replica_id="r1", strategy=LWW, changes=[
            Change(key="doc", value=b"w", base_version=0, hlc=now + 99)])
        self.assertEqual(r.conflicts[0].resolution, KEPT_BOTH)

    def test_sync_idempotent_resend(self):
        ns = uid("idem")
        self.c.PutMemory(namespace=ns, key="x", value=b"server")
        changes = [Change(key="a", value=b"1", hlc=100), Change(key="b", value=b"2", hlc=101),
                   Change(key="x", value=b"conflicting", base_version=0, hlc=102),
                   Change(key="a", deleted=True, base_version=1, hlc=103)]
        first = self.c.SyncMemory(namespace=ns, replica_id="r1", changes=changes)
        self.assertEqual([(e.key, e.version, e.deleted) for e in first.applied],
                         [("a", 1, False), ("b", 1, False), ("a", 2, True)])
        self.assertEqual(len(first.conflicts), 1)
        last = self.c.ReadAll(from_position=2 ** 63, direction=1, limit=1).events[0].position
        stream = self.c.ReadStream(stream="memory-" + ns, limit=100).events
        for _ in range(2):
            again = self.c.SyncMemory(namespace=ns, replica_id="r1", changes=changes)
            self.assertEqual((len(again.applied), len(again.conflicts)), (0, 0))
        self.assertEqual(self.c.ReadAll(from_position=2 ** 63, direction=1, limit=1)
                         .events[0].position, last)
        self.assertEqual(len(self.c.ReadStream(stream="memory-" + ns, limit=100).events),
                         len(stream))
        # another replica sending the same content is a different change
        other = self.c.SyncMemory(namespace=ns, replica_id="r2",
                                  changes=[Change(key="b", value=b"2", base_version=1, hlc=101)])
        self.assertEqual([e.version for e in other.applied], [2])
        # the event ids are deterministic: event store ids of the sync
        ids = [e.event_id for e in stream]
        self.assertEqual(len(ids), len(set(ids)))

    def test_sync_cursor_paging_1000(self):
        ns = uid("page")
        writer = "w"
        for start in range(0, 1000, 400):
            chunk = [Change(key="key-%04d" % i, value=b"v%d" % i, hlc=1000 + i)
                     for i in range(start, min(start + 400, 1000))]
            r = self.c.SyncMemory(namespace=ns, replica_id=writer, changes=chunk)
            self.assertEqual(len(r.applied), len(chunk))
        got, cursor, rounds = [], "", 0
        while True:
            r = self.c.SyncMemory(namespace=ns, replica_id="reader", cursor=cursor, page_size=130)
            self.assertLessEqual(len(r.changes), 130)
            got += [(e.key, e.version, e.value) for e in r.changes]
            cursor = r.cursor
            rounds += 1
            if not r.has_more:
                break
        self.assertEqual(len(got), 1000)
        self.assertEqual(len(set(got)), 1000)
        self.assertEqual(sorted(got), [("key-%04d" % i, 1, b"v%d" % i) for i in range(1000)])
        self.assertEqual(rounds, 8)
        # nothing more after the final cursor, until something changes
        r = self.c.SyncMemory(namespace=ns, replica_id="reader", cursor=cursor)
        self.assertEqual((len(r.changes), r.has_more), (0, False))
        self.c.PutMemory(namespace=ns, key="key-0001", value=b"later")
        r = self.c.SyncMemory(namespace=ns, replica_id="reader", cursor=cursor)
        self.assertEqual([(e.key, e.version, e.value) for e in r.changes],
                         [("key-0001", 2, b"later")])
        # a replica's own changes come back after its cursor (echoed)
        mine = self.c.SyncMemory(namespace=ns, replica_id="reader", cursor=r.cursor,
                                 changes=[Change(key="mine", value=b"m", hlc=5000)])
        self.assertEqual([e.key for e in mine.changes], ["mine"])

    # ---- watch -----------------------------------------------------------------

    def test_watch_catch_up_then_live(self):
        ns = uid("w")
        self.c.PutMemory(namespace=ns, key="a/1", value=b"first")
        self.c.PutMemory(namespace=ns, key="b/1", value=b"skip")
        stream = self.c.WatchMemory(namespace=ns, prefix="a/", timeout=60)
        got = []

        def reader():
            for m in stream:
                got.append(m)
                if len(got) == 3:
                    return

        t = threading.Thread(target=reader)
        t.start()
        lib.poll_until(lambda: len(got) >= 1, 30, what="catch-up change")
        self.c.PutMemory(namespace=ns, key="b/2", value=b"skip")
        self.c.PutMemory(namespace=ns, key="a/2", value=b"live")
        self.c.DeleteMemory(namespace=ns, key="a/1")
        t.join(60)
        stream.cancel()
        self.assertEqual([(m.entry.key, m.entry.value, m.entry.deleted, m.event_type) for m in got],
                         [("a/1", b"first", False, "agentmesh.v1.MemoryWritten"),
                          ("a/2", b"live", False, "agentmesh.v1.MemoryWritten"),
                          ("a/1", b"", True, "agentmesh.v1.MemoryDeleted")])
        # resume after the second change: only the third comes
        resumed = self.c.WatchMemory(namespace=ns, prefix="a/", cursor=got[1].cursor, timeout=60)
        first = next(iter(resumed))
        resumed.cancel()
        self.assertEqual((first.entry.key, first.entry.deleted), ("a/1", True))
        # a sync cursor works too
        s = self.c.SyncMemory(namespace=ns, replica_id="r")
        self.c.PutMemory(namespace=ns, key="a/3", value=b"after")
        w = self.c.WatchMemory(namespace=ns, cursor=s.cursor, timeout=60)
        self.assertEqual(next(iter(w)).entry.key, "a/3")
        w.cancel()
        self.assertEqual(code_of(lambda: list(self.c.WatchMemory(namespace=uid("none"), timeout=10)))[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code_of(lambda: list(self.c.WatchMemory(namespace=ns, cursor="zz", timeout=10)))[0],
                         grpc.StatusCode.INVALID_ARGUMENT)

    # ---- forget ----------------------------------------------------------------

    def test_forget_crypto_shredding(self):
        ns = uid("f")
        secrets = [b"ZEBRA-SECRET-%s" % uuid.uuid4().hex.encode() for _ in range(5)]
        for i, s in enumerate(secrets[:3]):
            self.c.PutMemory(namespace=ns, key="s%d" % i, value=s)
        self.c.SyncMemory(namespace=ns, replica_id="r", changes=[
            Change(key="s3", value=secrets[3], hlc=10), Change(key="s4", value=secrets[4], hlc=11)])
        self.c.DeleteMemory(namespace=ns, key="s4")
        self.assertEqual(self.c.GetMemory(namespace=ns, key="s0").value, secrets[0])
        watch = self.c.WatchMemory(namespace=ns, timeout=60)
        it = iter(watch)
        self.assertEqual(next(it).entry.value, secrets[0])
        raw = raw_bytes(self.data)
        for s in secrets:
            for f in forms(s):
                self.assertNotIn(f, raw, "plaintext or base64 of a value in data.mdb")
        # the namespace key is stored wrapped under a master key kept in a
        # file beside the store: neither the master nor a raw namespace key
        # is ever in data.mdb
        masters = glob.glob(os.path.join(self.data, "memory-master-*.key"))
        self.assertEqual(len(masters), 1, masters)
        with open(masters[0], "rb") as f:
            old_master = f.read()
        self.assertEqual(len(old_master), 64)
        self.assertNotIn(old_master[:32], raw)
        self.assertEqual(os.stat(masters[0]).st_mode & 0o777, 0o600)
        wrapped = lmdb_get(self.data, b"memory.keys\0" + ns.encode())
        self.assertEqual(len(wrapped), 101)
        r = self.c.ForgetNamespace(namespace=ns, reason="user request")
        self.assertEqual(r.keys_forgotten, 4)
        self.assertGreater(r.position, 0)
        # a watch of the namespace ends with NOT_FOUND
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in it:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        for key in ("s0", "s3"):
            self.assertEqual(code_of(self.c.GetMemory, namespace=ns, key=key)[0],
                             grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code_of(self.c.ListMemory, namespace=ns)[0], grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code_of(lambda: list(self.c.WatchMemory(namespace=ns, timeout=10)))[0],
                         grpc.StatusCode.NOT_FOUND)
        self.assertEqual(code_of(self.c.ForgetNamespace, namespace=ns)[0],
                         grpc.StatusCode.NOT_FOUND)
        s = self.c.SyncMemory(namespace=ns, replica_id="late")
        self.assertEqual(len(s.changes), 0)
        raw = raw_bytes(self.data)
        for sec in secrets:
            for f in forms(sec):
                self.assertNotIn(f, raw)
        # the key record is gone; LMDB may still hold stale copies of it in
        # free pages (copy-on-write), but the master that wrapped them is
        # destroyed: rotated, its file overwritten and unlinked
        self.assertIsNone(lmdb_get(self.data, b"memory.keys\0" + ns.encode()))
        stale = raw.count(wrapped)
        now = glob.glob(os.path.join(self.data, "memory-master-*.key"))
        self.assertEqual(len(now), 1)
        self.assertNotEqual(now[0], masters[0])
        self.assertFalse(os.path.exists(masters[0]))
        for path in glob.glob(os.path.join(self.data, "*")):
            with open(path, "rb") as f:
                self.assertNotIn(old_master[:32], f.read(), path)
        print("forget: %d stale copies of the wrapped key left in data.mdb, "
              "unwrappable (old master destroyed)" % stale, file=sys.stderr)
        # the log still holds the events, with values nobody can open
        events = self.c.ReadStream(stream="memory-" + ns, limit=100).events
        self.assertEqual(events[-1].type, "agentmesh.v1.NamespaceForgotten")
        # reuse: a fresh key generation, versions from 1
        e = self.c.PutMemory(namespace=ns, key="s0", value=b"fresh")
        self.assertEqual(e.version, 1)
        self.assertEqual([x.key for x in self.c.ListMemory(namespace=ns).entries], ["s0"])
        w = MSG.cls("agentmesh.v1.MemoryWritten").FromString(
            self.c.ReadStream(stream="memory-" + ns, limit=100).events[-1].data)
        self.assertEqual(w.key_generation, 2)
        s = self.c.SyncMemory(namespace=ns, replica_id="late", cursor="")
        self.assertEqual([(c.key, c.value) for c in s.changes], [("s0", b"fresh")])

    # ---- service surface --------------------------------------------------------

    def test_eventstore_health_reflection(self):
        ns = uid("es")
        self.c.PutMemory(namespace=ns, key="a", value=b"hidden-in-log")
        events = self.c.ReadStream(stream="memory-" + ns, limit=10).events
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0].source, "memory")
        w = MSG.cls("agentmesh.v1.MemoryWritten").FromString(events[0].data)
        self.assertEqual((w.namespace, w.key, w.version, w.size), (ns, "a", 1, 13))
        self.assertEqual(len(w.content_hash), 32)
        self.assertNotIn(b"hidden-in-log", w.sealed_value)
        self.assertEqual(len(w.sealed_value), 13 + 28)
        hreq, hrep = MSG.method("/grpc.health.v1.Health/Check")
        check = MSG.unary(self.c.channel, "/grpc.health.v1.Health/Check")
        for svc in ("", "agentmesh.v1.MemorySync", "agentmesh.v1.EventStore"):
            self.assertEqual(check(hreq(service=svc), timeout=10).status, 1, svc)
        rreq, _ = MSG.method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        refl = MSG.bidi(self.c.channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        replies = list(refl(iter([rreq(list_services="")]), timeout=10))
        names = [s.name for s in replies[0].list_services_response.service]
        self.assertIn("agentmesh.v1.MemorySync", names)
        self.assertIn("agentmesh.v1.EventStore", names)
        status, _ = lib.http_get(self.server.admin_url + "/healthz")
        self.assertEqual(status, 200)


class RestartTest(unittest.TestCase):
    def test_restart_and_sigterm_under_load(self):
        data = tempfile.mkdtemp(prefix="ms-restart-")
        server = start(data)
        c = Client(server.grpc_target)
        ns = uid("r")
        e = c.PutMemory(namespace=ns, key="a", value=b"kept")
        s = c.SyncMemory(namespace=ns, replica_id="r1", changes=[Change(key="b", value=b"x", hlc=9)])
        stop = threading.Event()
        results = {"ok": 0, "failed": 0}

        def load():
            cl = Client(server.grpc_target)
            i = 0
            while not stop.is_set():
                try:
                    cl.PutMemory(namespace=ns, key="load", value=b"%d" % i, timeout=10)
                    results["ok"] += 1
                except grpc.RpcError:
                    results["failed"] += 1
                    if server.proc.poll() is not None:
                        break
                i += 1
            cl.close()

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        lib.poll_until(lambda: results["ok"] >= 30, 60, what="load")
        server.send_signal(signal.SIGTERM)
        rc = server.stop()
        stop.set()
        for t in threads:
            t.join(30)
        c.close()
        self.assertEqual(rc, 0, server.log())
        server = start(data)
        c = Client(server.grpc_target)
        try:
            g = c.GetMemory(namespace=ns, key="a")
            self.assertEqual((g.value, g.version, g.position), (b"kept", 1, e.position))
            load = c.GetMemory(namespace=ns, key="load")
            self.assertGreaterEqual(load.version, results["ok"])
            # the resend after a restart is still a no-op
            again = c.SyncMemory(namespace=ns, replica_id="r1", cursor=s.cursor,
                                 changes=[Change(key="b", value=b"x", hlc=9)])
            self.assertEqual(len(again.applied), 0)
        finally:
            c.close()
            self.assertEqual(server.stop(), 0)


class MasterKeyFileTest(unittest.TestCase):
    def test_stale_master_files_swept_and_missing_master_refused(self):
        data = tempfile.mkdtemp(prefix="ms-master-")
        server = start(data)
        c = Client(server.grpc_target)
        c.PutMemory(namespace="m", key="a", value=b"v")
        c.close()
        self.assertEqual(server.stop(), 0)
        (current,) = glob.glob(os.path.join(data, "memory-master-*.key"))
        # a rotation that crashed before its commit leaves the next file
        stray = os.path.join(data, "memory-master-7.key")
        with open(stray, "wb") as f:
            f.write(b"\1" * 64)
        server = start(data)
        c = Client(server.grpc_target)
        self.assertEqual(c.GetMemory(namespace="m", key="a").value, b"v")
        c.close()
        self.assertEqual(server.stop(), 0)
        self.assertFalse(os.path.exists(stray))
        self.assertTrue(os.path.exists(current))
        # without its master key the store is unreadable: refuse to start
        os.rename(current, current + ".moved")
        out = subprocess.run([BINARY, "--data-dir=" + data, "--listen=127.0.0.1:0",
                              "--admin=127.0.0.1:0", "--nats-url="],
                             capture_output=True, timeout=60, check=False)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(b"master key file", out.stderr)
        os.rename(current + ".moved", current)
        server = start(data)
        c = Client(server.grpc_target)
        self.assertEqual(c.GetMemory(namespace="m", key="a").value, b"v")
        c.close()
        self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
