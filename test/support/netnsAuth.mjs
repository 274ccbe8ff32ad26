// Runs inside a private network namespace made by test/ingress/netns.test.ts (unshare --net, with
// fd00:: addresses on its loopback): starts the relay CLI, then AUTH sessions over STARTTLS from
// the given source addresses, wave by wave (each wave in parallel), and prints one JSON line:
// { waves: [[{ from, code, text }]], log: "<relay output>" }. Plain JavaScript: it runs as is.
import { spawn } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';

const [cli, config, server, authB64, wavesJson] = process.argv.slice(2);
const waves = JSON.parse(wavesJson);

function lineReader(socket) {
  let buf = '';
  const waiters = [];
  const onData = (d) => {
    buf += d.toString('latin1');
    for (;;) {
      // a complete reply: its last line is "NNN text"
      const m = /^((?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n)/.exec(buf);
      if (!m || !waiters.length) return;
      buf = buf.slice(m[1].length);
      waiters.shift()(m[1]);
    }
  };
  socket.on('data', onData);
  return {
    next: () => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no reply; have ${JSON.stringify(buf)}`)), 20000);
      waiters.push((r) => { clearTimeout(t); resolve(r); });
      onData(Buffer.alloc(0));
    }),
    detach: () => socket.off('data', onData),
  };
}

async function session(from) {
  const plain = net.connect({ host: server, port: 2525, localAddress: from });
  await new Promise((res, rej) => { plain.once('connect', res); plain.once('error', rej); });
  let r = lineReader(plain);
  await r.next();
  plain.write('EHLO client.test\r\n');
  await r.next();
  plain.write('STARTTLS\r\n');
  await r.next();
  r.detach();
  const s = tls.connect({ socket: plain, rejectUnauthorized: false });
  await new Promise((res, rej) => { s.once('secureConnect', res); s.once('error', rej); });
  r = lineReader(s);
  s.write('EHLO client.test\r\n');
  await r.next();
  return { from, socket: s, reader: r };
}

const relay = spawn(process.execPath, [cli, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
let log = '';
relay.stdout.on('data', (d) => { log += d; });
relay.stderr.on('data', (d) => { log += d; });
const deadline = Date.now() + 20000;
while (!log.includes('dane-relay started')) {
  if (Date.now() > deadline || relay.exitCode !== null) { console.log(JSON.stringify({ error: 'relay did not start', log })); process.exit(1); }
  await new Promise((r) => setTimeout(r, 20));
}
const out = [];
for (const wave of waves) {
  const sessions = await Promise.all(wave.map(session));
  for (const x of sessions) x.socket.write(`AUTH PLAIN ${authB64}\r\n`);
  const replies = await Promise.all(sessions.map((x) => x.reader.next()));
  out.push(sessions.map((x, i) => ({ from: x.from, code: Number(replies[i].slice(0, 3)), text: replies[i].slice(4).trim() })));
  for (const x of sessions) x.socket.destroy();
}
relay.kill('SIGTERM');
await new Promise((r) => relay.once('exit', r));
console.log(JSON.stringify({ waves: out, log }));
