import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { parseFilterSyntax } from "../../src/odata/syntax.js";

// Why $filter has its own parser: the card's odata-v4-parser 0.1.29 cannot parse what issue 3 requires.
// These tests fail the day the package learns it, which is the day to reconsider.
const parser = createRequire(import.meta.url)("odata-v4-parser") as { filter(s: string): unknown; query(s: string): unknown };

describe("odata-v4-parser 0.1.29 compared with our parser", () => {
  it("rejects the OData 4.01 'in' operator, which ours parses", () => {
    expect(() => parser.filter("Name in ('a','b')")).toThrow(/Unexpected character at 4/);
    expect(parseFilterSyntax("Name in ('a','b')")).toMatchObject({ kind: "in", list: [{ value: "a" }, { value: "b" }] });
  });
  it("rejects case-insensitive option names ($FILTER), which 4.01 allows", () => {
    expect(() => parser.query("$FILTER=Age eq 1")).toThrow();
  });
  it("gives an untyped AST without the failing position in a structured form", () => {
    expect(() => parseFilterSyntax("Age eq eq 1")).toThrow(/position 7/);
  });
});
