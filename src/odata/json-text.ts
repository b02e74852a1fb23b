/**
 * What JSON.parse hides in a request body's text: a property name given twice in one object (JSON.parse
 * keeps the last, so the first value is never validated), and where entity references sit, so a batch's
 * `$<Content-ID>` references are resolved there and nowhere else. The scanner runs only on text JSON.parse
 * has accepted; it still stops at the end of the text, whatever it finds.
 */

/** A string value in the text: [start, end) of its quoted form, and its decoded value. */
export interface StringSpan {
  start: number;
  end: number;
  value: string;
}

interface Scan {
  duplicate?: { name: string; position: number };
  references: StringSpan[];
  /** Nested deeper than MAX_DEPTH: not scanned further (no payload of this service nests so deep). */
  tooDeep?: boolean;
}

/** Objects and arrays nested deeper than this are refused in request bodies. */
export const MAX_JSON_DEPTH = 1000;

/**
 * What is wrong with a body's structure: a property name twice in one object, or nesting past MAX_JSON_DEPTH.
 * `subject` names the body in the message ("request body", "JSON batch").
 */
export function structuralProblemOf(text: string, subject = "request body"): string | undefined {
  const s = scan(text);
  if (s.tooDeep) return `The ${subject} nests objects and arrays deeper than ${MAX_JSON_DEPTH} levels`;
  if (s.duplicate) return `The property '${s.duplicate.name}' appears more than once in one object of the ${subject} (at character ${s.duplicate.position}); each property may be given once`;
  return undefined;
}

/**
 * Replaces `$<id>` references in entity-reference values (`…@odata.bind`, `@odata.id`, and the elements of
 * a collection bind) by what `resolve` returns for the id; every other value keeps its text exactly.
 */
export function resolveBodyReferences(text: string, resolve: (id: string) => string | undefined): string {
  if (!text.includes("$")) return text;
  // Only JSON has references; anything else is left for the request itself to refuse.
  try {
    JSON.parse(text);
  } catch {
    return text;
  }
  let out = "";
  let last = 0;
  const found = scan(text);
  if (found.tooDeep) return text;
  for (const span of found.references) {
    const m = /^\$([A-Za-z0-9_.-]+)(\/.*)?$/s.exec(span.value);
    const url = m ? resolve(m[1]!) : undefined;
    if (url === undefined) continue;
    out += text.slice(last, span.start) + JSON.stringify(url + (m![2] ?? ""));
    last = span.end;
  }
  return last === 0 ? text : out + text.slice(last);
}

function isReferenceKey(name: string | undefined): boolean {
  return name !== undefined && (name === "@odata.id" || name.endsWith("@odata.bind"));
}

function scan(text: string): Scan {
  const result: Scan = { references: [] };
  let i = 0;
  const ws = () => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  };
  const string = (): StringSpan => {
    const start = i++;
    let escaped = false;
    while (i < text.length) {
      const c = text.charCodeAt(i++);
      if (c === 92 /* \ */) {
        escaped = true;
        i++;
      } else if (c === 34 /* " */) break;
    }
    const raw = text.slice(start, i);
    return { start, end: i, value: escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1) };
  };
  const value = (key: string | undefined, depth: number): void => {
    ws();
    const c = text[i];
    if (depth > MAX_JSON_DEPTH) {
      result.tooDeep = true;
      throw STOP;
    }
    if (c === "{") {
      i++;
      const names = new Set<string>();
      ws();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (i >= text.length) throw STOP;
        const name = string();
        if (names.has(name.value)) result.duplicate ??= { name: name.value, position: name.start };
        names.add(name.value);
        ws();
        i++; // :
        value(name.value, depth + 1);
        ws();
        if (text[i++] === "}") return;
      }
    }
    if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        if (i >= text.length) throw STOP;
        value(key, depth + 1);
        ws();
        if (text[i++] === "]") return;
      }
    }
    if (c === '"') {
      const s = string();
      if (isReferenceKey(key)) result.references.push(s);
      return;
    }
    while (i < text.length && !",}] \t\n\r".includes(text[i]!)) i++;
  };
  try {
    value(undefined, 0);
  } catch (e) {
    if (e !== STOP) throw e;
  }
  return result;
}

const STOP = Symbol("stop");
