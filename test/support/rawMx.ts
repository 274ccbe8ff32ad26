/**
 * A destination MX that answers with exact bytes: the greeting, EHLO and MAIL go well, every
 * RCPT gets `rcptReply` as sent (escape sequences, invalid UTF-8 and all). smtp-server cannot
 * be made to send a reply line with ESC or stray bytes in it, which is what this is for.
 */
import net from 'node:net';

export interface RawMx {
  host: string;
  port: number;
  /** the bytes answering each RCPT, CRLF included */
  rcptReply: Buffer;
  /** greeting line (CRLF included) */
  greeting: Buffer;
  /** RCPT commands seen */
  rcpts: number;
  close(): Promise<void>;
}

export async function startRawMx(host: string, port: number, rcptReply: Buffer | string): Promise<RawMx> {
  const sockets = new Set<net.Socket>();
  const mx: RawMx = {
    host,
    port,
    rcpts: 0,
    rcptReply: Buffer.from(rcptReply),
    greeting: Buffer.from('220 mx.dest.test ESMTP\r\n'),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.write(mx.greeting);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') s.write('250 mx.dest.test\r\n');
        else if (verb === 'MAIL' || verb === 'RSET' || verb === 'NOOP') s.write('250 2.0.0 ok\r\n');
        else if (verb === 'RCPT') {
          mx.rcpts++;
          s.write(mx.rcptReply);
        } else if (verb === 'QUIT') {
          s.end('221 2.0.0 bye\r\n');
        } else s.write('502 5.5.2 not here\r\n');
      }
    });
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(port, host, () => res());
  });
  mx.port = (server.address() as net.AddressInfo).port;
  return mx;
}
