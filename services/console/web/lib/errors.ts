import { Code, ConnectError } from "@connectrpc/connect";

/** A failure as the page shows it: the gRPC status name and the service's message. */
export interface ShownError {
  /** INVALID_ARGUMENT, UNAVAILABLE, ... or NETWORK when the browser got no answer at all. */
  readonly code: string;
  readonly message: string;
}

/** A status code as gRPC spells it: INVALID_ARGUMENT, not InvalidArgument (0 is OK). */
export function statusName(code: Code | 0): string {
  if (code === 0) return "OK";
  return (Code[code] ?? `code ${code}`).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * What to show for a failed call to `service` (its name and URL). fetch fails with a TypeError
 * both when a service is down and when it refuses this page's origin (CORS): the browser does
 * not tell the page which, so the message names both.
 */
export function shownError(err: unknown, service: { name: string; url: string }): ShownError {
  if (err instanceof ShownErrorThrown) return err.shown;
  const error = ConnectError.from(err);
  if (err instanceof TypeError || error.cause instanceof TypeError) {
    return {
      code: "UNREACHABLE",
      message: `the ${service.name} at ${service.url} did not answer this page (is it running, and does its CORS_ORIGINS list ${location.origin}?)`,
    };
  }
  return { code: statusName(error.code), message: error.rawMessage };
}

/** An error already in the form the page shows (from the console's own JSON endpoints, or a check of the page). */
export class ShownErrorThrown extends Error {
  constructor(readonly shown: ShownError) {
    super(`${shown.code}: ${shown.message}`);
  }
}

/** gRPC codes of the HTTP statuses the mesh's plain routes answer with (runtime/serve/http-routes.ts). */
const codeOfStatus: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  405: "UNIMPLEMENTED",
  409: "ALREADY_EXISTS",
  413: "RESOURCE_EXHAUSTED",
  429: "RESOURCE_EXHAUSTED",
  501: "UNIMPLEMENTED",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED",
};

/** GET or POST JSON on a plain HTTP route (the console's own, or the Predictor's /v2), failures as ShownErrorThrown. */
export async function fetchJson<T>(url: string, init: RequestInit & { what: string }): Promise<T> {
  let response: Response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ShownErrorThrown({ code: "UNREACHABLE", message: `${init.what} at ${new URL(url, location.href).origin} did not answer this page` });
  }
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!response.ok) {
    const message = (body as { error?: string } | undefined)?.error ?? (text || response.statusText);
    throw new ShownErrorThrown({ code: codeOfStatus[response.status] ?? (response.status >= 500 ? "INTERNAL" : "UNKNOWN"), message });
  }
  return body as T;
}
