/** Submitting mail to the relay as an application would: nodemailer's SMTP client on loopback. */
import nodemailer from 'nodemailer';

export interface SubmitOptions {
  port: number;
  host?: string;
  from: string;
  to: string[];
  subject?: string;
  text?: string;
  raw?: string | Buffer;
}

export async function submit(o: SubmitOptions): Promise<{ response: string; queueId: string }> {
  const t = nodemailer.createTransport({ host: o.host ?? '127.0.0.1', port: o.port, secure: false, ignoreTLS: true, tls: { rejectUnauthorized: false } });
  try {
    const info = await t.sendMail(
      o.raw !== undefined
        ? { envelope: { from: o.from, to: o.to }, raw: o.raw }
        : { from: o.from, to: o.to, subject: o.subject ?? 'test', text: o.text ?? 'hello\n' },
    );
    const m = /queued as (\S+)/.exec(info.response);
    return { response: info.response, queueId: m?.[1] ?? '' };
  } finally {
    t.close();
  }
}
