/**
 * Issue 21 item 6: every DSN the suite produces is checked against RFC 3464 / RFC 6522
 * (test/support/dsnGrammar.ts). Receivers and the World's spool record what they saw in the ledger;
 * this fails the test in which a bad DSN appeared (vitest setupFiles: every test file).
 */
import { afterEach } from 'vitest';
import { dsnLedger } from './dsnGrammar.js';

afterEach(() => {
  const bad = dsnLedger.bad.splice(0);
  if (bad.length) throw new Error(`${bad.length} DSN(s) break RFC 3464 / RFC 6522:\n${bad.join('\n')}`);
});
