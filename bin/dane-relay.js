#!/bin/sh
//bin/true; exec node --initial-old-space-size=64 "$0" "$@"
// Thin launcher: the compiled CLI lives in dist/ (run `npm run build` first).
//
// The two lines above are read twice. Run as a program (the installed `dane-relay`, the systemd unit,
// `npm start`), the kernel hands this file to /bin/sh, which runs //bin/true (that is /bin/true: it does
// nothing) and then `exec`s node with the flag and this same file: one process, as with
// `#!/usr/bin/env node`. Node skips the `#!` line and reads the second as a comment. Any POSIX sh does
// this (dash, bash, busybox), where `#!/usr/bin/env -S node …` needs GNU env (not busybox's, as on Alpine).
//
// --initial-old-space-size=64 (MB): V8 starts a full mark-compact whenever the old generation's headroom
// falls below the young generation's capacity, and off-heap Buffers (every message body passes through a
// few) count against that headroom. With V8's small start-up limits a relay under load collected the whole
// heap about four times a second at 50 KB messages: 20-27 full collections in a 2,000-message run. With
// 64 MB it is 5-7, and V8's helper threads (which do that marking) use about a third less CPU (issue 17).
// It is a threshold, not a reservation: memory is taken only as the heap grows (peak PSS the same in a
// 2,000-message run; about 30 MB more in a 10,000-message one, BENCHMARKS.md). `node bin/dane-relay.js`
// runs without it; tests that spawn node that way read the flags from line 2 (test/support/build.ts).
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
