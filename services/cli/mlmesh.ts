import { servicePorts, type ServiceName } from "../runtime/config.js";
import { modelsCommand, modelsUsage } from "./models-command.js";
import { tokenCommand } from "./token-command.js";
import { up } from "./up.js";

const usage = `usage:
  mlmesh serve <service>   run one service: ${Object.keys(servicePorts).join(", ")} (console: the web console page; batch-worker: a scale-out batch job worker; echo: diagnostics)
  mlmesh up                run the whole mesh on this machine, one process per service
  mlmesh models ...        push model versions to the registry, move and roll back aliases (mlmesh models help)
  mlmesh token new <role> <name>   a new bearer token and its line for AUTH_TOKENS_FILE

Configuration comes from environment variables: see the table in README.md.`;

const services: Record<ServiceName, () => Promise<{ main(env: NodeJS.ProcessEnv): Promise<void> }>> = {
  registry: () => import("../registry/main.js"),
  predictor: () => import("../predictor/main.js"),
  batch: () => import("../batch/main.js"),
  proxy: () => import("../proxy/main.js"),
  console: () => import("../console/main.js"),
  "batch-worker": async () => ({ main: (await import("../batch/main.js")).workerMain }),
  echo: () => import("../echo/main.js"),
};

const [command, argument] = process.argv.slice(2);
if (command === "serve" && argument !== undefined && Object.hasOwn(services, argument)) {
  const service = await services[argument as ServiceName]();
  await service.main(process.env);
} else if (command === "up" && argument === undefined) {
  process.exitCode = await up(process.env);
} else if (command === "token") {
  process.exitCode = tokenCommand(process.argv.slice(3));
} else if (command === "models") {
  if (argument === undefined || argument === "help" || argument === "--help") {
    process.stdout.write(`${modelsUsage}\n`);
    process.exitCode = argument === undefined ? 2 : 0;
  } else {
    process.exitCode = await modelsCommand(process.argv.slice(3), process.env);
  }
} else {
  process.stderr.write(`${usage}\n`);
  process.exitCode = command === "help" || command === "--help" ? 0 : 2;
}
