import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span, type Tracer } from "@opentelemetry/api";
import type { TracingSettings } from "../env/settings.js";
import { randomHex } from "./random-ids.js";

/*
 * W3C trace context through the mesh. Every RPC belongs to a trace: the caller's (its
 * `traceparent` header) or a new one. Its trace and span ids go on its log line, and every
 * call it makes to another service carries a `traceparent` naming it as the parent — so one
 * request can be followed across services with grep. With OTEL_EXPORTER_OTLP_ENDPOINT set, the
 * same ids are OpenTelemetry spans exported over OTLP/HTTP (a server span per RPC, a client
 * span per outgoing call); without it, ids are all that is made (no SDK on the hot path).
 */

/** A span of this process: its ids, and children for the calls it makes. */
export interface TraceSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** The traceparent naming this span as the parent, for calls that get no span of their own. */
  readonly traceparent: string;
  /** A child span for an outgoing call: the traceparent to send, and its end. */
  child(name: string): OutgoingCall;
  /** Ends the span (with an error: its status says so). */
  end(error?: { code: string; message: string }): void;
}

export interface OutgoingCall {
  readonly traceparent: string;
  end(error?: { code: string; message: string }): void;
}

/** Starts spans: a server span per RPC (or a root span for work no RPC started, e.g. a scheduled job). */
export interface Tracing {
  /** A span for `name`, child of the caller's `traceparent` when it is a valid one. */
  start(name: string, traceparent: string | null | undefined, kind?: "server" | "internal"): TraceSpan;
  /** Flushes exported spans (before exit). */
  shutdown(): Promise<void>;
}

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The caller's trace and span ids from a W3C traceparent; undefined when absent or malformed. */
export function parseTraceparent(value: string | null | undefined): { traceId: string; spanId: string } | undefined {
  const match = value ? traceparentPattern.exec(value.trim()) : null;
  if (!match || /^0+$/.test(match[1]) || /^0+$/.test(match[2])) return undefined;
  return { traceId: match[1], spanId: match[2] };
}

/**
 * The process's tracing (settings from env/settings.ts): OTLP export when an endpoint is set
 * (spans sent to <endpoint>/v1/traces in batches every scheduleDelayMs), else ids only. The
 * exporter's packages are loaded only when exporting (they cost ~150 ms of every start-up).
 */
export async function createTracing(service: string, settings: TracingSettings): Promise<Tracing> {
  const endpoint = settings.otlpEndpoint;
  if (!endpoint) return idsOnlyTracing;
  const [{ OTLPTraceExporter }, { resourceFromAttributes }, { BatchSpanProcessor, TracerProvider }] = await Promise.all([
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/sdk-trace"),
  ]);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": `mlmesh-${service}` }),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url: `${endpoint.replace(/\/+$/, "")}/v1/traces` }),
        scheduledDelayMillis: settings.scheduleDelayMs,
      }),
    ],
  });
  const tracer = provider.getTracer("mlmesh");
  return {
    start: (name, traceparent, kind = "server") => exportedSpan(tracer, name, parseTraceparent(traceparent), kind === "server" ? SpanKind.SERVER : SpanKind.INTERNAL),
    shutdown: () => provider.shutdown(),
  };
}

function exportedSpan(tracer: Tracer, name: string, parent: { traceId: string; spanId: string } | undefined, kind: SpanKind): TraceSpan {
  const context = parent ? trace.setSpanContext(ROOT_CONTEXT, { ...parent, traceFlags: 1, isRemote: true }) : ROOT_CONTEXT;
  const span = tracer.startSpan(name, { kind }, context);
  const { traceId, spanId } = span.spanContext();
  return {
    traceId,
    spanId,
    traceparent: `00-${traceId}-${spanId}-01`,
    child(childName) {
      const client = tracer.startSpan(childName, { kind: SpanKind.CLIENT }, trace.setSpan(ROOT_CONTEXT, span));
      return { traceparent: `00-${traceId}-${client.spanContext().spanId}-01`, end: (error) => endSpan(client, error) };
    },
    end: (error) => endSpan(span, error),
  };
}

function endSpan(span: Span, error?: { code: string; message: string }): void {
  if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: `${error.code}: ${error.message}` });
  span.end();
}

/** Ids only: what logs and propagation need, at the cost of a few random bytes. */
export const idsOnlyTracing: Tracing = {
  start(_name, traceparent) {
    return new IdsOnlySpan(parseTraceparent(traceparent)?.traceId ?? randomHex(16), randomHex(8));
  },
  shutdown() {
    return Promise.resolve();
  },
};

/** A span that is only its ids; its outgoing calls carry it as their parent. (Methods, not closures: per RPC.) */
class IdsOnlySpan implements TraceSpan, OutgoingCall {
  readonly traceparent: string;

  constructor(
    readonly traceId: string,
    readonly spanId: string,
  ) {
    this.traceparent = `00-${traceId}-${spanId}-01`;
  }

  child(): OutgoingCall {
    return this;
  }

  end(): void {}
}
