import { catalog, catalogEntry } from "../catalog.js";
import { readProcessEnvironment } from "../runtime/env/variables.js";

const usage = `usage:
  mlmesh serve <service>   run one service:
${catalog.map((e) => `                             ${e.name.padEnd(13)} ${e.summary}`).join("\n")}
  mlmesh up                run the whole mesh on this machine, one process per service
  mlmesh models ...        push model versions to the registry, move and roll back aliases (mlmesh models help)
  mlmesh token new <role> <name>   a new bearer token and its line for AUTH_TOKENS_FILE
  mlmesh health <host:port> [service]   exit 0 when the service is SERVING (a pod's probe over TLS)

Configuration comes from environment variables: see the table in README.md.`;

// The one read of the process's environment: everything below is handed this copy.
const env = readProcessEnvironment();
const [command, argument] = process.argv.slice(2);
const served = command === "serve" && argument !== undefined ? catalogEntry(argument) : undefined;
if (served !== undefined) {
  const main = await served.load();
  await main(env);
} else if (command === "up" && argument === undefined) {
  // Each command loads only its own modules: `serve` starts faster without the others'.
  process.exitCode = await (await import("./up.js")).up(env);
} else if (command === "token") {
  process.exitCode = (await import("./token-command.js")).tokenCommand(process.argv.slice(3));
} else if (command === "health") {
  process.exitCode = await (await import("./health-command.js")).healthCommand(process.argv.slice(3), env);
} else if (command === "models") {
  const { modelsCommand, modelsUsage } = await import("./models-command.js");
  if (argument === undefined || argument === "help" || argument === "--help") {
    process.stdout.write(`${modelsUsage}\n`);
    process.exitCode = argument === undefined ? 2 : 0;
  } else {
    process.exitCode = await modelsCommand(process.argv.slice(3), env);
  }
} else {
  process.stderr.write(`${usage}\n`);
  process.exitCode = command === "help" || command === "--help" ? 0 : 2;
}
