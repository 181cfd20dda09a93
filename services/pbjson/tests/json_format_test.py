"""Cross-checks pbjson against protobuf's own proto3 JSON implementation
(google.protobuf.json_format, an independent implementation of the same
spec). For every message type of the API, random messages are written to
JSON by both and the JSON values must be equal; each side's JSON must read
back, through the other, to an equal message.

usage: json_format_test.py PBJSON_TOOL DESCRIPTOR_SET
"""
import json
import math
import random
import subprocess
import sys

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format
from google.protobuf import message_factory

FD = descriptor.FieldDescriptor
ROUNDS = 40
rng = random.Random(20261122)

ALPHABET = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f",
            "é", "€", "😀", "<", "&", "'"]


def rand_string():
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))


def rand_value(field, depth):
    t = field.type
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return rng.choice([0, 1, -1, 2**31 - 1, -2**31, rng.randint(-2**31, 2**31 - 1)])
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return rng.choice([0, 1, 2**32 - 1, rng.randint(0, 2**32 - 1)])
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return rng.choice([0, -1, 2**63 - 1, -2**63, rng.randint(-2**63, 2**63 - 1)])
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return rng.choice([0, 2**64 - 1, 2**53 + 1, rng.randint(0, 2**64 - 1)])
    if t == FD.TYPE_DOUBLE:
        return rng.choice([0.0, 0.1, -2.5, 1e300, 5e-324, 123456.789, float("inf"),
                           float("-inf"), float("nan"), rng.uniform(-1e6, 1e6)])
    if t == FD.TYPE_FLOAT:
        return rng.choice([0.0, 0.5, -2.25, 1024.0])
    if t == FD.TYPE_BOOL:
        return rng.choice([True, False])
    if t == FD.TYPE_STRING:
        return rand_string()
    if t == FD.TYPE_BYTES:
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 9)))
    if t == FD.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    raise AssertionError(t)


def fill(msg, depth=0):
    d = msg.DESCRIPTOR
    if d.full_name == "google.protobuf.Any":
        return  # Any is covered by the C tests with a resolvable payload
    chosen_oneofs = {o.name: rng.choice(o.fields) for o in d.oneofs}
    for f in d.fields:
        if f.containing_oneof is not None:
            if chosen_oneofs[f.containing_oneof.name] is not f or rng.random() < 0.3:
                continue
        elif rng.random() < 0.25:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            m = getattr(msg, f.name)
            for _ in range(rng.randint(0, 3)):
                k = rand_value(kf, depth)
                if vf.message_type is not None:
                    if depth < 3:
                        fill(m[k], depth + 1)
                else:
                    m[k] = rand_value(vf, depth)
        elif f.label == FD.LABEL_REPEATED:
            seq = getattr(msg, f.name)
            for _ in range(rng.randint(0, 3)):
                if f.message_type is not None:
                    if depth < 3:
                        fill(seq.add(), depth + 1)
                else:
                    seq.append(rand_value(f, depth))
        elif f.message_type is not None:
            if depth < 3:
                fill(getattr(msg, f.name), depth + 1)
                getattr(msg, f.name).SetInParent()
        else:
            setattr(msg, f.name, rand_value(f, depth))


def normalise(v):
    """JSON values compare equal when numbers are the same double."""
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items()}
    if isinstance(v, list):
        return [normalise(x) for x in v]
    if isinstance(v, float) and v == int(v) and abs(v) < 2**53:
        return int(v)
    return v


def main():
    tool, desc_path = sys.argv[1], sys.argv[2]
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(desc_path, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    factory = message_factory.MessageFactory(pool)
    names = []
    for f in fds.file:
        if f.package != "agentmesh.v1":
            continue
        for m in f.message_type:
            names.append("agentmesh.v1." + m.name)
    proc = subprocess.Popen([tool], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(line):
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().rstrip("\n")

    checked = failures = 0
    for name in sorted(names):
        cls = factory.GetPrototype(pool.FindMessageTypeByName(name))
        for _ in range(ROUNDS):
            msg = cls()
            fill(msg)
            wire = msg.SerializeToString()
            ours = ask("encode %s %s" % (name, wire.hex()))
            theirs = json_format.MessageToJson(msg, indent=None, descriptor_pool=pool)
            checked += 1
            if ours.startswith("ERR"):
                print("FAIL %s: pbjson refused to write: %s" % (name, ours))
                failures += 1
                continue
            if normalise(json.loads(ours)) != normalise(json.loads(theirs)):
                print("FAIL %s: JSON differs\n  pbjson:     %s\n  json_format: %s" % (name, ours, theirs))
                failures += 1
                continue
            # json_format reads what pbjson wrote ...
            back = cls()
            json_format.Parse(ours, back, descriptor_pool=pool)
            # ... and pbjson reads what json_format wrote.
            answer = ask("decode %s %s" % (name, theirs))
            if answer.startswith("ERR"):
                print("FAIL %s: pbjson refused json_format's JSON: %s\n  %s" % (name, answer, theirs))
                failures += 1
                continue
            mine = cls.FromString(bytes.fromhex(answer))
            # NaN != NaN, so compare messages through their canonical JSON.
            # Map order is not significant: compare parsed JSON values.
            canon = lambda m: json_format.MessageToJson(m, indent=None, descriptor_pool=pool)
            want = json.loads(theirs)
            if json.loads(canon(back)) != want or json.loads(canon(mine)) != want:
                print("FAIL %s: message changed through JSON\n  want %s\n  json_format read %s\n  pbjson read %s"
                      % (name, theirs, canon(back), canon(mine)))
                failures += 1
    proc.stdin.close()
    proc.wait()
    print("%d messages of %d types cross-checked, %d failed" % (checked, len(names), failures))
    sys.exit(1 if failures or checked == 0 else 0)


if __name__ == "__main__":
    main()
