import { configDefaults, defineConfig } from "vitest/config";

/**
 * Files that compare latencies measured under load (the traffic policies' "a failing shadow
 * costs the primary nothing"): they run after the others, one at a time, so that no other
 * file's servers share the machine with them.
 */
const timingFiles = ["test/traffic.test.ts"];

// Tests start real servers as child processes on loopback ports; on a 2-core machine two test
// files at a time keep them from starving each other.
export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    maxWorkers: 2,
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: { name: "mesh", include: ["test/**/*.test.ts"], exclude: [...configDefaults.exclude, ...timingFiles], sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: { name: "timing", include: timingFiles, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
