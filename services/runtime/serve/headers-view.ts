/**
 * The Fetch Headers interface that connect-style handlers use, over another store of headers
 * (grpc-js Metadata, an HTTP/2 header object) without copying it: a subclass reads and writes
 * the store and names its headers; iteration, in name order as Headers does, is derived here.
 */
export abstract class HeadersView implements Headers {
  abstract get(name: string): string | null;
  abstract set(name: string, value: string): void;
  abstract append(name: string, value: string): void;
  abstract delete(name: string): void;
  /** The names of the headers a handler sees, lowercase, in any order. */
  protected abstract names(): string[];

  has(name: string): boolean {
    return this.get(name) !== null;
  }
  getSetCookie(): string[] {
    return [];
  }
  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) callback.call(thisArg, value, key, this);
  }
  *entries(): Generator<[string, string]> {
    for (const key of this.names().sort()) {
      const value = this.get(key);
      if (value !== null) yield [key, value];
    }
  }
  *keys(): Generator<string> {
    for (const [key] of this.entries()) yield key;
  }
  *values(): Generator<string> {
    for (const [, value] of this.entries()) yield value;
  }
  [Symbol.iterator](): Generator<[string, string]> {
    return this.entries();
  }
}
