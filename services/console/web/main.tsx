// The console's page: a Preact app with a router (preact-iso), bundled for the browser by
// services/console/site.ts at start-up. It calls the mesh's services from the browser with the
// generated descriptors and @connectrpc/connect-web, and the console's own server for charts.
import { render } from "preact";
import { App } from "./app.js";
import type { Endpoints } from "./lib/settings.js";
import "./styles.css";

async function start(): Promise<void> {
  const endpoints = (await (await fetch("/config.json")).json()) as Endpoints;
  render(<App endpoints={endpoints} />, document.getElementById("app")!);
}

void start();
