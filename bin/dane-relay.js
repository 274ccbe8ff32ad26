#!/usr/bin/env node
// Thin launcher: the compiled CLI lives in dist/ (run `npm run build` first).
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
