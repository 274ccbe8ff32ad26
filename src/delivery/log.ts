/**
 * The delivery log: one subscriber (delivery/events.ts) turning delivery events into the
 * relay's log lines. Field names and messages are what operators grep for (README, Postfix-like
 * `delivery` lines); keep them stable.
 */
import type { Logger } from 'pino';
import { formatDelays, recipientTlsWord, REQUIRETLS_PROBLEM, type DeliverySubscriber, type HostFailure } from './events.js';
import type { Target } from './types.js';

const where = (t: Target) => `${t.host}[${t.address}]:${t.port}`;

/**
 * The host a recipient line names when no session carried the transaction (issue 21 item 5): the last
 * host actually contacted (Postfix's `relay=`), else none; `hosts` names every MX host that failed, in order.
 */
function triedHosts(hosts: HostFailure[]): { relay?: string; hosts: string[] } {
  let relay: string | undefined;
  const names: string[] = [];
  for (const h of hosts) {
    if (h.kind === 'attempt' || h.kind === 'requiretls') {
      relay = where(h.target);
      names.push(relay);
    } else if (h.kind === 'skipped') names.push(h.host);
  }
  return { ...(relay ? { relay } : {}), hosts: names };
}

export function deliveryLog(log: Logger): DeliverySubscriber {
  return (e) => {
    const domain = e.domain;
    // issue 21 item 5: every line about a message carries its queue id (events of a run name the message being delivered)
    const queue_id = e.queueId;
    switch (e.kind) {
      case 'policy-changed':
        return log.info(
          { queue_id, domain, tls_rule: e.rule, previous_rule: e.previousRule },
          'policy changed while delivering: new session under the new rule',
        );
      case 'mx-insecure':
        return log.debug({ queue_id, domain, mx: e.hosts, mx_status: e.status }, 'MX lookup not secure');
      case 'mx-lookup-failed':
        return; // each recipient's line says why
      case 'mx-capped':
        return log.info(
          { queue_id, domain, mx: e.hosts, not_tried: e.notTried, mx_host_limit: e.limit },
          'MX hosts beyond delivery.mx_host_limit are not tried',
        );
      case 'budget-spent':
        return log.warn(
          { queue_id, domain, not_planned: e.notPlanned, work: e.work },
          'DNSSEC work budget of the message spent: remaining MX hosts not planned',
        );
      case 'host-is-self':
        return log.warn(
          { queue_id, domain, mx: e.host, address: e.address, port: e.port },
          'MX host is this relay (own listen address): hosts at its preference or worse dropped',
        );
      case 'host-skipped':
        return log.info(
          {
            queue_id,
            domain,
            mx: e.host.host,
            skipped: e.skip.reason,
            mx_status: e.host.mxStatus,
            address_status: e.host.addressStatus,
            tlsa_status: e.host.tlsaStatus,
          },
          'MX host skipped',
        );
      case 'attempt-failed': {
        const relay = where(e.target);
        log.info({ queue_id, domain, relay, stage: e.error.stage, error: e.error.message, tls_plan: e.plan.kind }, 'connection attempt failed');
        // DANE-46: the failed authentication is logged; the retry goes over TLS without it, logged `untrusted`.
        if (e.next === 'audit')
          log.warn(
            { queue_id, domain, relay, tls_rule: e.rule, error: e.error.message },
            'DANE audit: authentication failed, delivering over unauthenticated TLS (audit-only policy)',
          );
        return;
      }
      case 'session-opened':
        // STS-45: a `testing` policy's WebPKI failure does not stop the delivery; it is said
        if (e.webpki && !e.webpki.ok)
          return log.warn(
            { domain, mx: e.target.host, sts_verdict: e.webpki.reason, detail: e.webpki.detail },
            'MTA-STS testing: MX certificate fails WebPKI validation (delivered anyway)',
          );
        return;
      case 'rollover-risk': {
        const f = e.finding;
        return log.warn(
          { queue_id, domain, mx: e.host, rollover: f.kind, record: f.record, depth: f.depth, expires: f.expires },
          `DANE rollover risk: ${f.detail}`,
        );
      }
      case 'reset-failed':
        return log.info(
          { queue_id, domain, relay: where(e.target), error: e.error.message },
          'reused connection failed RSET: the message goes over a new connection',
        );
      case 'body-converted':
        return log.info({ queue_id, domain, relay: e.relay, target: e.target }, 'message body converted for the next hop (RFC 6152, RFC 2045)');
      case 'internal-error':
        return log.error(
          { err: e.err, queue_id: e.queueId, domain },
          e.what === 'body-unreadable' ? 'could not read the message body to decide what the next hop gets' : 'delivery failed unexpectedly',
        );
      case 'invariant-breach':
        return log.error(
          { queue_id: e.queueId, domain, breaches: e.breaches },
          'internal invariant breach: not exactly one outcome per recipient (repaired: deferred)',
        );
      case 'exception-applied':
        return log.warn(
          { queue_id: e.queueId, domain, tls_rule: e.rule, level: e.level, instead_of: e.underlying },
          e.connected
            ? 'DANE exception applied: delivered without DANE (danefail list)'
            : 'DANE exception applied: attempted without DANE, deferred (danefail list)',
        );
      case 'sts-lookup-failed':
        return log.error({ queue_id, domain, err: e.error }, 'MTA-STS policy state unavailable; messages wait (never delivered as without MTA-STS)');
      case 'sts-fetch-failed':
        return; // mtasts/policies.ts logs the failed fetch where it happens
      case 'sts-exception-applied':
        return log.warn(
          { queue_id, domain, tls_rule: e.rule, sts_id: e.policy.id, sts_mode: e.policy.policy.mode },
          e.connected
            ? 'MTA-STS exception applied: tls_policy entry wins over the MTA-STS policy'
            : 'MTA-STS exception applied: attempted without the MTA-STS policy, deferred (tls_policy entry)',
        );
      case 'sts-mx-mismatch':
        if (e.policy.policy.mode === 'enforce') return log.info({ queue_id, domain, mx: e.host, skipped: e.reason }, 'MX host skipped');
        return log.warn(
          { queue_id, domain, mx: e.host, sts_id: e.policy.id, mx_patterns: e.policy.policy.mx },
          'MTA-STS testing: MX host matches no mx pattern (delivered anyway)',
        );
      case 'requiretls-host-refused':
        return log.info({ queue_id, domain, relay: where(e.target), tls_plan: e.plan.kind, why: REQUIRETLS_PROBLEM[e.problem] }, 'REQUIRETLS: host not used');
      case 'requiretls-run-mismatch':
        return log.error({ queue_id: e.queueId, domain, require_tls: e.messageRequireTls }, 'REQUIRETLS message in the wrong delivery run (internal error)');
      case 'requiretls-dsn-fallback':
        return log.warn(
          { queue_id: e.queueId, domain, dsn: e.code, reason: e.reason },
          'REQUIRETLS: no host qualifies for this DSN; sent without REQUIRETLS (header only, RFC 8689 section 5)',
        );
      case 'recipient': {
        const o = e.outcome;
        const tls = e.session?.tls;
        const tried = !o.relay && e.cause?.kind === 'unreachable' ? triedHosts(e.cause.hosts) : undefined;
        return log.info(
          {
            queue_id: e.queueId,
            to: o.address,
            relay: o.relay ?? tried?.relay ?? 'none',
            ...(tried?.hosts.length ? { mx_hosts: tried.hosts } : {}),
            delay: e.delayMs / 1000,
            delays: formatDelays(e.delays),
            attempt_ms: e.attemptMs,
            status: o.result === 'sent' ? 'sent' : o.result,
            dsn: o.code,
            reply: o.reply,
            reason: o.result === 'sent' ? undefined : o.reason,
            tls: o.relay && tls ? { version: tls.protocol, cipher: tls.cipher, verified: tls.verified } : undefined,
            // Postfix's TLS connection level (vocabulary/words.ts): the word metrics count under `dane` too
            dane: recipientTlsWord(e),
            matched: o.relay ? tls?.verify?.matched : undefined,
            tls_rule: e.rule,
            // RFC 8689 §4.2.2 (RT-31): each delivery the field relaxed says so
            tls_required: e.tlsRequiredNo ? 'no' : undefined,
            dane_exception: e.exception ? true : undefined,
          },
          'delivery',
        );
      }
    }
  };
}
