/**
 * The Message-ID of a message as it streams in (issue 21 item 5: the `queued` log line names it, as
 * Postfix's cleanup logs `message-id=<…>`, so a message can be followed from the sender's log to ours).
 * Reads only the header section (RFC 5322 §2.2: up to the first empty line) of the first bytes kept;
 * unfolds the field (§2.2.3) and returns its value as written, or undefined when there is none.
 */

/** how much of the header section is looked at: a Message-ID after this many octets is not found */
export const MESSAGE_ID_SCAN = 64 * 1024;

export function messageIdOf(head: Buffer): string | undefined {
  const text = head.subarray(0, MESSAGE_ID_SCAN).toString('latin1');
  const end = /\r?\n\r?\n/.exec(text);
  const header = end ? text.slice(0, end.index) : text;
  const m = /(?:^|\n)message-id[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)/i.exec(header);
  if (!m) return undefined;
  const value = m[1]!
    .replace(/\r?\n(?=[ \t])/g, '')
    .replace(/\r$/, '')
    .trim();
  return value === '' ? undefined : Buffer.from(value, 'latin1').toString('utf8').slice(0, 998);
}
