import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // PostgreSQL suites share one database; each uses its own schema, but keep files sequential for stable timing.
    fileParallelism: false,
  },
});
