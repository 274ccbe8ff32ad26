/**
 * DANE-4 (derived): at start-up, ask the resolver for a name that must validate and one
 * that must fail validation. A validating resolver answers the first with AD=1 and the
 * second with SERVFAIL; anything else means DANE would silently not apply.
 */
import type { Resolver } from './types.js';

export interface SelfTestResult { ok: boolean; detail: string; signed: string; broken: string }

export async function selfTest(resolver: Resolver, names = { signed: 'ietf.org', broken: 'dnssec-failed.org' }): Promise<SelfTestResult> {
  const [good, bad] = await Promise.all([resolver.lookup(names.signed, 'A'), resolver.lookup(names.broken, 'A')]);
  const signed = good.error ? `error ${good.error.kind}` : good.status;
  const broken = bad.error ? `error ${bad.error.kind}` : bad.status;
  if (good.status === 'secure' && !good.error && bad.error) return { ok: true, detail: 'resolver validates', signed, broken };
  if (good.error) return { ok: false, detail: `signed name ${names.signed} did not resolve (${signed}); resolver unreachable or broken`, signed, broken };
  if (good.status !== 'secure') return { ok: false, detail: `signed name ${names.signed} came back ${signed}: the resolver does not set AD (not validating)`, signed, broken };
  return { ok: false, detail: `broken name ${names.broken} came back ${broken}: the resolver does not reject bogus answers`, signed, broken };
}
