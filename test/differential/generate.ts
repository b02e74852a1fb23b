/**
 * Generators for the differential $filter test: rows full of nulls, ties and awkward values, and
 * well-typed random filter expressions over them. Every filter generated here is valid OData that a
 * service must answer with 200; the expected rows come from the reference evaluator in odata-expr.ts.
 *
 * Numeric expressions carry a magnitude bound and a "grain" (values are multiples of 2^-grain, or the
 * grain is null when a real division made them inexact) so that:
 * - no Int32 result can overflow (OData leaves overflow undefined; PostgreSQL raises an error),
 * - every exact value stays exactly representable in a double (so the JS evaluator computes exact
 *   decimal results for Edm.Decimal),
 * - `mod` and divisors only see exact values (PostgreSQL does those in NUMERIC, where an inexact
 *   double would first be rounded to 15 digits).
 */
import type { Rng } from "./prng.js";
import {
  type EdmType,
  type Expr,
  type NumType,
  type Row,
  type Scalar,
  type CmpOp,
  type Fn,
  booleanLiteral,
  dateLiteral,
  dateTimeOffsetLiteral,
  decimalLiteral,
  doubleLiteral,
  evaluate,
  guidLiteral,
  instantOf,
  intLiteral,
  nullLiteral,
  promote,
  stringLiteral,
  INTEGER_TYPES,
} from "./odata-expr.js";

type Lit = Extract<Expr, { k: "lit" }>;

export const ENTITY_SET = "new_items";
export const KEY = "new_itemid";

/** The properties of the test entity and their EDM types. */
export const PROPERTY_TYPES = {
  new_itemid: "Edm.Guid",
  new_name: "Edm.String",
  new_code: "Edm.String",
  new_qty: "Edm.Int32",
  new_n2: "Edm.Int32",
  new_big: "Edm.Int64",
  new_price: "Edm.Decimal",
  new_ratio: "Edm.Double",
  new_flag: "Edm.Boolean",
  new_day: "Edm.Date",
  new_at: "Edm.DateTimeOffset",
  new_kind: "Edm.Int32",
} as const satisfies Record<string, EdmType>;

export type PropertyName = keyof typeof PROPERTY_TYPES;
export const DATA_PROPERTIES = (Object.keys(PROPERTY_TYPES) as PropertyName[]).filter((p) => p !== KEY);

/** The entity definition (Dataverse metadata) served by the test; its entity set is `new_items`. */
export function entityDefinition() {
  return {
    LogicalName: "new_item",
    PrimaryNameAttribute: "new_name",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 100 },
      { LogicalName: "new_code", AttributeType: "String", MaxLength: 100 },
      { LogicalName: "new_qty", AttributeType: "Integer" },
      { LogicalName: "new_n2", AttributeType: "Integer" },
      { LogicalName: "new_big", AttributeType: "BigInt" },
      { LogicalName: "new_price", AttributeType: "Decimal", Precision: 2 },
      { LogicalName: "new_ratio", AttributeType: "Double" },
      { LogicalName: "new_flag", AttributeType: "Boolean" },
      { LogicalName: "new_day", AttributeType: "DateTime", DateTimeBehavior: "DateOnly" },
      { LogicalName: "new_at", AttributeType: "DateTime", DateTimeBehavior: "TimeZoneIndependent" },
      { LogicalName: "new_kind", AttributeType: "Picklist", OptionSet: { Name: "new_kind", Options: [{ Value: 1, Label: "A" }, { Value: 2, Label: "B" }] } },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/** Strings chosen to break naive translations: wildcards, quotes, padding, case, non-ASCII. */
export const STRING_POOL = [
  "", " ", "  ", "a", "A", "b", "ab", "Ab", "aB", "AB", "abc", "ABC", "abc ", " abc", "  abc  ", "a b", "ab%", "%ab", "a%b", "100%", "%", "%%",
  "_", "a_b", "a_c", "axb", "__", "*", "a*b", "axxb", "**", "?", "a?b", "what?", "[", "[a]", "[ab]c", "a]b", "]", "\\", "a\\b", "\\\\", "\\%",
  "'", "O'Brien", "''", "it's", "é", "café", "CAFÉ", "Café", "cafe", "naïve", "straße", "日本", "日本語", "zz", "z", "Z", "~", "0", "10", "9",
  "-1", "tab\there", "a%_*?[\\'é", "x", "xyz", "xY", "b%", "_b", "a.b", "a^b", "a-b", "[!a]", "{a}", "a|b", "$1",
];
const CODE_POOL = ["", " ", "a", "b", "ab", "A", "B", "%", "_", "*", "?", "[", "]", "\\", "'", "é", "c", "abc", "bc", "a_", "%a", "É", "ß"];
const CHARS = ["a", "b", "c", "A", "B", " ", " ", "%", "_", "*", "?", "[", "]", "\\", "'", "é", "z", "Z", "0", "-", "^", "ß"];

const DATE_POOL = [
  "2020-01-01", "2020-01-02", "2020-02-29", "2020-03-01", "2020-12-31", "2021-01-01", "1999-12-31", "2000-01-01", "2024-02-29", "1900-03-01",
  "2099-12-31", "1970-01-01", "1969-12-31", "1753-01-01", "9999-12-31",
];
const INSTANT_POOL = [
  "2020-01-02T03:04:05.000Z", "2020-01-02T03:04:05.500Z", "2020-01-02T03:04:06.000Z", "2020-01-01T23:59:59.999Z", "2020-01-02T00:00:00.000Z",
  "2020-01-01T00:00:00.000Z", "2019-12-31T22:00:00.000Z", "2020-02-29T12:30:45.123Z", "2020-03-01T00:00:00.001Z", "1999-12-31T23:59:59.000Z",
  "2000-01-01T00:00:00.000Z", "2024-06-15T18:45:00.000Z", "2038-01-19T03:14:07.000Z", "1970-01-01T00:00:00.000Z", "1969-12-31T23:59:59.000Z",
  "2099-12-31T23:59:59.999Z", "1900-01-01T12:00:00.000Z",
];
const QTY_POOL = [-7, -3, -2, -1, 0, 0, 1, 1, 2, 3, 4, 5, 7, 10];
const N2_POOL = [0, 1, -1, 2, 3, 7, -7, 100, -100, 65536, 46341, 2147483647, -2147483648];
const BIG_POOL = [0, 1, -1, 2, 7, -7, 10, 100, 2147483648, -2147483649, 3000000000, 123456789012, 4000000000000, -4000000000000];
const PRICE_POOL = [0, 0.25, -0.25, 0.5, -0.5, 1, 1.5, 2.5, -2.5, 3, 3.75, -3.75, 5.5, 10, 12.25, 100, -100, 999.75];
const RATIO_POOL = [0, 0.125, -0.125, 0.5, 1, 1.5, 2.5, -2.5, 3.875, -0.375, 7, 1000000, -1000000];

export interface GeneratedRow {
  id: string;
  label: string;
  /** The body POSTed to create the row. */
  payload: Record<string, unknown>;
  /** The row as the evaluator sees it (DateTimeOffset normalized to ISO UTC text). */
  model: Row;
}

export function guidFor(i: number, salt = 0xd1ff): string {
  return `${salt.toString(16).padStart(4, "0")}0000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`;
}

function randomString(rng: Rng): string {
  const n = rng.int(0, 7);
  let s = "";
  for (let i = 0; i < n; i++) s += rng.pick(CHARS);
  return s;
}

function randomDate(rng: Rng): string {
  const ms = Date.UTC(1990, 0, 1) + rng.int(0, 40 * 366) * 86_400_000;
  return new Date(ms).toISOString().slice(0, 10);
}

function randomInstant(rng: Rng): string {
  const ms = Date.UTC(1990, 0, 1) + rng.int(0, 40 * 366 * 24) * 3_600_000 + rng.int(0, 3_599_999);
  return new Date(ms).toISOString();
}

/** The same instant as `iso`, written the ways a client may send it. */
function instantPayload(rng: Rng, iso: string): string {
  const ms = instantOf(iso);
  switch (rng.int(0, 4)) {
    case 0:
      return dateTimeOffsetLiteral(ms, rng.pick([120, -300, 330, 60]), "full").text;
    case 1:
      return dateTimeOffsetLiteral(ms, 0, "seconds").text;
    default:
      return iso;
  }
}

export function generateRows(rng: Rng, count: number): GeneratedRow[] {
  const rows: GeneratedRow[] = [];
  const maybe = <T>(p: number, f: () => T): T | null => (rng.chance(p) ? f() : null);
  for (let i = 0; i < count; i++) {
    const id = guidFor(i);
    const model: Row = { new_itemid: id };
    if (i === 0) {
      // Everything null.
      for (const p of DATA_PROPERTIES) model[p] = null;
    } else if (i === 1) {
      // Every zero / empty value.
      Object.assign(model, {
        new_name: "", new_code: "", new_qty: 0, new_n2: 0, new_big: 0, new_price: 0, new_ratio: 0, new_flag: false,
        new_day: "2000-01-01", new_at: "2000-01-01T00:00:00.000Z", new_kind: 1,
      });
    } else {
      model.new_name = maybe(0.85, () => (rng.chance(0.7) ? rng.pick(STRING_POOL) : randomString(rng)));
      model.new_code = maybe(0.75, () => (rng.chance(0.8) ? rng.pick(CODE_POOL) : randomString(rng)));
      model.new_qty = maybe(0.8, () => (rng.chance(0.6) ? rng.pick(QTY_POOL) : rng.int(-50, 50)));
      model.new_n2 = maybe(0.75, () => rng.pick(N2_POOL));
      model.new_big = maybe(0.75, () => rng.pick(BIG_POOL));
      model.new_price = maybe(0.8, () => (rng.chance(0.6) ? rng.pick(PRICE_POOL) : rng.int(-400, 400) / 4));
      model.new_ratio = maybe(0.8, () => (rng.chance(0.6) ? rng.pick(RATIO_POOL) : rng.int(-800, 800) / 8));
      model.new_flag = maybe(0.75, () => rng.chance(0.5));
      model.new_day = maybe(0.8, () => (rng.chance(0.7) ? rng.pick(DATE_POOL) : randomDate(rng)));
      model.new_at = maybe(0.8, () => (rng.chance(0.7) ? rng.pick(INSTANT_POOL) : randomInstant(rng)));
      model.new_kind = maybe(0.75, () => rng.pick([1, 2]));
    }
    const payload: Record<string, unknown> = {};
    for (const p of [KEY, ...DATA_PROPERTIES]) {
      const v = model[p]!;
      payload[p] = p === "new_at" && typeof v === "string" ? instantPayload(rng, v) : v;
    }
    rows.push({ id, label: `r${i}`, payload, model });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

const INT32_MAX = 2147483647;
/** Largest magnitude of any numeric intermediate. */
const LIMIT = 2 ** 50;
/** Largest magnitude × 2^grain of an exact value (stays an exact double). */
const EXACT_LIMIT = 2 ** 52;

interface Num {
  e: Expr;
  type: NumType;
  bound: number;
  /** Values are multiples of 2^-grain; null when inexact (after a real division). */
  grain: number | null;
  /** The literal INF or -INF: fine to compare, kept out of arithmetic. */
  inf?: boolean;
}

function grainOf(v: number): number | null {
  for (let k = 0; k <= 10; k++) if (Number.isInteger(v * 2 ** k)) return k;
  return null;
}

const NUM_PROPS: { name: PropertyName; grain: number }[] = [
  { name: "new_qty", grain: 0 },
  { name: "new_n2", grain: 0 },
  { name: "new_big", grain: 0 },
  { name: "new_price", grain: 2 },
  { name: "new_ratio", grain: 3 },
  { name: "new_kind", grain: 0 },
];

const SPECIAL_NEEDLES = ["%", "_", "*", "?", "[", "]", "\\", "'", "''", "a%", "%b", "[a", "[a]", "a_", "_b", "é", " ", "", "a", "A", "b", "\\%", "%_", "[!a]", "^", "ab"];

export class FilterGenerator {
  private aliasCounter = 0;
  private readonly bounds = new Map<string, number>();

  constructor(
    private readonly rng: Rng,
    private readonly rows: GeneratedRow[],
  ) {
    for (const { name } of NUM_PROPS) {
      let max = 0;
      for (const r of rows) if (typeof r.model[name] === "number") max = Math.max(max, Math.abs(r.model[name] as number));
      this.bounds.set(name, max);
    }
  }

  /** One random filter. */
  filter(): Expr {
    return this.bool(this.rng.int(1, 3));
  }

  // --- helpers --------------------------------------------------------------------------------

  private prop(name: PropertyName): Expr {
    return { k: "prop", name, type: PROPERTY_TYPES[name] };
  }

  private decorate<T extends Expr>(e: T): T {
    if (this.rng.chance(0.05)) e.paren = true;
    return e;
  }

  private aliased(lit: Lit): Lit {
    if (this.rng.chance(0.06)) return { ...lit, alias: `p${++this.aliasCounter}` };
    return lit;
  }

  private randomRow(): Row {
    return this.rng.pick(this.rows).model;
  }

  /** The value of `e` on some row where it is not null (or null when none was found quickly). */
  private sampleValue(e: Expr): Scalar {
    for (let i = 0; i < 8; i++) {
      const v = evaluate(e, this.randomRow());
      if (v !== null) return v;
    }
    return null;
  }

  // --- numbers --------------------------------------------------------------------------------

  /** A numeric literal of a type that fits the (exact) value. */
  private numberLiteral(v: number): Num {
    if (!Number.isFinite(v)) return { e: doubleLiteral(v), type: "Edm.Double", bound: 0, grain: null, inf: true };
    let grain = grainOf(v);
    if (grain === null || grain > 3) {
      v = Math.round(v * 4) / 4;
      grain = grainOf(v)!;
    }
    if (Object.is(v, -0)) v = 0;
    const bound = Math.abs(v);
    let lit: Lit;
    if (Number.isInteger(v) && Math.abs(v) <= 2 ** 53) {
      const r = this.rng.float();
      lit = r < 0.65 ? intLiteral(v) : r < 0.85 ? decimalLiteral(v) : doubleLiteral(v, this.rng.int(0, 2));
    } else {
      lit = this.rng.chance(0.6) ? decimalLiteral(v) : doubleLiteral(v, this.rng.int(0, 3));
    }
    return { e: this.aliased(lit), type: lit.type as NumType, bound, grain };
  }

  private randomNumberLiteral(): Num {
    switch (this.rng.weighted({ small: 5, pool: 2, big: 1, frac: 3, inf: 0.2 })) {
      case "small":
        return this.numberLiteral(this.rng.int(-10, 10));
      case "pool":
        return this.numberLiteral(this.rng.pick([...QTY_POOL, ...PRICE_POOL, ...N2_POOL.slice(0, 9)]));
      case "big":
        return this.numberLiteral(this.rng.pick(BIG_POOL));
      case "inf":
        return this.numberLiteral(this.rng.pick([Infinity, -Infinity]));
      default:
        return this.numberLiteral(this.rng.int(-80, 80) / 8);
    }
  }

  /** A literal near the values `e` takes, so that comparisons split the rows (and hit ties). */
  private numberLiteralFor(e: Expr): Num {
    const v = this.sampleValue(e);
    if (typeof v !== "number" || this.rng.chance(0.1)) return this.randomNumberLiteral();
    const delta = this.rng.chance(0.35) ? this.rng.pick([-1, 1, 0.25, -0.25, 0.5]) : 0;
    return this.numberLiteral(v + delta);
  }

  private numLeaf(depth: number): Num {
    switch (this.rng.weighted({ prop: 6, lit: 2, fn: 2 })) {
      case "prop": {
        const p = this.rng.pick(NUM_PROPS);
        return { e: this.prop(p.name), type: PROPERTY_TYPES[p.name] as NumType, bound: this.bounds.get(p.name)!, grain: p.grain };
      }
      case "lit":
        return this.randomNumberLiteral();
      default:
        return this.intFunction(depth);
    }
  }

  private intFunction(depth: number): Num {
    const fn = this.rng.weighted({ length: 3, indexof: 2, year: 1, month: 1, day: 1, hour: 1, minute: 1, second: 1 });
    const int32 = (e: Expr, bound: number): Num => ({ e, type: "Edm.Int32", bound, grain: 0 });
    if (fn === "length") return int32({ k: "call", type: "Edm.Int32", fn, args: [this.str(depth - 1)] }, 300);
    if (fn === "indexof") {
      const s = this.str(depth - 1);
      return int32({ k: "call", type: "Edm.Int32", fn, args: [s, this.needleFor(s)] }, 300);
    }
    const onDate = this.rng.chance(0.4);
    const arg = onDate ? this.date(depth - 1) : this.prop("new_at");
    const bound = { year: 9999, month: 12, day: 31, hour: 23, minute: 59, second: 59 }[fn];
    return int32({ k: "call", type: "Edm.Int32", fn: fn as Fn, args: [arg] }, bound);
  }

  num(depth: number): Num {
    if (depth > 0 && !this.rng.chance(0.35)) {
      for (let attempt = 0; attempt < 6; attempt++) {
        const kind = this.rng.weighted({ arith: 6, neg: 1, round: 2 });
        const n = kind === "arith" ? this.arith(depth) : kind === "neg" ? this.neg(depth) : this.rounding(depth);
        if (n) {
          this.decorate(n.e);
          return n;
        }
      }
    }
    return this.numLeaf(depth);
  }

  private fits(type: NumType, bound: number, grain: number | null): boolean {
    if (!Number.isFinite(bound)) return false;
    if (type === "Edm.Int32" && bound > INT32_MAX) return false;
    if (bound > LIMIT) return false;
    if (grain !== null && bound * 2 ** grain > EXACT_LIMIT) return false;
    return true;
  }

  private arith(depth: number): Num | undefined {
    const op = this.rng.weighted({ add: 3, sub: 3, mul: 2, div: 3, mod: 2 });
    const l = this.num(depth - 1);
    let r: Num;
    if ((op === "div" || op === "mod") && this.rng.chance(0.08)) r = this.numberLiteral(0);
    else if (this.rng.chance(0.03)) r = { e: nullLiteral(l.type), type: l.type, bound: 0, grain: 0 };
    else r = this.rng.chance(0.5) ? this.numberLiteralFor(l.e) : this.num(depth - 1);
    if (l.inf || r.inf) return undefined;
    const type = promote(l.type, r.type);
    const integral = INTEGER_TYPES.has(l.type) && INTEGER_TYPES.has(r.type);
    let bound: number;
    let grain: number | null;
    switch (op) {
      case "add":
      case "sub":
        bound = l.bound + r.bound;
        grain = l.grain === null || r.grain === null ? null : Math.max(l.grain, r.grain);
        break;
      case "mul":
        bound = l.bound * r.bound;
        grain = l.grain === null || r.grain === null ? null : l.grain + r.grain;
        break;
      case "div":
        if (r.grain === null) return undefined;
        if (integral) {
          bound = l.bound;
          grain = 0;
        } else {
          bound = l.bound * 2 ** r.grain;
          grain = null;
        }
        break;
      case "mod":
        if (l.grain === null || r.grain === null) return undefined;
        bound = Math.min(l.bound, r.bound);
        grain = Math.max(l.grain, r.grain);
        break;
    }
    if (!this.fits(type, bound, grain)) return undefined;
    return { e: { k: "arith", type, op, l: l.e, r: r.e }, type, bound, grain };
  }

  private neg(depth: number): Num | undefined {
    const a = this.num(depth - 1);
    if (a.inf) return undefined;
    if (!this.fits(a.type, a.bound, a.grain)) return undefined;
    return { e: { k: "neg", type: a.type, e: a.e }, type: a.type, bound: a.bound, grain: a.grain };
  }

  private rounding(depth: number): Num | undefined {
    const a = this.num(depth - 1);
    if (a.inf) return undefined;
    const fn = this.rng.pick(["round", "floor", "ceiling"] as const);
    // OData defines these for Edm.Decimal and Edm.Double only: integer arguments are promoted to Decimal.
    const type: NumType = a.type === "Edm.Double" ? "Edm.Double" : "Edm.Decimal";
    if (!this.fits(type, a.bound + 1, 0)) return undefined;
    return { e: { k: "call", type, fn, args: [a.e] }, type, bound: a.bound + 1, grain: 0 };
  }

  // --- strings --------------------------------------------------------------------------------

  str(depth: number): Expr {
    if (depth > 0 && this.rng.chance(0.4)) {
      const fn = this.rng.weighted({ tolower: 2, toupper: 2, trim: 2, concat: 2, substring: 3 });
      let e: Expr;
      if (fn === "concat") {
        const a = this.str(depth - 1);
        const b = this.rng.chance(0.5) ? this.str(depth - 1) : this.rng.chance(0.05) ? nullLiteral("Edm.String") : this.aliased(stringLiteral_(this.rng.pick(SPECIAL_NEEDLES)));
        e = { k: "call", type: "Edm.String", fn, args: this.rng.chance(0.5) ? [a, b] : [b, a] };
      } else if (fn === "substring") {
        const args = [this.str(depth - 1), this.int32Arg(depth)];
        // A negative literal length is a 400 (OData), not a query: lengths are generated from 0 up.
        if (this.rng.chance(0.6)) args.push(this.int32Arg(depth, 0));
        e = { k: "call", type: "Edm.String", fn, args };
      } else {
        e = { k: "call", type: "Edm.String", fn, args: [this.str(depth - 1)] };
      }
      return this.decorate(e);
    }
    const r = this.rng.float();
    if (r < 0.55) return this.prop("new_name");
    if (r < 0.85) return this.prop("new_code");
    return this.aliased(stringLiteral_(this.rng.pick(STRING_POOL)));
  }

  /** An Edm.Int32 argument (substring positions). */
  private int32Arg(depth: number, min = -2): Expr {
    switch (this.rng.weighted({ lit: 7, prop: 2, length: 1 })) {
      case "lit":
        return this.aliased(intLiteral(this.rng.int(min, 8)));
      case "prop":
        return this.prop(this.rng.pick(["new_qty", "new_kind", "new_n2"] as const));
      default:
        return { k: "call", type: "Edm.Int32", fn: "length", args: [this.str(depth - 1)] };
    }
  }

  /** A string literal near the values `e` takes: the whole value, a piece of it, or a special. */
  private stringLiteralFor(e: Expr, piece: boolean): Lit {
    const v = this.sampleValue(e);
    if (typeof v !== "string" || this.rng.chance(0.15)) return this.aliased(stringLiteral_(this.rng.pick(this.rng.chance(0.5) ? SPECIAL_NEEDLES : STRING_POOL)));
    const chars = Array.from(v);
    if (piece && chars.length > 0 && this.rng.chance(0.6)) {
      const a = this.rng.int(0, chars.length - 1);
      const b = this.rng.int(a, chars.length);
      return this.aliased(stringLiteral_(chars.slice(a, b).join("")));
    }
    if (!piece && this.rng.chance(0.25)) {
      // A neighbour in code-point order: longer, shorter, or one character changed.
      const tweak = this.rng.pick([v + "a", v.slice(0, -1), v + " ", v.slice(0, -1) + "~"]);
      return this.aliased(stringLiteral_(tweak));
    }
    return this.aliased(stringLiteral_(v));
  }

  private needleFor(subject: Expr): Expr {
    const r = this.rng.float();
    if (r < 0.03) return nullLiteral("Edm.String");
    if (r < 0.2) return this.str(0);
    return this.stringLiteralFor(subject, true);
  }

  // --- dates ----------------------------------------------------------------------------------

  private date(depth: number): Expr {
    const r = this.rng.float();
    if (r < 0.6 || depth < 0) return this.prop("new_day");
    if (r < 0.9) return { k: "call", type: "Edm.Date", fn: "date", args: [this.prop("new_at")] };
    return this.dateLiteralFor(this.prop("new_day"));
  }

  private dateLiteralFor(e: Expr): Lit {
    const v = this.sampleValue(e);
    let d = typeof v === "string" && !this.rng.chance(0.1) ? v : this.rng.pick(DATE_POOL);
    if (this.rng.chance(0.25) && d > "0100" && d < "9999") {
      d = new Date(Date.parse(`${d}T00:00:00Z`) + this.rng.pick([-1, 1]) * 86_400_000).toISOString().slice(0, 10);
    }
    return this.aliased(dateLiteral(d));
  }

  private instantLiteralFor(e: Expr): Lit {
    const v = this.sampleValue(e);
    let ms = typeof v === "number" && !this.rng.chance(0.1) ? v : instantOf(this.rng.pick(INSTANT_POOL));
    if (this.rng.chance(0.3)) ms += this.rng.pick([-1, 1, -1000, 1000, -86_400_000, 3_600_000]);
    const offset = this.rng.chance(0.3) ? this.rng.pick([60, 120, -300, 330, -600, 840]) : 0;
    return this.aliased(dateTimeOffsetLiteral(ms, offset, this.rng.pick(["full", "seconds", "short"] as const)));
  }

  // --- Booleans -------------------------------------------------------------------------------

  private cmpOp(ordering: boolean): CmpOp {
    if (!ordering) return this.rng.pick(["eq", "ne"] as const);
    return this.rng.weighted({ eq: 3, ne: 2, gt: 2, ge: 2, lt: 2, le: 2 });
  }

  private compare(op: CmpOp, l: Expr, r: Expr): Expr {
    const [a, b] = this.rng.chance(0.2) ? [r, l] : [l, r];
    // Swapping the sides of an ordering comparison flips it.
    const flipped: Record<CmpOp, CmpOp> = { eq: "eq", ne: "ne", gt: "lt", ge: "le", lt: "gt", le: "ge" };
    return this.decorate({ k: "cmp", type: "Edm.Boolean", op: a === l ? op : flipped[op], l: a, r: b });
  }

  bool(depth: number): Expr {
    const deep = depth > 0 ? 1 : 0;
    const kind = this.rng.weighted({
      num: 20, str: 10, match: 12, date: 6, instant: 6, isnull: 7, in: 9, flag: 5, guid: 2, constant: 0.3,
      boolEq: 4 * deep, logic: 16 * deep, not: 8 * deep,
    });
    switch (kind) {
      case "num": {
        const l = this.num(depth);
        const op = this.cmpOp(true);
        const r = this.rng.float();
        const right = r < 0.55 ? this.numberLiteralFor(l.e).e : r < 0.96 ? this.num(depth - 1).e : nullLiteral(l.type);
        if (l.e.k === "lit" && right.k === "lit") return this.compare(op, l.e, this.num(0).e);
        return this.compare(op, l.e, right);
      }
      case "str": {
        const l = this.str(depth);
        const right = this.rng.chance(0.65) ? this.stringLiteralFor(l, false) : this.str(depth - 1);
        return this.compare(this.cmpOp(true), l, right);
      }
      case "match": {
        const fn = this.rng.pick(["contains", "startswith", "endswith"] as const);
        const subject = this.str(depth - 1);
        return this.decorate({ k: "call", type: "Edm.Boolean", fn, args: [subject, this.needleFor(subject)] });
      }
      case "date": {
        const l = this.date(depth);
        const right = this.rng.chance(0.7) ? this.dateLiteralFor(l) : this.date(depth - 1);
        if (l.k === "lit" && right.k === "lit") return this.compare(this.cmpOp(true), l, this.prop("new_day"));
        return this.compare(this.cmpOp(true), l, right);
      }
      case "instant":
        return this.compare(this.cmpOp(true), this.prop("new_at"), this.instantLiteralFor(this.prop("new_at")));
      case "isnull": {
        const operand = this.anyValue(depth);
        const n = nullLiteral(operand.type);
        return this.compare(this.rng.pick(["eq", "ne"] as const), operand, n);
      }
      case "in":
        return this.inList(depth);
      case "flag": {
        const flag = this.prop("new_flag");
        const r = this.rng.float();
        if (r < 0.3) return flag;
        return this.compare(this.cmpOp(false), flag, this.aliased(this.rng.chance(0.9) ? booleanLiteral(this.rng.chance(0.5)) : nullLiteral("Edm.Boolean")));
      }
      case "guid": {
        const id = this.rng.chance(0.8) ? (this.randomRow().new_itemid as string) : guidFor(9999);
        const lit = this.aliased(guidLiteral(this.rng.chance(0.3) ? id.toUpperCase() : id));
        return this.compare(this.cmpOp(false), this.prop(KEY), lit);
      }
      case "constant":
        return booleanLiteral(this.rng.chance(0.5));
      case "boolEq": {
        // A predicate compared as a Boolean value: `(x gt 3) eq false` is true where x is null.
        const l = this.bool(depth - 1);
        const r = this.rng.float();
        const right = r < 0.45 ? booleanLiteral(this.rng.chance(0.5)) : r < 0.75 ? this.prop("new_flag") : this.bool(depth - 1);
        return this.compare(this.cmpOp(false), l, right);
      }
      case "logic":
        return this.decorate({ k: "logic", type: "Edm.Boolean", op: this.rng.chance(0.5) ? "and" : "or", l: this.bool(depth - 1), r: this.bool(depth - 1) });
      case "not":
        return this.decorate({ k: "not", type: "Edm.Boolean", e: this.bool(depth - 1) });
    }
  }

  /** Any non-Boolean-predicate value expression (for null checks and `in`). */
  private anyValue(depth: number): Expr {
    switch (this.rng.weighted({ num: 4, str: 3, date: 1, instant: 1, flag: 1, guid: 0.3 })) {
      case "num":
        return this.num(depth - 1).e;
      case "str":
        return this.str(depth - 1);
      case "date":
        return this.date(depth - 1);
      case "instant":
        return this.prop("new_at");
      case "flag":
        return this.prop("new_flag");
      default:
        return this.prop(KEY);
    }
  }

  private inList(depth: number): Expr {
    const operand = this.anyValue(depth);
    const n = this.rng.int(1, 5);
    const list: Lit[] = [];
    for (let i = 0; i < n; i++) {
      let lit: Lit;
      switch (operand.type) {
        case "Edm.String":
          lit = this.stringLiteralFor(operand, false);
          break;
        case "Edm.Date":
          lit = this.dateLiteralFor(operand);
          break;
        case "Edm.DateTimeOffset":
          lit = this.instantLiteralFor(operand);
          break;
        case "Edm.Boolean":
          lit = booleanLiteral(this.rng.chance(0.5));
          break;
        case "Edm.Guid":
          lit = guidLiteral(this.rng.chance(0.9) ? (this.randomRow().new_itemid as string) : guidFor(9999));
          break;
        default: {
          const num = this.numberLiteralFor(operand);
          lit = num.e as Lit;
        }
      }
      list.push({ ...lit, alias: undefined });
    }
    if (this.rng.chance(0.25)) list.splice(this.rng.int(0, list.length), 0, nullLiteral(operand.type));
    const e: Expr = { k: "in", type: "Edm.Boolean", e: operand, list };
    if (this.rng.chance(0.08)) e.listAlias = `l${++this.aliasCounter}`;
    return this.decorate(e);
  }
}

function stringLiteral_(s: string): Lit {
  return { k: "lit", type: "Edm.String", value: s, text: stringLiteral(s) };
}
