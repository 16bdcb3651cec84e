/** A fixed-capacity ring: the oldest entry goes when a new one comes. Bounds every live series. */
export class Ring<T> {
  private items: T[] = [];
  private start = 0;
  constructor(readonly capacity: number) {
    if (!(capacity >= 1)) throw new Error('a ring needs a capacity of at least 1');
  }
  push(x: T): void {
    if (this.items.length < this.capacity) this.items.push(x);
    else {
      this.items[this.start] = x;
      this.start = (this.start + 1) % this.capacity;
    }
  }
  get size(): number {
    return this.items.length;
  }
  /** Oldest first. */
  toArray(): T[] {
    return [...this.items.slice(this.start), ...this.items.slice(0, this.start)];
  }
  last(): T | undefined {
    return this.items.length === 0 ? undefined : this.items[(this.start + this.items.length - 1) % this.items.length];
  }
  clear(): void {
    this.items = [];
    this.start = 0;
  }
}
