/**
 * A small parser of the Prometheus text exposition format (0.0.4), for tests that scrape
 * /metrics over HTTP: `# HELP`/`# TYPE` lines, samples `name{label="value",…} value [timestamp]`.
 * Strict: a line it cannot read fails the test rather than being skipped.
 */
import { request } from 'node:http';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface Scrape {
  samples: Sample[];
  types: Map<string, string>;
  help: Map<string, string>;
}

function unescapeLabel(s: string): string {
  return s.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

export function parsePrometheus(text: string): Scrape {
  const out: Scrape = { samples: [], types: new Map(), help: new Map() };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      (m[1] === 'TYPE' ? out.types : out.help).set(m[2]!, m[3]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([^ ]+)(?: (-?\d+))?$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/gy;
    let pos = 0;
    while (pos < body.length) {
      re.lastIndex = pos;
      const l = re.exec(body);
      if (!l) throw new Error(`bad labels in ${JSON.stringify(line)}`);
      labels[l[1]!] = unescapeLabel(l[2]!);
      pos = re.lastIndex;
    }
    const v = m[3]!;
    // Go's ParseFloat (Prometheus' reader) takes Inf/NaN in any case; prom-client writes "Nan".
    const lower = v.toLowerCase();
    const value = lower === '+inf' || lower === 'inf' ? Infinity : lower === '-inf' ? -Infinity : lower === 'nan' ? NaN : Number(v);
    if (Number.isNaN(value) && lower !== 'nan') throw new Error(`bad value in ${JSON.stringify(line)}`);
    out.samples.push({ name: m[1]!, labels, value });
  }
  return out;
}

/** The value of one series (0 when absent: a counter that never moved has no labelled series). */
export function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const hits = s.samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return hits.reduce((a, x) => a + x.value, 0);
}

export interface HttpReply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

export function httpGet(host: string, port: number, path: string): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: 'GET', timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.end();
  });
}

export async function scrape(host: string, port: number): Promise<Scrape> {
  const r = await httpGet(host, port, '/metrics');
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
  return parsePrometheus(r.body);
}
