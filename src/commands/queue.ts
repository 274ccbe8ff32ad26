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
import { flag, stringOpt, type ParsedArgs } from './args.js';
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
  try {
    req = parseRequest(
      sub === 'list' || sub === 'flush'
        ? arg === undefined
          ? { cmd: sub }
          : sub === 'flush'
            ? { cmd: sub, domain: arg }
            : { cmd: sub, id: arg }
        : { cmd: sub, id: arg },
    );
  } catch (e) {
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
  const res = r.response.result;
  // `queue list --json` keeps its shape: the listing itself ({messages, unreadable}).
  if (json)
    out.write(
      `${printableJson(res.cmd === 'list' ? { ...res.listing, messages: res.listing.messages.map(shownMessage) } : res.cmd === 'show' ? shownMessage(res.message) : res, 2)}\n`,
    );
  else out.write(formatResult(res, Date.now(), formatListing));
  return res.cmd === 'list' && res.listing.unreadable.length ? 1 : 0;
}
