import { defineConfig } from "vitest/config";

// Tests start real servers as child processes on loopback ports; on a 2-core machine two test
// files at a time keep them from starving each other.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    maxWorkers: 2,
    reporters: ["default"],
  },
});
