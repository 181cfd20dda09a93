// Shared helpers for agentmesh integration tests in Node (@grpc/grpc-js):
// find the workspace (for node_modules and the .proto files) from a runfile,
// load protos with the system include roots, read a server's port file, and
// poll with a deadline.
'use strict';

const fs = require('fs');
const path = require('path');

// The workspace root: resolve this file's runfile symlink into the source
// tree and walk up to the folder holding package.json and WORKSPACE.
function repoRoot(start) {
  if (process.env.AGENTMESH_ROOT) return process.env.AGENTMESH_ROOT;
  let p = path.dirname(fs.realpathSync(start || __filename));
  while (p !== '/') {
    if (fs.existsSync(path.join(p, 'package.json')) &&
        fs.existsSync(path.join(p, 'WORKSPACE'))) return p;
    p = path.dirname(p);
  }
  throw new Error('no workspace root above ' + start);
}

const ROOT = repoRoot();
// Resolve packages from the workspace's node_modules whatever NODE_PATH is.
function requireRoot(name) {
  return require(require.resolve(name, {paths: [ROOT]}));
}

const grpc = requireRoot('@grpc/grpc-js');
const protoLoader = requireRoot('@grpc/proto-loader');

// Loads .proto files (paths relative to an include root) with the project's
// include roots: api/, the runtime's testdata, /usr/include, grpc-proto.
function loadProtos(files, extraIncludes) {
  const def = protoLoader.loadSync(files, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [
      path.join(ROOT, 'api'),
      path.join(ROOT, 'services/common/testdata'),
      '/usr/include',
      '/usr/share/grpc-proto',
    ].concat(extraIncludes || []),
  });
  return grpc.loadPackageDefinition(def);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Calls fn() until it returns a truthy value (or a promise of one) or the
// deadline passes.
async function pollUntil(fn, timeoutMs, what) {
  const deadline = Date.now() + (timeoutMs || 30000);
  let lastErr = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      throw new Error('timed out waiting for ' + (what || 'condition') +
                      (lastErr ? ': ' + lastErr.message : ''));
    }
    await sleep(20);
  }
}

// Reads "grpc=<port>\nadmin=<port>\n" written by a server's --port-file.
function readPortFile(file) {
  const out = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const [k, v] = line.split('=');
    if (k && v) out[k] = parseInt(v, 10);
  }
  return out;
}

// Promise wrapper for a unary call on a grpc-js client.
function unary(client, method, req, opts) {
  return new Promise((resolve, reject) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries((opts && opts.metadata) || {})) md.set(k, v);
    const callOpts = {};
    if (opts && opts.deadlineMs) callOpts.deadline = new Date(Date.now() + opts.deadlineMs);
    client[method](req, md, callOpts, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

module.exports = {ROOT, grpc, protoLoader, loadProtos, pollUntil, readPortFile,
                  repoRoot, sleep, unary};
