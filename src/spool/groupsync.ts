/**
 * Group commit for directory fsyncs. Every caller needs a directory fsync that
 * *starts after* its own rename/unlink; callers that arrive while one is running
 * wait for the next one, which then covers all of them. With 50 concurrent
 * submissions that is a handful of directory fsyncs instead of 50, and nobody is
 * answered before a fsync that covers their change has completed.
 */
export class GroupSync {
  private waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private running = false;

  constructor(private readonly syncOnce: () => Promise<void>) {}

  sync(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.running) this.start();
    });
  }

  /** true while a fsync runs or callers wait for one */
  get busy(): boolean {
    return this.running || this.waiting.length > 0;
  }

  private start(): void {
    const batch = this.waiting;
    this.waiting = [];
    this.running = true;
    this.syncOnce()
      .then(
        () => {
          for (const w of batch) w.resolve();
        },
        (e) => {
          for (const w of batch) w.reject(e);
        },
      )
      .finally(() => {
        this.running = false;
        if (this.waiting.length > 0) this.start();
      });
  }
}
