// The console's page: a Preact app with a router (preact-iso), bundled for the browser by
// services/console/site.ts at start-up. It calls the mesh's services from the browser with the
// generated descriptors and @connectrpc/connect-web, and the console's own server for charts.
import { render } from "preact";
import { App } from "./app";
import type { Endpoints } from "./lib/settings";
import "./styles.css";

// Where the browser reaches each service: written into the page by the console's server.
const endpoints = JSON.parse(document.getElementById("endpoints")!.textContent!) as Endpoints;
render(<App endpoints={endpoints} />, document.getElementById("app")!);
