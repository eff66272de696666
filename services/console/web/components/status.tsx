import type { ShownError } from "../lib/errors";

/** A failure as its gRPC status and message, announced to screen readers. */
export function ErrorBanner({ error, testId = "error" }: { error: ShownError | undefined; testId?: string }) {
  if (error === undefined) return null;
  return (
    <p class="error" role="alert" data-testid={testId} data-code={error.code}>
      <strong>{error.code}</strong>: {error.message}
    </p>
  );
}

/** The outcome of a write, announced politely. */
export function Done({ text, testId }: { text: string | undefined; testId: string }) {
  return (
    <p class="done" role="status" data-testid={testId}>
      {text ?? ""}
    </p>
  );
}

/** A service that cannot be reached right now: its section says so and keeps what it last showed. */
export function Unreachable({ error, what }: { error: ShownError | undefined; what: string }) {
  if (error === undefined || (error.code !== "UNREACHABLE" && error.code !== "UNAVAILABLE")) return <ErrorBanner error={error} />;
  return (
    <p class="error" role="alert" data-testid="error" data-code={error.code} data-unreachable="true">
      <strong>{what} unreachable</strong> ({error.code}): {error.message}. Retrying every few seconds.
    </p>
  );
}
