/**
 * Figures of the hostile-conditions suite → RELIABILITY.md.
 *
 * Every case records one row (sent, acknowledged, delivered, duplicated, lost, leaked, inputs
 * fuzzed, crashes). Test files run in separate worker processes, so each row is kept as a small
 * JSON file (one per case, the latest run wins) and RELIABILITY.md is rewritten from all of them
 * every time a row arrives: whichever file finishes last leaves the complete table. Rows carry
 * the scale and the time they were measured, so a table mixing runs says so.
 *
 * Lost = 0 and leaked = 0 are the only passing values; the tests assert them, the table shows them.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../../support/build.js';

/** FAULTS_SCALE=10 (npm run soak) multiplies message counts, fuzz iterations, kills. */
export const SCALE = Math.max(1, Number(process.env.FAULTS_SCALE ?? '1') || 1);

export interface Row {
  /** case name, e.g. "crash: SIGKILL under load" */
  case: string;
  sent?: number;
  acknowledged?: number;
  delivered?: number;
  duplicated?: number;
  lost: number;
  leaked: number;
  fuzzed?: number;
  crashes?: number;
  /** anything else worth a number: kills, timeouts fired, peak RSS */
  notes?: string;
}

interface Stored extends Row { scale: number; at: string; ms?: number }

const RESULTS = process.env.FAULTS_RESULTS_DIR ?? join(tmpdir(), 'dane-relay-faults-results');
/** FAULTS_REPORT=<file> writes the table elsewhere (e.g. a soak run that must not replace the CI figures). */
export const REPORT_FILE = process.env.FAULTS_REPORT ?? join(ROOT, 'RELIABILITY.md');

/** Order of the table; cases not listed here follow in name order. */
const ORDER = ['crash', 'full disk', 'hostile peers', 'garbage DNS', 'garbage SMTP', 'active attacker', 'open relay'];

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

const started = Date.now();

/** Prints the row and rewrites RELIABILITY.md. */
export function record(row: Row): void {
  const stored: Stored = { ...row, scale: SCALE, at: new Date().toISOString(), ms: Date.now() - started };
  console.log(`[faults] ${row.case}: ${fmt(stored)}`);
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, `${slug(row.case)}.json`), JSON.stringify(stored));
  writeReport();
}

function fmt(r: Stored): string {
  const parts = Object.entries({ sent: r.sent, acknowledged: r.acknowledged, delivered: r.delivered, duplicated: r.duplicated, lost: r.lost, leaked: r.leaked, fuzzed: r.fuzzed, crashes: r.crashes })
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  return parts.join(' ') + (r.notes ? ` (${r.notes})` : '');
}

function rangeOf(rows: Stored[]): string {
  const ts = rows.map((r) => r.at).sort();
  if (ts.length === 0) return 'never';
  const f = (t: string) => t.slice(0, 16).replace('T', ' ');
  return ts[0] === ts[ts.length - 1] || f(ts[0]!) === f(ts[ts.length - 1]!) ? `${f(ts[0]!)} UTC` : `${f(ts[0]!)} – ${f(ts[ts.length - 1]!)} UTC`;
}

function rank(name: string): number {
  const i = ORDER.findIndex((p) => name.startsWith(p));
  return i < 0 ? ORDER.length : i;
}

export function writeReport(): void {
  let rows: Stored[] = [];
  try {
    rows = readdirSync(RESULTS).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(readFileSync(join(RESULTS, f), 'utf8')) as Stored);
  } catch {
    return;
  }
  rows.sort((a, b) => rank(a.case) - rank(b.case) || a.case.localeCompare(b.case));
  const cell = (v: number | undefined) => (v === undefined ? '–' : String(v));
  const scales = [...new Set(rows.map((r) => r.scale))];
  const command = scales.length === 1 && scales[0]! > 1 ? `npm run soak   # FAULTS_SCALE=${scales[0]}` : 'npm run build && npx vitest run test/faults   # also part of npm test';
  const lines = [
    '# Reliability under hostile conditions',
    '',
    'Written by the fault suite (`test/faults/`, rows collected by `test/faults/support/report.ts`). Every row is a real run:',
    'real relay (in-process or as a child process that is SIGKILLed), real sockets on loopback, real TLS, real DNS messages,',
    'real files with fsync (the crash and SMTP-fuzz spools live on a tmpfs when the machine allows it, for speed: a SIGKILL',
    'does not drop the page cache, so they prove ordering, not power-loss durability; the full-disk case needs the tmpfs).',
    '**Lost = 0 and leaked = 0 are the only passing values**; the tests fail otherwise. Cases with random inputs print',
    'their seed; `FAULTS_SEED=<seed>` replays one.',
    '',
    'Command that produced this table:',
    '',
    '```sh',
    command,
    '```',
    '',
    '| case | sent | acknowledged | delivered | duplicated | lost | leaked | inputs fuzzed | crashes | scale | notes |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows.map((r) => `| ${r.case} | ${cell(r.sent)} | ${cell(r.acknowledged)} | ${cell(r.delivered)} | ${cell(r.duplicated)} | **${r.lost}** | **${r.leaked}** | ${cell(r.fuzzed)} | ${cell(r.crashes)} | ${r.scale} | ${(r.notes ?? '').replace(/\|/g, '\\|')} |`),
    '',
    'Columns: *sent* = messages submitted (or attempts made); *acknowledged* = answered 250 by the relay; *delivered* =',
    'distinct messages that reached the receiver (or bounced with a DSN where the receiver refused them for good);',
    '*duplicated* = extra copies at the receiver (allowed only for deliveries in flight at a kill, and for messages whose',
    '250 was lost in a kill so that the client sent them again); *lost* = acknowledged but never delivered nor still queued; *leaked* = envelope or body bytes seen by an attacker,',
    'or a message accepted for relaying from someone not allowed to relay, or a delivery without the protection the',
    'destination demands; *inputs fuzzed* = mutated inputs fed to the code under test; *crashes* = relay process exits',
    'or exceptions not caused by the test. Measured ' + rangeOf(rows) + '.',
    '',
  ];
  writeFileSync(REPORT_FILE, lines.join('\n'));
}
