/**
 * Draws the shipped Grafana dashboard (examples/grafana/dane-relay.json) as an SVG from real /metrics
 * scrapes of a relay (test/metrics/dashboard.test.ts): each panel where the dashboard puts it, its
 * queries evaluated by ./promql.ts — time series as lines over the scrapes, stat and bar-gauge panels at
 * the last scrape. The picture in docs/ is this drawing; it is not a Grafana screenshot.
 */
import { evaluate, parsePromQL, type TimedScrape as Scrape } from './promql.js';

export interface DashboardPanel {
  title: string;
  type: string;
  gridPos: { x: number; y: number; w: number; h: number };
  fieldConfig?: { defaults?: { unit?: string } };
  targets: { expr: string; legendFormat?: string }[];
}

const COL = 50;
const ROW = 30;
const PALETTE = ['#73bf69', '#f2cc0c', '#5794f2', '#ff9830', '#f2495c', '#b877d9', '#8ab8ff', '#fade2a', '#96d98d', '#ffa6b0'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export function legendOf(format: string | undefined, labels: Record<string, string>): string {
  if (!format) return Object.values(labels).join(' ') || 'value';
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k: string) => labels[k] ?? '');
}

export function formatValue(v: number, unit = 'short'): string {
  if (!Number.isFinite(v)) return String(v);
  const r = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2).replace(/\.?0+$/, '') || '0');
  switch (unit) {
    case 's':
      return v >= 86_400
        ? `${r(v / 86_400)} d`
        : v >= 3600
          ? `${r(v / 3600)} h`
          : v >= 60
            ? `${r(v / 60)} min`
            : v >= 1 || v === 0
              ? `${r(v)} s`
              : `${r(v * 1000)} ms`;
    case 'bytes':
      return v >= 2 ** 30 ? `${r(v / 2 ** 30)} GiB` : v >= 2 ** 20 ? `${r(v / 2 ** 20)} MiB` : v >= 1024 ? `${r(v / 1024)} KiB` : `${r(v)} B`;
    case 'percentunit':
      return `${r(v * 100)}%`;
    case 'ops':
      return `${r(v)}/s`;
    default:
      return r(v);
  }
}

/** One series per (target, label set), its value at every scrape (undefined where the query had none). */
function seriesOf(p: DashboardPanel, scrapes: readonly Scrape[]): { name: string; values: (number | undefined)[] }[] {
  const out = new Map<string, (number | undefined)[]>();
  p.targets.forEach((t) => {
    const q = parsePromQL(t.expr);
    scrapes.forEach((_, i) => {
      for (const x of evaluate(q, scrapes, i)) {
        const name = legendOf(t.legendFormat, x.labels);
        const vs = out.get(name) ?? scrapes.map(() => undefined);
        vs[i] = x.value;
        out.set(name, vs);
      }
    });
  });
  // the series that moved first (the legend has room for eight), then by name
  const peak = (vs: (number | undefined)[]) => Math.max(0, ...vs.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  return [...out].map(([name, values]) => ({ name, values })).sort((a, b) => peak(b.values) - peak(a.values) || (a.name < b.name ? -1 : 1));
}

function panelSvg(p: DashboardPanel, scrapes: readonly Scrape[]): string {
  const x = p.gridPos.x * COL + 4;
  const y = p.gridPos.y * ROW + 40;
  const w = p.gridPos.w * COL - 8;
  const h = p.gridPos.h * ROW - 8;
  const unit = p.fieldConfig?.defaults?.unit;
  const parts = [
    `<g transform="translate(${x},${y})">`,
    `<rect width="${w}" height="${h}" rx="3" fill="#181b1f" stroke="#2c3235"/>`,
    `<text x="8" y="18" fill="#d8d9da" font-size="13" font-weight="600">${esc(p.title)}</text>`,
  ];
  const series = seriesOf(p, scrapes);
  const last = series.map((s) => ({ name: s.name, v: s.values.at(-1) })).filter((s): s is { name: string; v: number } => s.v !== undefined);
  if (p.type === 'stat') {
    const shown = last.slice(0, 3);
    shown.forEach((s, i) => {
      const cy = 30 + ((h - 30) / shown.length) * (i + 0.6);
      parts.push(
        `<text x="${w / 2}" y="${cy}" fill="${PALETTE[i % PALETTE.length]}" font-size="${Math.min(28, h / 3)}" text-anchor="middle" font-weight="600">${esc(formatValue(s.v, unit))}</text>`,
      );
      parts.push(`<text x="${w / 2}" y="${cy + 16}" fill="#8e8e8e" font-size="11" text-anchor="middle">${esc(s.name)}</text>`);
    });
    if (!shown.length) parts.push(`<text x="${w / 2}" y="${h / 2}" fill="#8e8e8e" font-size="12" text-anchor="middle">No data</text>`);
  } else if (p.type === 'bargauge') {
    const bars = last.filter((s) => s.v > 0).slice(0, Math.floor((h - 30) / 16));
    const max = Math.max(1, ...bars.map((b) => b.v));
    bars.forEach((b, i) => {
      const by = 28 + i * 16;
      const bw = ((w - 200) * b.v) / max;
      parts.push(`<text x="8" y="${by + 11}" fill="#d8d9da" font-size="11">${esc(b.name.slice(0, 28))}</text>`);
      parts.push(`<rect x="170" y="${by}" width="${Math.max(1, bw)}" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`);
      parts.push(`<text x="${176 + bw}" y="${by + 11}" fill="#d8d9da" font-size="11">${esc(formatValue(b.v, unit))}</text>`);
    });
    if (!bars.length) parts.push(`<text x="${w / 2}" y="${h / 2}" fill="#8e8e8e" font-size="12" text-anchor="middle">No data (queue empty)</text>`);
  } else {
    // time series: x = scrape index over the test run, y from 0 to the largest value
    const legendH = Math.min(4, Math.ceil(series.length / 2)) * 13;
    const plot = { x: 44, y: 28, w: w - 56, h: h - 40 - legendH };
    const all = series.flatMap((s) => s.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
    const max = all.length ? Math.max(...all) : 0;
    const top = max > 0 ? max * 1.1 : 1;
    parts.push(`<line x1="${plot.x}" y1="${plot.y + plot.h}" x2="${plot.x + plot.w}" y2="${plot.y + plot.h}" stroke="#2c3235"/>`);
    parts.push(`<text x="${plot.x - 4}" y="${plot.y + 8}" fill="#8e8e8e" font-size="9" text-anchor="end">${esc(formatValue(top, unit))}</text>`);
    parts.push(`<text x="${plot.x - 4}" y="${plot.y + plot.h}" fill="#8e8e8e" font-size="9" text-anchor="end">0</text>`);
    const n = Math.max(1, scrapes.length - 1);
    series.forEach((s, i) => {
      const pts = s.values.flatMap((v, j) =>
        v === undefined || !Number.isFinite(v) ? [] : [`${(plot.x + (plot.w * j) / n).toFixed(1)},${(plot.y + plot.h - (plot.h * v) / top).toFixed(1)}`],
      );
      const color = PALETTE[i % PALETTE.length];
      if (pts.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.join(' ')}"/>`);
      else if (pts.length === 1) parts.push(`<circle cx="${pts[0]!.split(',')[0]}" cy="${pts[0]!.split(',')[1]}" r="2" fill="${color}"/>`);
      if (i < 8) {
        const lx = 8 + (i % 2) * (w / 2);
        const ly = h - legendH + Math.floor(i / 2) * 13 + 2;
        parts.push(`<rect x="${lx}" y="${ly}" width="8" height="3" fill="${color}"/>`);
        parts.push(`<text x="${lx + 12}" y="${ly + 5}" fill="#c7d0d9" font-size="10">${esc(s.name.slice(0, 40))}</text>`);
      }
    });
    if (!series.length) parts.push(`<text x="${w / 2}" y="${h / 2}" fill="#8e8e8e" font-size="12" text-anchor="middle">No data</text>`);
  }
  parts.push('</g>');
  return parts.join('\n');
}

export function renderDashboardSvg(d: { title: string; panels: DashboardPanel[] }, scrapes: readonly Scrape[], caption: string): string {
  const width = 24 * COL;
  const height = Math.max(...d.panels.map((p) => (p.gridPos.y + p.gridPos.h) * ROW)) + 64;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Inter, Helvetica, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#111217"/>`,
    `<text x="8" y="26" fill="#d8d9da" font-size="18" font-weight="600">${esc(d.title)}</text>`,
    `<text x="${width - 8}" y="26" fill="#8e8e8e" font-size="11" text-anchor="end">${esc(caption)}</text>`,
    ...d.panels.map((p) => panelSvg(p, scrapes)),
    `</svg>`,
    '',
  ].join('\n');
}
