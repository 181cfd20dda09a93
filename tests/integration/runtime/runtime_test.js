// Integration test of the gRPC runtime with Node's @grpc/grpc-js: the real
// rpc_echo_server on free ports, protos loaded from the source tree.
// Usage: runtime_test.js SERVER
'use strict';

const assert = require('assert');
const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const lib = require(path.resolve('tests/lib/grpc_node.js'));

const SERVER = path.resolve(process.argv[2]);
const {grpc} = lib;

function httpGet(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({status: res.statusCode, body}));
    }).on('error', reject);
  });
}

function gauge(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

async function startServer(args) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentmesh-node-'));
  const portFile = path.join(dir, 'ports');
  const log = fs.openSync(path.join(dir, 'stderr.log'), 'w');
  const proc = spawn(SERVER, ['--port-file=' + portFile].concat(args || []),
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
  return {proc, ports, exited, logPath: path.join(dir, 'stderr.log')};
}

async function main() {
  const srv = await startServer(['--internal-token=tok']);
  const target = '127.0.0.1:' + srv.ports.grpc;
  const admin = 'http://127.0.0.1:' + srv.ports.admin;
  const pkgs = lib.loadProtos(['echo.proto', 'grpc/health/v1/health.proto']);
  const creds = grpc.credentials.createInsecure();
  const echo = new pkgs.agentmesh.test.Echo(target, creds);
  const health = new pkgs.grpc.health.v1.Health(target, creds);
  const results = [];
  async function test(name, fn) {
    await fn();
    results.push(name);
    console.log('ok - ' + name);
  }

  await test('echo', async () => {
    const r = await lib.unary(echo, 'Echo', {message: 'hi from node'}, {deadlineMs: 30000});
    assert.strictEqual(r.message, 'hi from node');
    assert.strictEqual(r.actor, 'anonymous');
  });

  await test('trusted principal', async () => {
    const r = await lib.unary(echo, 'Echo', {message: 'x'}, {
      deadlineMs: 30000,
      metadata: {'x-agentmesh-principal': 'bob', 'x-agentmesh-internal-token': 'tok'},
    });
    assert.strictEqual(r.actor, 'bob');
  });

  await test('unknown method is UNIMPLEMENTED', async () => {
    const client = new grpc.Client(target, creds);
    const err = await new Promise((resolve) => {
      client.makeUnaryRequest('/agentmesh.test.Echo/Missing', (x) => x, (x) => x,
                              Buffer.alloc(0), new grpc.Metadata(),
                              {deadline: new Date(Date.now() + 30000)},
                              (e) => resolve(e));
    });
    assert.strictEqual(err.code, grpc.status.UNIMPLEMENTED);
    client.close();
  });

  await test('malformed bytes are INVALID_ARGUMENT', async () => {
    const client = new grpc.Client(target, creds);
    const err = await new Promise((resolve) => {
      client.makeUnaryRequest('/agentmesh.test.Echo/Echo', (x) => x, (x) => x,
                              Buffer.from([0x0a, 0x09, 0x61]), new grpc.Metadata(),
                              {deadline: new Date(Date.now() + 30000)},
                              (e) => resolve(e));
    });
    assert.strictEqual(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /agentmesh\.test\.EchoRequest/);
    client.close();
  });

  await test('deadline exceeded', async () => {
    await assert.rejects(lib.unary(echo, 'Block', {}, {deadlineMs: 300}),
                         (e) => e.code === grpc.status.DEADLINE_EXCEEDED);
  });

  await test('rich error details', async () => {
    await assert.rejects(lib.unary(echo, 'Fail', {}, {deadlineMs: 30000}), (e) => {
      assert.strictEqual(e.code, grpc.status.INVALID_ARGUMENT);
      const raw = e.metadata.get('grpc-status-details-bin');
      assert.strictEqual(raw.length, 1);
      assert.ok(raw[0].includes('type.googleapis.com/google.rpc.BadRequest'));
      return true;
    });
  });

  await test('server stream', async () => {
    const got = [];
    await new Promise((resolve, reject) => {
      const call = echo.Count({message: 's', count: 20},
                              {deadline: new Date(Date.now() + 30000)});
      call.on('data', (m) => got.push(m.index));
      call.on('error', reject);
      call.on('end', resolve);
    });
    assert.deepStrictEqual(got, Array.from({length: 20}, (_, i) => i));
  });

  await test('cancelled stream frees the server side', async () => {
    const call = echo.Count({message: 's', count: 0, interval_ms: 5});
    call.on('error', () => {});
    await new Promise((resolve) => {
      let n = 0;
      call.on('data', () => { if (++n === 3) resolve(); });
    });
    await lib.pollUntil(async () => gauge((await httpGet(admin + '/metrics')).body,
                                          'agentmesh_rpc_streams_open') >= 1,
                        30000, 'an open stream');
    call.cancel();
    await lib.pollUntil(async () => gauge((await httpGet(admin + '/metrics')).body,
                                          'agentmesh_rpc_streams_open') === 0,
                        30000, 'the open-stream gauge back at 0');
  });

  await test('health check and watch', async () => {
    const r = await lib.unary(health, 'Check', {service: ''}, {deadlineMs: 30000});
    assert.strictEqual(r.status, 'SERVING');
    const seen = [];
    const watch = health.Watch({service: 'node.svc'});
    watch.on('error', () => {});
    watch.on('data', (m) => seen.push(m.status));
    await lib.pollUntil(() => seen.length >= 1, 30000, 'first watch update');
    assert.strictEqual(seen[0], 'SERVICE_UNKNOWN');
    await lib.unary(echo, 'SetHealth', {service: 'node.svc', serving: true},
                    {deadlineMs: 30000});
    await lib.pollUntil(() => seen.includes('SERVING'), 30000, 'SERVING update');
    watch.cancel();
  });

  await test('admin http', async () => {
    const h = await httpGet(admin + '/healthz');
    assert.strictEqual(h.status, 200);
    const m = await httpGet(admin + '/metrics');
    assert.match(m.body, /agentmesh_rpc_requests_total\{method="\/agentmesh.test.Echo\/Echo",code="OK"\} \d+/);
  });

  echo.close();
  health.close();
  srv.proc.kill('SIGTERM');
  const code = await srv.exited;
  if (code !== 0) {
    console.error(fs.readFileSync(srv.logPath, 'utf8'));
  }
  assert.strictEqual(code, 0);
  console.log('all %d node tests passed', results.length);
}

main().catch((e) => {
  console.error('FAIL:', e);
  process.exit(1);
});
