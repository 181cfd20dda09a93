// Integration test of agent-manager with Node's @grpc/grpc-js: the real
// binary on free ports with a temporary data directory, protos loaded from
// the source tree. Every AgentManager RPC, every error code, WatchTask, the
// EventStore read API and health; then a restart that finds the same state.
// Usage: agent_manager_test.js AGENT_MANAGER
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

async function startServer(dataDir, args) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'am-node-'));
  const portFile = path.join(dir, 'ports');
  const logPath = path.join(dir, 'stderr.log');
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(BINARY, ['--port-file=' + portFile, '--data-dir=' + dataDir,
                              '--listen=127.0.0.1:0', '--admin=127.0.0.1:0',
                              '--nats-url=']
                         .concat(args || []),
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

async function stopServer(srv) {
  srv.proc.kill('SIGTERM');
  const code = await srv.exited;
  assert.strictEqual(code, 0, fs.readFileSync(srv.logPath, 'utf8'));
}

function clients(target) {
  const pkgs = lib.loadProtos(['agentmesh/v1/agents.proto',
                               'agentmesh/v1/eventstore.proto',
                               'grpc/health/v1/health.proto']);
  const creds = grpc.credentials.createInsecure();
  return {
    am: new pkgs.agentmesh.v1.AgentManager(target, creds),
    es: new pkgs.agentmesh.v1.EventStore(target, creds),
    health: new pkgs.grpc.health.v1.Health(target, creds),
    close() {
      this.am.close();
      this.es.close();
      this.health.close();
    },
  };
}

async function expectCode(code, promise, contains) {
  try {
    await promise;
  } catch (e) {
    assert.strictEqual(e.code, code, 'got ' + e.code + ': ' + e.details);
    if (contains) assert.ok(e.details.includes(contains), e.details);
    return e;
  }
  throw new Error('expected status ' + code);
}

function collect(stream) {
  return new Promise((resolve, reject) => {
    const out = [];
    stream.on('data', (m) => out.push(m));
    stream.on('end', () => resolve(out));
    stream.on('error', reject);
  });
}

async function main() {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'am-node-data-'));
  const dataDir = path.join(data, 'agents');
  let srv = await startServer(dataDir);
  let c = clients('127.0.0.1:' + srv.ports.grpc);
  const call = (m, req) => lib.unary(c.am, m, req, {deadlineMs: 30000});
  const es = (m, req) => lib.unary(c.es, m, req, {deadlineMs: 30000});
  const ok = (name) => console.log('ok - ' + name);

  // Agents.
  const a = await call('RegisterAgent', {name: 'node', capabilities: ['js'],
                                         labels: {tier: 'x'}, max_concurrency: 1,
                                         agent_id: 'node-agent-1'});
  assert.strictEqual(a.status, 'AGENT_STATUS_ONLINE');
  assert.strictEqual(a.version, '0');
  const g = await call('GetAgent', {agent_id: a.agent_id});
  assert.deepStrictEqual(g.labels, {tier: 'x'});
  const u = await call('UpdateAgent', {agent_id: a.agent_id, labels: {tier: ''},
                                       expected_version: '0'});
  assert.deepStrictEqual(u.labels, {});
  assert.deepStrictEqual(u.capabilities, ['js']);
  const hb = await call('Heartbeat', {agent_id: a.agent_id, active_tasks: 0});
  assert.strictEqual(hb.position, '0');
  ok('register, get, update, heartbeat');

  // Tasks: submit assigns at once; a second waits for capacity.
  const t1 = await call('SubmitTask', {required_capabilities: ['js'], input: '{}',
                                       idempotency_key: 'node-k1'});
  assert.strictEqual(t1.state, 'TASK_STATE_ASSIGNED');
  assert.strictEqual(t1.agent_id, a.agent_id);
  const again = await call('SubmitTask', {idempotency_key: 'node-k1'});
  assert.strictEqual(again.task_id, t1.task_id);
  const t2 = await call('SubmitTask', {required_capabilities: ['js'], priority: 1});
  assert.strictEqual(t2.state, 'TASK_STATE_PENDING');

  // WatchTask follows t1 while this client drives it.
  const watch = c.am.WatchTask({task_id: t1.task_id},
                               {deadline: new Date(Date.now() + 60000)});
  const updates = collect(watch);
  // Drive the task only once the current state arrived: changes made before
  // the watch began are already in that first message.
  await new Promise((resolve) => watch.once('data', resolve));
  const s = await call('StartTask', {task_id: t1.task_id, expected_version: t1.version});
  assert.strictEqual(s.state, 'TASK_STATE_RUNNING');
  await call('ReportProgress', {task_id: t1.task_id, phase: 'p', progress_percent: 40});
  const f = await call('FailTask', {task_id: t1.task_id, error: 'e'});
  assert.strictEqual(f.state, 'TASK_STATE_FAILED');
  // The failure freed the agent: t2 is assigned.
  assert.strictEqual((await call('GetTask', {task_id: t2.task_id})).state,
                     'TASK_STATE_ASSIGNED');
  const r = await call('RetryTask', {task_id: t1.task_id, reason: 'again'});
  assert.strictEqual(r.state, 'TASK_STATE_PENDING');
  assert.strictEqual(r.attempt, 2);
  const x = await call('CancelTask', {task_id: t1.task_id, reason: 'stop'});
  assert.strictEqual(x.state, 'TASK_STATE_CANCELLED');
  const seen = await updates;
  assert.deepStrictEqual(seen.map((m) => m.event_type),
                         ['', 'agentmesh.v1.TaskStarted', 'agentmesh.v1.TaskProgressed',
                          'agentmesh.v1.TaskFailed', 'agentmesh.v1.TaskRetried',
                          'agentmesh.v1.TaskCancelled']);
  await call('StartTask', {task_id: t2.task_id});
  const done = await call('CompleteTask', {task_id: t2.task_id, output: 'fine'});
  assert.strictEqual(done.state, 'TASK_STATE_COMPLETED');
  ok('submit, idempotency, start, progress, fail, retry, cancel, complete, watch');

  // Error codes.
  await expectCode(S.INVALID_ARGUMENT, call('RegisterAgent', {name: ''}));
  await expectCode(S.INVALID_ARGUMENT, call('SubmitTask', {required_capabilities: ['UP']}));
  await expectCode(S.INVALID_ARGUMENT, call('SubmitTask', {input: 'x'.repeat(300 * 1024)}));
  await expectCode(S.NOT_FOUND, call('GetTask', {task_id: 'no-such-task'}));
  await expectCode(S.NOT_FOUND, call('GetAgent', {agent_id: 'no-such-agent'}));
  await expectCode(S.FAILED_PRECONDITION, call('StartTask', {task_id: t2.task_id}),
                   'TASK_STATE_COMPLETED');
  await expectCode(S.ABORTED, call('UpdateAgent', {agent_id: a.agent_id,
                                                   max_concurrency: 2,
                                                   expected_version: '0'}),
                   'version 1');
  await expectCode(S.ALREADY_EXISTS, call('RegisterAgent', {name: 'n',
                                                            agent_id: a.agent_id}));
  await expectCode(S.INVALID_ARGUMENT, es('ReadAll', {limit: 5000}));
  ok('INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS');

  // EventStore API.
  const rs = await es('ReadStream', {stream: 'task-' + t1.task_id, limit: 100});
  assert.deepStrictEqual(rs.events.map((e) => e.type).slice(0, 2),
                         ['agentmesh.v1.TaskSubmitted', 'agentmesh.v1.TaskAssigned']);
  assert.strictEqual(rs.end_of_stream, true);
  assert.strictEqual(rs.events[0].content_type, 'application/x-protobuf');
  const all = await es('ReadAll', {from_position: '1', limit: 1000});
  assert.strictEqual(all.events[0].position, '1');
  const lastPos = Number(all.events[all.events.length - 1].position);
  const sub = c.es.SubscribeAll({from_position: String(lastPos)});
  const live = await new Promise((resolve, reject) => {
    const got = [];
    sub.on('data', (ev) => {
      got.push(ev);
      if (got.length === 2) resolve(got);
    });
    sub.on('error', (e) => { if (e.code !== S.CANCELLED) reject(e); });
    call('DeregisterAgent', {agent_id: a.agent_id, reason: 'bye'}).catch(reject);
  });
  sub.cancel();
  assert.strictEqual(Number(live[0].position), lastPos);
  assert.strictEqual(live[1].type, 'agentmesh.v1.AgentDeregistered');
  ok('ReadStream, ReadAll, SubscribeAll catch-up then live');

  for (const service of ['', 'agentmesh.v1.AgentManager', 'agentmesh.v1.EventStore']) {
    const h = await lib.unary(c.health, 'Check', {service}, {deadlineMs: 10000});
    assert.strictEqual(h.status, 'SERVING');
  }
  ok('health');

  const before = await call('GetTask', {task_id: t1.task_id});
  c.close();
  await stopServer(srv);
  srv = await startServer(dataDir);
  c = clients('127.0.0.1:' + srv.ports.grpc);
  const after = await call('GetTask', {task_id: t1.task_id});
  assert.deepStrictEqual(after, before);
  assert.strictEqual((await call('GetAgent', {agent_id: a.agent_id})).status,
                     'AGENT_STATUS_DEREGISTERED');
  c.close();
  await stopServer(srv);
  fs.rmSync(data, {recursive: true, force: true});
  ok('restart finds the same state');
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
