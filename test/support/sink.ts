/** A Writable that keeps what a command writes (stdout/stderr of `main()` in-process). */
import { Writable } from 'node:stream';

export function sink(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  return {
    stream: new Writable({
      write(c, _e, cb) {
        chunks.push(c.toString());
        cb();
      },
    }),
    text: () => chunks.join(''),
  };
}
