import { cors } from "@connectrpc/connect";
import type { CorsOrigins } from "../env/variables.js";
import type { HttpHandler } from "./http-routes.js";

/** Headers our handlers send that browser code may read, beyond the protocols' own. */
const ourExposedHeaders = ["x-request-id"];
/** Headers browser code may send, beyond the protocols' own: a request id, who makes a change, a bearer token. */
const ourAllowedHeaders = ["x-request-id", "x-mlmesh-actor", "authorization"];

/**
 * CORS for gRPC-web and Connect calls from web pages on other origins (a page on
 * http://127.0.0.1:50050 calling the Predictor on :50052 is cross-origin). Answers preflight
 * requests itself and adds Access-Control-Allow-Origin to responses for allowed origins.
 * Without allowed origins the handler is returned as is: browsers then refuse cross-origin
 * calls, and curl, buf curl and server-side clients (which send no Origin) are unaffected.
 */
export function withCors(handler: HttpHandler, origins: CorsOrigins): HttpHandler {
  if (origins !== "*" && origins.length === 0) return handler;
  const allowed = (origin: string) => origins === "*" || origins.includes(origin);
  const exposed = [...cors.exposedHeaders, ...ourExposedHeaders].join(", ");
  return (request, response) => {
    const origin = request.headers.origin;
    if (typeof origin !== "string") return handler(request, response);
    const preflight = request.method === "OPTIONS" && request.headers["access-control-request-method"] !== undefined;
    if (!allowed(origin)) {
      if (!preflight) return handler(request, response); // the browser hides the answer from the page
      response.writeHead(403, { "content-type": "text/plain; charset=utf-8", vary: "Origin" });
      response.end(`origin ${origin} is not in CORS_ORIGINS\n`);
      return;
    }
    response.setHeader("access-control-allow-origin", origin);
    response.setHeader("vary", "Origin");
    if (!preflight) {
      response.setHeader("access-control-expose-headers", exposed);
      return handler(request, response);
    }
    response.writeHead(204, {
      "access-control-allow-methods": cors.allowedMethods.join(", "),
      "access-control-allow-headers": [...cors.allowedHeaders, ...ourAllowedHeaders].join(", "),
      "access-control-max-age": "7200",
    });
    response.end();
  };
}
