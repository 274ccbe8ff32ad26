#!/bin/sh
//bin/true; exec node --initial-old-space-size=64 --interrupt-budget=16896 "$0" "$@"
// Thin launcher: the compiled CLI lives in dist/ (run `npm run build` first).
//
// The two lines above are read twice. Run as a program (the installed `dane-relay`, the systemd unit,
// `npm start`), the kernel hands this file to /bin/sh, which runs //bin/true (that is /bin/true: it does
// nothing) and then `exec`s node with the flags and this same file: one process, as with
// `#!/usr/bin/env node`. Node skips the `#!` line and reads the second as a comment. Any POSIX sh does
// this (dash, bash, busybox), where `#!/usr/bin/env -S node …` needs GNU env (not busybox's, as on Alpine).
//
// --initial-old-space-size=64 (MB): V8 starts a full mark-compact whenever the old generation's headroom
// falls below the young generation's capacity, and off-heap Buffers (every message body passes through a
// few) count against that headroom. With V8's small start-up limits a relay under load collected the whole
// heap about four times a second at 50 KB messages: 20-27 full collections in a 2,000-message run. With
// 64 MB it is 5-7, and V8's helper threads (which do that marking) use about a third less CPU (issue 17).
// It is a threshold, not a reservation: memory is taken only as the heap grows (peak PSS the same in a
// 2,000-message run; about 30 MB more in a 10,000-message one, BENCHMARKS.md).
//
// --interrupt-budget=16896 (V8's default is 67584): how much bytecode a function runs between V8's checks
// whether to optimize it. A quarter of the default has the relay's hot paths compiled by TurboFan sooner
// after start. `npm run bench:postfix -- --n 2000 --pairs 8 --sizes 2048,51200 --variant=--interrupt-budget=67584`
// (fresh relays, the default against this, alternating): with the default, the main thread (the relay's
// bottleneck there: it never waits for work) used 14 % more CPU per message at 2 KB and 10 % more at 50 KB,
// and the end-to-end rate was 0.95x and 0.98x (medians of 8 pairs, within the machine's noise); all threads
// together about the same CPU. Seven earlier A/B sets agreed (main thread 6-22 % less with the flag in each).
// Once warm, every hot function is optimized either way.
// A node whose V8 no longer knows a flag refuses to start ("bad option"): the launcher test fails first.
//
// `node bin/dane-relay.js` runs without them; tests that spawn node that way read the flags from line 2 (test/support/build.ts).
import { main } from '../dist/src/cli.js';
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    // main() answers every expected failure with an exit code; anything else is a bug, said as one
    console.error(e);
    process.exitCode = 1;
  },
);
