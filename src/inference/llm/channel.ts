/**
 * A one-consumer async queue: a producer pushes, ends or fails; the consumer iterates with
 * `for await`. Unbounded by itself — its producers are bounded (a generation's tokens are capped
 * by max_tokens and the context size).
 */
export class Channel<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private done = false;
  private error?: unknown;
  private wake?: () => void;

  push(v: T): void {
    if (this.done) return;
    this.items.push(v);
    this.wake?.();
  }
  end(): void {
    this.done = true;
    this.wake?.();
  }
  fail(e: unknown): void {
    if (this.done) return;
    this.error = e;
    this.done = true;
    this.wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length) {
        yield this.items.shift()!;
        continue;
      }
      if (this.error !== undefined) throw this.error;
      if (this.done) return;
      await new Promise<void>((r) => {
        this.wake = r;
      });
      this.wake = undefined;
    }
  }
}
