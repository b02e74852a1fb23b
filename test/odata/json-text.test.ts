import { describe, expect, it } from "vitest";
import { resolveBodyReferences, structuralProblemOf } from "../../src/odata/json-text.js";

/** The body scanner behind duplicate-property checks and batch reference resolution. */
describe("request body text", () => {
  const created = new Map([["1", "http://x/api/data/v9.2/accounts(11111111-1111-4111-8111-111111111111)"]]);
  const resolve = (text: string) => resolveBodyReferences(text, (id) => created.get(id));

  it("resolves references in bind and id values only, keeping every other byte", () => {
    const text = '{ "name" : "Desk $1", "parent@odata.bind":"$1", "tags@odata.bind": ["$1/x", "$2"], "n": 1.5e3, "s": "\\\\\\"$1\\\\" }';
    expect(resolve(text)).toBe(text.replace('"$1",', `"${created.get("1")}",`).replace('"$1/x"', `"${created.get("1")}/x"`));
    expect(resolve('{"@odata.id":"$1"}')).toBe(`{"@odata.id":"${created.get("1")}"}`);
  });

  it("leaves text that is not JSON as it is, and never hangs on it", () => {
    for (const text of ['{$', '{"new_name":"$1"', '{"new_name":"$1\\', '[{"a@odata.bind":"$1"', '{"a@odata.bind":"$1",', '"$1']) {
      expect(resolve(text), text).toBe(text);
    }
  });

  it("finds a property named twice in one object (also through escapes), not across objects", () => {
    expect(structuralProblemOf('{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}')).toBeUndefined();
    expect(structuralProblemOf('{"a":1,"b":2,"a":3}')).toMatch(/'a' appears more than once/);
    expect(structuralProblemOf('{"x":{"a\\u0062":1,"ab":2}}')).toMatch(/'ab'/);
    expect(structuralProblemOf('{"s":"{\\"a\\":1,\\"a\\":2}"}')).toBeUndefined();
  });

  it("refuses nesting deeper than 1000 levels", () => {
    expect(structuralProblemOf(`{"a":${"[".repeat(1001)}${"]".repeat(1001)}}`)).toMatch(/deeper than 1000/);
    expect(structuralProblemOf(`{"a":${"[".repeat(900)}${"]".repeat(900)}}`)).toBeUndefined();
  });
});
