// Integration test of memory-sync with Node's @grpc/grpc-js: the real binary
// on free ports with a temporary data directory, protos loaded from the
// source tree. PutMemory/GetMemory with versions and ABORTED, SyncMemory
// between two replicas (apply, conflict, idempotent resend, cursor), a
// WatchMemory change, ForgetNamespace then NOT_FOUND, and health.
// Usage: memory_sync_test.js MEMORY_SYNC
'use strict';

const assert = require('assert');
const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const lib = require(path.resolve('tests/lib/grpc_node.js'));

const BINARY = path.resolve(process.argv[2]);
const {grpc} = lib;
const S = grpc.status;

async function startServer(dataDir) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ms-node-'));
  const portFile = path.join(dir, 'ports');
  const logPath = path.join(dir, 'stderr.log');
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(BINARY, ['--port-file=' + portFile, '--data-dir=' + dataDir,
                              '--listen=127.0.0.1:0', '--admin=127.0.0.1:0', '--nats-url='],
                     {stdio: ['ignore', log, log]});
  let exitCode = null;
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => {
    exitCode = code === null ? 'signal ' + sig : code;
    resolve(exitCode);
  }));
  const ports = await lib.pollUntil(() => {
    if (exitCode !== null) throw new Error('server exited: ' + exitCode);
    return fs.existsSync(portFile) && lib.readPortFile(portFile);
  }, 60000, 'port file');
  return {proc, ports, exited, logPath};
}

function call(client, method, req) {
  return new Promise((resolve, reject) => {
    client[method](req, {deadline: Date.now() + 30000}, (err, rep) => (err ? reject(err) : resolve(rep)));
  });
}

async function expectCode(promise, code, re) {
  try {
    await promise;
  } catch (e) {
    assert.strictEqual(e.code, code, e.message);
    if (re) assert.match(e.details, re);
    return;
  }
  assert.fail('expected status ' + code);
}

async function main() {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'ms-node-data-'));
  const srv = await startServer(data);
  const target = '127.0.0.1:' + srv.ports.grpc;
  const pkgs = lib.loadProtos(['agentmesh/v1/memory.proto', 'grpc/health/v1/health.proto']);
  const creds = grpc.credentials.createInsecure();
  const ms = new pkgs.agentmesh.v1.MemorySync(target, creds);
  const health = new pkgs.grpc.health.v1.Health(target, creds);
  const ns = 'node-' + process.pid;
  try {
    // Put / Get / versions
    const e1 = await call(ms, 'PutMemory', {namespace: ns, key: 'doc', value: Buffer.from('v1'),
                                            content_type: 'text/plain', replica_id: 'node'});
    assert.strictEqual(e1.version, '1');
    assert.strictEqual(e1.replica_id, 'node');
    const e2 = await call(ms, 'PutMemory', {namespace: ns, key: 'doc', value: Buffer.from('v2'),
                                            expected_version: 1});
    assert.strictEqual(e2.version, '2');
    const g = await call(ms, 'GetMemory', {namespace: ns, key: 'doc'});
    assert.strictEqual(g.value.toString(), 'v2');
    assert.strictEqual(g.content_type, ''); // a put replaces the whole entry
    assert.strictEqual(e1.content_type, 'text/plain');
    await expectCode(call(ms, 'PutMemory', {namespace: ns, key: 'doc', value: Buffer.from('x'),
                                            expected_version: 1}), S.ABORTED, /current version is 2/);
    await expectCode(call(ms, 'GetMemory', {namespace: ns, key: 'missing'}), S.NOT_FOUND);
    await expectCode(call(ms, 'PutMemory', {namespace: 'bad ns', key: 'k'}), S.INVALID_ARGUMENT);

    // Sync: replica A applies on version 2, replica B conflicts from version 2
    const now = BigInt(e2.hlc);
    const a = await call(ms, 'SyncMemory', {namespace: ns, replica_id: 'A', changes: [
      {key: 'doc', value: Buffer.from('from-A'), base_version: 2, hlc: String(now + 10n)},
      {key: 'new', value: Buffer.from('n'), base_version: 0, hlc: String(now + 11n)}]});
    assert.deepStrictEqual(a.applied.map((x) => [x.key, x.version]), [['doc', '3'], ['new', '1']]);
    assert.strictEqual(a.conflicts.length, 0);
    const b = await call(ms, 'SyncMemory', {namespace: ns, replica_id: 'B', changes: [
      {key: 'doc', value: Buffer.from('from-B'), base_version: 2, hlc: String(now + 20n)}]});
    assert.strictEqual(b.conflicts.length, 1);
    assert.strictEqual(b.conflicts[0].resolution, 'CLIENT_WON');
    assert.strictEqual(b.conflicts[0].server_entry.value.toString(), 'from-A');
    assert.strictEqual(b.applied[0].version, '4');
    // idempotent resend
    const again = await call(ms, 'SyncMemory', {namespace: ns, replica_id: 'B', cursor: b.cursor,
      changes: [{key: 'doc', value: Buffer.from('from-B'), base_version: 2, hlc: String(now + 20n)}]});
    assert.strictEqual(again.applied.length + again.conflicts.length, 0);
    assert.strictEqual(again.changes.length, 0);
    // a fresh replica pages through everything with its cursor
    let cursor = '';
    const seen = [];
    for (;;) {
      const r = await call(ms, 'SyncMemory', {namespace: ns, replica_id: 'C', cursor, page_size: 2});
      r.changes.forEach((x) => seen.push(x.key + '@' + x.version));
      cursor = r.cursor;
      if (!r.has_more) break;
    }
    assert.deepStrictEqual(seen, ['doc@1', 'doc@2', 'doc@3', 'new@1', 'doc@4']);
    assert.strictEqual((await call(ms, 'GetMemory', {namespace: ns, key: 'doc'})).value.toString(), 'from-B');

    // Watch from the last cursor: the next change arrives
    const watch = ms.WatchMemory({namespace: ns, cursor}, {deadline: Date.now() + 30000});
    const first = new Promise((resolve, reject) => {
      watch.on('data', (m) => resolve(m));
      watch.on('error', (e) => { if (e.code !== S.CANCELLED) reject(e); });
    });
    await call(ms, 'PutMemory', {namespace: ns, key: 'late', value: Buffer.from('L')});
    const m = await first;
    watch.cancel();
    assert.strictEqual(m.entry.key, 'late');
    assert.strictEqual(m.event_type, 'agentmesh.v1.MemoryWritten');

    // Forget, then NOT_FOUND
    const f = await call(ms, 'ForgetNamespace', {namespace: ns});
    assert.strictEqual(f.keys_forgotten, '3');
    await expectCode(call(ms, 'GetMemory', {namespace: ns, key: 'doc'}), S.NOT_FOUND);
    await expectCode(call(ms, 'ListMemory', {namespace: ns}), S.NOT_FOUND);

    for (const service of ['', 'agentmesh.v1.MemorySync', 'agentmesh.v1.EventStore']) {
      const h = await call(health, 'Check', {service});
      assert.strictEqual(h.status, 'SERVING', service);
    }
  } finally {
    ms.close();
    health.close();
    srv.proc.kill('SIGTERM');
    const code = await srv.exited;
    assert.strictEqual(code, 0, fs.readFileSync(srv.logPath, 'utf8'));
  }
  console.log('memory-sync node test: ok');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
