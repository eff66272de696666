import type { ComponentChildren } from "preact";
import { useEffect, useErrorBoundary, useMemo, useState } from "preact/hooks";
import { LocationProvider, Route, Router, useLocation } from "preact-iso";
import { savedProtocol, savedToken, saveProtocol, saveToken, SettingsContext, type Endpoints, type Protocol } from "./lib/settings";
import { BatchPage, WatchItemPage } from "./pages/batch";
import { CompareExperimentsPage, ExperimentsPage } from "./pages/experiments";
import { ModelPage } from "./pages/model";
import { MonitoringPage } from "./pages/monitoring";
import { ModelsPage } from "./pages/models";
import { NotFoundPage } from "./pages/not-found";
import { ProxyPage } from "./pages/proxy";
import { ServicesPage } from "./pages/services";

const sections = [
  { href: "/models", label: "Models" },
  { href: "/batch", label: "Batch" },
  { href: "/proxy", label: "Proxy" },
  { href: "/services", label: "Services" },
];

/** The page's frame: navigation, the call settings (protocol, token), and one route per page. */
export function App({ endpoints }: { endpoints: Endpoints }) {
  const [protocol, setProtocol] = useState<Protocol>(savedProtocol);
  const [token, setToken] = useState(savedToken);
  const settings = useMemo(() => ({ endpoints, protocol, token }), [endpoints, protocol, token]);
  return (
    <SettingsContext.Provider value={settings}>
      <LocationProvider>
        <a class="skip" href="#main">
          Skip to content
        </a>
        <header class="top">
          <a class="brand" href="/models">
            mlmesh console
          </a>
          <Navigation />
          <form class="call-settings" onSubmit={(e) => e.preventDefault()} aria-label="How this page calls the services">
            <label>
              Protocol{" "}
              <select
                data-testid="protocol"
                value={protocol}
                onChange={(e) => {
                  const value = e.currentTarget.value as Protocol;
                  saveProtocol(value);
                  setProtocol(value);
                }}
              >
                <option value="connect-json">Connect (JSON)</option>
                <option value="connect-binary">Connect (binary)</option>
                <option value="grpc-web">gRPC-web</option>
              </select>
            </label>
            <label>
              Bearer token{" "}
              <input
                data-testid="token"
                type="password"
                autocomplete="off"
                size={18}
                value={token}
                onChange={(e) => {
                  const value = e.currentTarget.value.trim();
                  saveToken(value);
                  setToken(value);
                }}
              />
            </label>
          </form>
        </header>
        <main id="main" tabIndex={-1}>
          <PageGuard>
          <Router>
            <Route path="/" component={ModelsPage} />
            <Route path="/models" component={ModelsPage} />
            <Route path="/models/:project/:model" component={ModelPage} />
            <Route path="/models/:project/:model/experiments" component={ExperimentsPage} />
            <Route path="/models/:project/:model/monitoring" component={MonitoringPage} />
            <Route path="/models/:project/:model/experiments/compare" component={CompareExperimentsPage} />
            <Route path="/batch" component={BatchPage} />
            <Route path="/batch/items/:id" component={WatchItemPage} />
            <Route path="/proxy" component={ProxyPage} />
            <Route path="/services" component={ServicesPage} />
            <Route default component={NotFoundPage} />
          </Router>
          </PageGuard>
        </main>
      </LocationProvider>
    </SettingsContext.Provider>
  );
}

/** The sections, the current one marked for screen readers; after a page change focus moves to its heading. */
function Navigation() {
  const { path } = useLocation();
  useEffect(() => {
    // A new page: move focus to its heading (as a screen reader user expects after a link), not on first load.
    if (document.body.dataset.navigated === "true") document.querySelector<HTMLElement>("main h1")?.focus();
    document.body.dataset.navigated = "true";
  }, [path]);
  const current = path === "/" ? "/models" : path;
  return (
    <nav aria-label="Sections">
      <ul>
        {sections.map((s) => (
          <li>
            <a href={s.href} aria-current={current === s.href || current.startsWith(`${s.href}/`) ? "page" : undefined}>
              {s.label}
            </a>
          </li>
        ))}
      </ul>
    </nav>
  );
}

/** A page that fails to render says so (and the navigation still works), instead of going blank. */
function PageGuard({ children }: { children: ComponentChildren }) {
  const [error, reset] = useErrorBoundary();
  const { path } = useLocation();
  useEffect(() => reset(), [path]);
  if (error === undefined) return <>{children}</>;
  return (
    <p class="error" role="alert" data-testid="page-error">
      <strong>This page failed</strong>: {String((error as Error).message ?? error)}
    </p>
  );
}
