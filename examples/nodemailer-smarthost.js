// An application sending through dane-relay as its smarthost, with nodemailer.
// Run: SMARTHOST_HOST=127.0.0.1 SMARTHOST_PORT=2525 node examples/nodemailer-smarthost.js
// (MAIL_FROM and MAIL_TO choose the envelope; defaults shown below.)
//
// dane-relay listens on loopback and relays for loopback clients (relay_clients), so no
// TLS and no AUTH on this hop; DANE applies on the hop dane-relay makes to the recipient's MX.
// With ingress.tls and ingress.users_file set, use `requireTLS: true` and `auth: { user, pass }`.
import nodemailer from 'nodemailer';

const transport = nodemailer.createTransport({
  host: process.env.SMARTHOST_HOST ?? '127.0.0.1',
  port: Number(process.env.SMARTHOST_PORT ?? 2525),
  secure: false,      // plain SMTP on loopback...
  ignoreTLS: true,    // ...the relay offers no STARTTLS unless ingress.tls is configured
  pool: false,
});

const info = await transport.sendMail({
  from: process.env.MAIL_FROM ?? 'app@example.net',
  to: process.env.MAIL_TO ?? 'user@example.org',
  subject: 'Hello through dane-relay',
  text: 'Sent by nodemailer via the dane-relay smarthost.\n',
});

// "250 2.0.0 Ok: queued as <id>": the message is durable in dane-relay's spool.
console.log(info.response);
transport.close();
