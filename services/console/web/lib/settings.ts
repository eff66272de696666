import { createContext } from "preact";
import { useContext } from "preact/hooks";

/** How the page calls the services: Connect with JSON or binary messages, or gRPC-web. */
export type Protocol = "connect-json" | "connect-binary" | "grpc-web";

/** Where the browser reaches each service (the page's endpoints data block, from the console's CONSOLE_*_URL). */
export interface Endpoints {
  readonly predictorUrl: string;
  readonly proxyUrl: string;
  readonly batchUrl: string;
  readonly registryUrl: string;
  readonly monitorUrl: string;
}

/** What every page's calls depend on; changing one reloads what the pages show. */
export interface Settings {
  readonly endpoints: Endpoints;
  readonly protocol: Protocol;
  /** The bearer token, kept in this tab's sessionStorage only; "" for none. */
  readonly token: string;
}

export const SettingsContext = createContext<Settings | undefined>(undefined);

export function useSettings(): Settings {
  const settings = useContext(SettingsContext);
  if (settings === undefined) throw new Error("useSettings outside the app");
  return settings;
}

const tokenKey = "mlmesh-token";
const protocolKey = "mlmesh-protocol";

export function savedToken(): string {
  return sessionStorage.getItem(tokenKey) ?? "";
}

export function saveToken(token: string): void {
  sessionStorage.setItem(tokenKey, token);
}

export function savedProtocol(): Protocol {
  const saved = localStorage.getItem(protocolKey);
  return saved === "connect-binary" || saved === "grpc-web" ? saved : "connect-json";
}

export function saveProtocol(protocol: Protocol): void {
  localStorage.setItem(protocolKey, protocol);
}

/** The Authorization header of the page's calls, when a token was given. */
export function authorization(token: string): Record<string, string> {
  return token === "" ? {} : { authorization: `Bearer ${token}` };
}
