// nats_tool.js: an independent NATS client (the `nats` package for Node) for
// integration tests. Prints one JSON object per line.
//   read-stream URL STREAM          every message stored in a JetStream stream
//   subscribe URL SUBJECT N MS      the first N messages on SUBJECT (a "ready"
//                                   line first), or what arrived within MS ms
//   add-stream URL STREAM MAXMSGS   creates STREAM over agentmesh.events.> that
//                                   refuses new messages beyond MAXMSGS
//   delete-stream URL STREAM        deletes STREAM and what it holds
'use strict';
const { connect } = require('nats');

// Live messages carry `headers`, stored JetStream messages `header`.
function hdrs(m) {
  const h = m.headers || m.header;
  const out = {};
  if (h) {
    for (const k of h.keys()) out[k] = h.get(k);
  }
  return out;
}

function body(m) {
  const text = new TextDecoder('utf-8', { fatal: true }).decode(m.data);
  try {
    return { json: JSON.parse(text) };
  } catch (e) {
    return { text };
  }
}

async function readStream(url, stream) {
  const nc = await connect({ servers: url, reconnect: false });
  const jsm = await nc.jetstreamManager();
  const info = await jsm.streams.info(stream);
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    let m;
    try {
      m = await jsm.streams.getMessage(stream, { seq });
    } catch (e) {
      continue; // deleted
    }
    const line = { seq, subject: m.subject, headers: hdrs(m), ...body(m) };
    process.stdout.write(JSON.stringify(line) + '\n');
  }
  await nc.close();
}

async function subscribe(url, subject, n, ms) {
  const nc = await connect({ servers: url, reconnect: false });
  const sub = nc.subscribe(subject, { max: n });
  await nc.flush();
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  const timer = setTimeout(() => sub.unsubscribe(), ms);
  for await (const m of sub) {
    process.stdout.write(JSON.stringify({ subject: m.subject, headers: hdrs(m), ...body(m) }) + '\n');
  }
  clearTimeout(timer);
  await nc.close();
}

async function addStream(url, stream, maxMsgs) {
  const nc = await connect({ servers: url, reconnect: false });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: stream, subjects: ['agentmesh.events.>'], max_msgs: maxMsgs, discard: 'new' });
  process.stdout.write(JSON.stringify({ added: stream }) + '\n');
  await nc.close();
}

async function deleteStream(url, stream) {
  const nc = await connect({ servers: url, reconnect: false });
  const jsm = await nc.jetstreamManager();
  const ok = await jsm.streams.delete(stream);
  process.stdout.write(JSON.stringify({ deleted: ok }) + '\n');
  await nc.close();
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === 'read-stream') return readStream(args[0], args[1]);
  if (cmd === 'subscribe') return subscribe(args[0], args[1], Number(args[2]), Number(args[3]));
  if (cmd === 'add-stream') return addStream(args[0], args[1], Number(args[2]));
  if (cmd === 'delete-stream') return deleteStream(args[0], args[1]);
  throw new Error('usage: nats_tool.js read-stream URL STREAM | subscribe URL SUBJECT N MS | ' +
                  'add-stream URL STREAM MAXMSGS | delete-stream URL STREAM');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
