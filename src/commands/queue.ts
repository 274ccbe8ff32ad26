/**
 * `dane-relay queue SUBCOMMAND [ARG] [--config FILE] [--json]`.
 * Exit codes as the rest of the CLI: 0 ok, 1 runtime failure (no such message, spool locked
 * by an unresponsive relay, unreadable spool files), 2 usage or configuration error.
 */
import { loadConfig } from '../config/load.js';
import { formatListing, shownMessage } from '../spool/inspect.js';
import { COMMANDS, ControlError, formatResult, parseRequest, type CommandName } from '../control/commands.js';
import { runQueueCommand } from '../control/client.js';
import { dropForCli } from '../files/privileges.js';
import { printableJson } from '../text/printable.js';
import { flag, stringOpt, UsageError, type ParsedArgs } from './args.js';
import { filterListing, formatShape, parseStateFilter, queueShape, type ListingFilter } from '../control/views.js';
import { configFileFor } from '../config/path.js';

/** `sub`: one of COMMANDS (the dispatcher's table has one entry per subcommand); at most one operand. */
export async function queueCli(sub: CommandName, p: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const configFile = configFileFor(stringOpt(p, 'config'), err);
  const json = flag(p, 'json');
  const [arg] = p.operands;
  if (!configFile) {
    err.write(`usage: dane-relay queue ${COMMANDS.join('|')} [ID|DOMAIN] [--config FILE] [--json]\n`);
    return 2;
  }
  let req: ReturnType<typeof parseRequest>;
  let filter: ListingFilter = {};
  try {
    if (sub === 'list') filter = listingFilter(p);
    // text `show` prints the header section too (postcat -q -h); --body the whole message; --json only with --body
    const content = sub === 'show' ? (flag(p, 'body') ? 'message' : json ? undefined : 'headers') : undefined;
    req = parseRequest(
      sub === 'list' || sub === 'flush'
        ? arg === undefined
          ? { cmd: sub }
          : sub === 'flush'
            ? { cmd: sub, domain: arg }
            : { cmd: sub, id: arg }
        : { cmd: sub, id: arg, ...(content ? { content } : {}) },
    );
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`dane-relay queue ${sub}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ControlError) {
      err.write(`dane-relay queue ${sub}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const config = loadConfig(configFile);
  // Root with `user:` set: work as the relay's user, so what this creates in the spool stays the relay's
  // (and its control socket, 0600, is reachable).
  dropForCli(config);
  const r = await runQueueCommand(config, req);
  if (r.warning) err.write(`dane-relay queue ${sub}: warning: ${r.warning}\n`);
  if (!r.response.ok) {
    if (json) out.write(`${printableJson(r.response, 2)}\n`);
    err.write(`dane-relay queue ${sub}: ${r.response.error}\n`);
    return r.response.code === 'EINVAL' ? 2 : 1;
  }
  let res = r.response.result;
  if (res.cmd === 'list') res = { ...res, listing: filterListing(res.listing, filter) };
  // `queue list --json` keeps its shape: the listing itself ({messages, unreadable}); `show --json --body` adds the content.
  if (json)
    out.write(
      `${printableJson(
        res.cmd === 'list'
          ? { ...res.listing, messages: res.listing.messages.map(shownMessage) }
          : res.cmd === 'show'
            ? res.content
              ? { ...shownMessage(res.message), ...res.content }
              : shownMessage(res.message)
            : res,
        2,
      )}\n`,
    );
  else out.write(formatResult(res, Date.now(), formatListing));
  return res.cmd === 'list' && res.listing.unreadable.length ? 1 : 0;
}

/** `--domain D --state S` as a filter; a bad value is a usage error. */
function listingFilter(p: ParsedArgs): ListingFilter {
  const f: ListingFilter = {};
  const domain = stringOpt(p, 'domain');
  const state = stringOpt(p, 'state');
  if (domain !== undefined) {
    if (!/^[^\s@]+$/.test(domain)) throw new UsageError(`--domain ${JSON.stringify(domain)} is not a domain name`);
    f.domain = domain;
  }
  if (state !== undefined) {
    try {
      f.state = parseStateFilter(state);
    } catch (e) {
      throw new UsageError(`--state: ${(e as Error).message}`);
    }
  }
  return f;
}

/** `dane-relay queue shape`: the listing (from whichever backend answers, as `queue list`) as a domain × age table. */
export async function queueShapeCli(p: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const configFile = configFileFor(stringOpt(p, 'config'), err);
  let filter: ListingFilter;
  try {
    filter = listingFilter(p);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err.write(`dane-relay queue shape: ${e.message}\n`);
    return 2;
  }
  const config = loadConfig(configFile);
  dropForCli(config);
  const r = await runQueueCommand(config, { cmd: 'list' });
  if (r.warning) err.write(`dane-relay queue shape: warning: ${r.warning}\n`);
  if (!r.response.ok) {
    err.write(`dane-relay queue shape: ${r.response.error}\n`);
    return 1;
  }
  if (r.response.result.cmd !== 'list') throw new Error('the queue answered a list request with another result');
  const listing = r.response.result.listing;
  const shape = queueShape(listing, Date.now(), filter);
  out.write(flag(p, 'json') ? `${printableJson(shape, 2)}\n` : formatShape(shape));
  for (const u of listing.unreadable) err.write(`dane-relay queue shape: ${u.id} unreadable: ${u.reason}\n`);
  return listing.unreadable.length ? 1 : 0;
}
