/**
 * A server-sent events parser (the WHATWG event-stream format): feed it text as it arrives, in
 * chunks cut anywhere, and it returns the complete events. Used by the console's fetch-streaming
 * client, which exists because EventSource cannot send an Authorization header.
 */
export interface SseEvent {
  event: string;
  data: string;
  /** The last `id:` seen so far in the stream (the spec's "last event ID"), if any. */
  id?: string;
}

export class SseParser {
  private buf = '';
  private data: string[] = [];
  private event = '';
  private sawData = false;
  lastId?: string;
  /** Milliseconds from a `retry:` field, if the server sent one. */
  retryMs?: number;

  /** Bound on one unfinished line: a server that never ends a line cannot grow this forever. */
  constructor(private readonly maxLineChars = 4 * 1024 * 1024) {}

  push(chunk: string): SseEvent[] {
    this.buf += chunk;
    const out: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.buf.length; i++) {
      const c = this.buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      // A \r at the very end may be the first half of \r\n: wait for the next chunk.
      if (c === 13 && i === this.buf.length - 1) break;
      const line = this.buf.slice(start, i);
      if (c === 13 && this.buf.charCodeAt(i + 1) === 10) i++;
      start = i + 1;
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    this.buf = this.buf.slice(start);
    if (this.buf.length > this.maxLineChars) throw new Error(`event stream line longer than ${this.maxLineChars} characters`);
    return out;
  }

  private line(line: string): SseEvent | undefined {
    if (line === '') {
      if (!this.sawData) {
        this.event = '';
        return undefined;
      }
      const ev: SseEvent = {
        event: this.event || 'message',
        data: this.data.join('\n'),
        ...(this.lastId !== undefined ? { id: this.lastId } : {}),
      };
      this.data = [];
      this.event = '';
      this.sawData = false;
      return ev;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') {
      this.data.push(value);
      this.sawData = true;
    } else if (field === 'event') this.event = value;
    else if (field === 'id') {
      if (!value.includes('\0')) this.lastId = value;
    } else if (field === 'retry') {
      if (/^\d+$/.test(value)) this.retryMs = Number(value);
    }
    return undefined;
  }
}
