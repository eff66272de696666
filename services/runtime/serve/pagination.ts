import { Code, ConnectError } from "@connectrpc/connect";

/** page_size 0 means this many. */
export const defaultPageSize = 100;

/**
 * Pages through an in-memory list in a stable order. The token is the opaque key of the last
 * item returned, so pages neither overlap nor skip items when earlier items are added.
 */
export function pageOf<T>(
  items: readonly T[],
  request: { pageSize: number; pageToken: string },
  keyOf: (item: T) => string,
): { items: T[]; nextPageToken: string } {
  const size = request.pageSize || defaultPageSize;
  let start = 0;
  if (request.pageToken !== "") {
    const after = decodePageToken(request.pageToken);
    start = items.findIndex((item) => keyOf(item) > after);
    if (start === -1) start = items.length;
  }
  const page = items.slice(start, start + size);
  const more = start + size < items.length;
  return { items: page, nextPageToken: more ? encodePageToken(keyOf(page[page.length - 1])) : "" };
}

/** An opaque page token carrying the key of the last item of the previous page. */
export function encodePageToken(lastKey: string): string {
  return Buffer.from(JSON.stringify({ after: lastKey })).toString("base64url");
}

/** The key in a page token; INVALID_ARGUMENT when the token was not made by encodePageToken. */
export function decodePageToken(token: string): string {
  try {
    const decoded = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { after?: unknown };
    if (typeof decoded.after === "string") return decoded.after;
  } catch {
    // fall through
  }
  throw new ConnectError("page_token is not a token returned by this list", Code.InvalidArgument);
}
