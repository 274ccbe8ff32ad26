/**
 * Just enough PromQL for the shipped Grafana dashboard (examples/grafana/dane-relay.json), evaluated
 * over a sequence of real /metrics scrapes: selectors with label matchers, rate/increase (over the
 * window between two consecutive scrapes, not the range written in the query), sum/max/min with `by`,
 * histogram_quantile. Anything else is refused, so a dashboard query this cannot read fails the test
 * rather than being drawn wrong. Test support only: the relay never evaluates PromQL.
 */

import type { Sample } from './prom.js';

/** One scrape of /metrics (parsed by ./prom.ts) and when it was taken, seconds. */
export interface TimedScrape {
  t: number;
  samples: Sample[];
}
type Scrape = TimedScrape;
export type Vector = { labels: Record<string, string>; value: number }[];

type Node =
  | { kind: 'selector'; name: string; matchers: [string, string][] }
  | { kind: 'range'; fn: 'rate' | 'increase'; sel: Extract<Node, { kind: 'selector' }> }
  | { kind: 'agg'; op: 'sum' | 'max' | 'min'; by: string[]; arg: Node }
  | { kind: 'quantile'; q: number; arg: Node };

function tokens(s: string): string[] {
  const out: string[] = [];
  const re = /\s*([a-zA-Z_:][a-zA-Z0-9_:]*|\d+(?:\.\d+)?[smhd]?|"(?:[^"\\]|\\.)*"|[(){}[\],=])/y;
  let i = 0;
  while (i < s.length) {
    if (/^\s*$/.test(s.slice(i))) break;
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) throw new Error(`PromQL subset: cannot read "${s.slice(i)}"`);
    out.push(m[1]!);
    i = re.lastIndex;
  }
  return out;
}

export function parsePromQL(src: string): Node {
  const t = tokens(src);
  let p = 0;
  const next = () => t[p++] ?? '';
  const expect = (x: string) => {
    const v = next();
    if (v !== x) throw new Error(`PromQL subset: expected "${x}", got "${v}" in ${src}`);
  };
  const selector = (): Extract<Node, { kind: 'selector' }> => {
    const name = next();
    if (!/^[a-zA-Z_:]/.test(name)) throw new Error(`PromQL subset: expected a metric name, got "${name}" in ${src}`);
    const matchers: [string, string][] = [];
    if (t[p] === '{') {
      next();
      while (t[p] !== '}') {
        const l = next();
        expect('=');
        matchers.push([l, JSON.parse(next()) as string]);
        if (t[p] === ',') next();
      }
      next();
    }
    return { kind: 'selector', name, matchers };
  };
  const expr = (): Node => {
    const w = t[p];
    if (w === 'sum' || w === 'max' || w === 'min') {
      next();
      let by: string[] = [];
      if (t[p] === 'by') {
        next();
        expect('(');
        while (t[p] !== ')') {
          by.push(next());
          if (t[p] === ',') next();
        }
        next();
      }
      expect('(');
      const arg = expr();
      expect(')');
      by = [...by];
      return { kind: 'agg', op: w, by, arg };
    }
    if (w === 'rate' || w === 'increase') {
      next();
      expect('(');
      const sel = selector();
      expect('[');
      if (!/^\d+[smhd]$/.test(next())) throw new Error(`PromQL subset: expected a range in ${src}`);
      expect(']');
      expect(')');
      return { kind: 'range', fn: w, sel };
    }
    if (w === 'histogram_quantile') {
      next();
      expect('(');
      const q = Number(next());
      expect(',');
      const arg = expr();
      expect(')');
      return { kind: 'quantile', q, arg };
    }
    return selector();
  };
  const n = expr();
  if (p !== t.length) throw new Error(`PromQL subset: unexpected "${t[p]}" in ${src}`);
  return n;
}

/** The metric names a query reads. */
export function metricNames(n: Node): string[] {
  switch (n.kind) {
    case 'selector':
      return [n.name];
    case 'range':
      return [n.sel.name];
    case 'agg':
    case 'quantile':
      return metricNames(n.arg);
  }
}

const key = (l: Record<string, string>) =>
  JSON.stringify(
    Object.entries(l)
      .filter(([k]) => k !== '__name__')
      .sort(),
  );

function select(s: Scrape, sel: Extract<Node, { kind: 'selector' }>): Vector {
  return s.samples.filter((x) => x.name === sel.name && sel.matchers.every(([k, v]) => x.labels[k] === v)).map((x) => ({ labels: x.labels, value: x.value }));
}

/** The query's instant vector at scrape `i` (a range function needs scrape i-1 too: empty at 0). */
export function evaluate(n: Node, scrapes: readonly Scrape[], i: number): Vector {
  switch (n.kind) {
    case 'selector':
      return select(scrapes[i]!, n);
    case 'range': {
      if (i === 0) return [];
      const before = new Map(select(scrapes[i - 1]!, n.sel).map((x) => [key(x.labels), x.value]));
      const dt = scrapes[i]!.t - scrapes[i - 1]!.t;
      return select(scrapes[i]!, n.sel).flatMap((x) => {
        const b = before.get(key(x.labels));
        if (b === undefined) return [];
        const d = x.value >= b ? x.value - b : x.value; // a counter reset starts again from 0
        return [{ labels: x.labels, value: n.fn === 'rate' ? (dt > 0 ? d / dt : 0) : d }];
      });
    }
    case 'agg': {
      const groups = new Map<string, { labels: Record<string, string>; values: number[] }>();
      for (const x of evaluate(n.arg, scrapes, i)) {
        const labels = Object.fromEntries(n.by.filter((b) => b in x.labels).map((b) => [b, x.labels[b]!]));
        const g = groups.get(key(labels)) ?? { labels, values: [] };
        g.values.push(x.value);
        groups.set(key(labels), g);
      }
      return [...groups.values()].map((g) => ({
        labels: g.labels,
        value: n.op === 'sum' ? g.values.reduce((a, b) => a + b, 0) : n.op === 'max' ? Math.max(...g.values) : Math.min(...g.values),
      }));
    }
    case 'quantile': {
      const groups = new Map<string, { labels: Record<string, string>; buckets: [number, number][] }>();
      for (const x of evaluate(n.arg, scrapes, i)) {
        const { le, ...rest } = x.labels;
        if (le === undefined) continue;
        const g = groups.get(key(rest)) ?? { labels: rest, buckets: [] };
        g.buckets.push([le === '+Inf' ? Infinity : Number(le), x.value]);
        groups.set(key(rest), g);
      }
      return [...groups.values()].flatMap((g) => {
        const b = g.buckets.sort((x, y) => x[0] - y[0]);
        const total = b.at(-1)?.[1] ?? 0;
        if (!(total > 0)) return [];
        // Prometheus' rule: linear interpolation inside the bucket the rank falls in
        const rank = n.q * total;
        let prevLe = 0;
        let prevCount = 0;
        for (const [le, count] of b) {
          if (count >= rank) {
            if (le === Infinity) return [{ labels: g.labels, value: prevLe }];
            return [{ labels: g.labels, value: prevLe + (le - prevLe) * (count === prevCount ? 0 : (rank - prevCount) / (count - prevCount)) }];
          }
          prevLe = le;
          prevCount = count;
        }
        return [];
      });
    }
  }
}
