/**
 * Test-only kit: validates CSDL documents against the official OASIS schemas
 * kept in test/fixtures/csdl/ (see the README.md there for provenance).
 *
 * - CSDL XML  -> edmx.xsd + edm.xsd, checked by libxml2 (xmllint-wasm, pure
 *   WebAssembly, no native build, no network). OData 4.0 documents are checked
 *   against the OData 4.0 Errata 03 schemas; documents whose root says
 *   Version="4.01" against the 4.01 schemas (override with `schemaVersion`).
 * - CSDL JSON -> csdl.schema.json (OData CSDL JSON 4.01, JSON Schema draft-07),
 *   checked by Ajv 8. That schema accepts "$Version": "4.0" and "4.01".
 *
 * Schema files are read from disk once and cached. The JSON validator is compiled
 * once. xmllint-wasm cannot keep a compiled XSD between calls, so every
 * validateCsdlXml call parses the schemas again (about 60-100 ms).
 */
import { readFileSync } from "node:fs";
import Ajv, { type ErrorObject, type ValidateFunction } from "ajv";
import { validateXML, type XMLFileInfo } from "xmllint-wasm";

export interface CsdlValidationResult {
  valid: boolean;
  errors: string[];
}

/** Which OASIS XML schema set to validate against. */
export type CsdlXmlSchemaVersion = "4.0" | "4.01";

export interface ValidateCsdlXmlOptions {
  /**
   * Force a schema set. Default: "4.01" when the root edmx:Edmx has
   * Version="4.01", otherwise "4.0" (the OData 4.0 Errata 03 schemas, which
   * only accept Version="4.0").
   */
  schemaVersion?: CsdlXmlSchemaVersion;
}

export const EDMX_NS = "http://docs.oasis-open.org/odata/ns/edmx";
export const EDM_NS = "http://docs.oasis-open.org/odata/ns/edm";

/** test/fixtures/csdl/ as a file: URL (trailing slash matters for resolution). */
export const CSDL_FIXTURES_DIR = new URL("../fixtures/csdl/", import.meta.url);

const SCHEMA_DIRS: Record<CsdlXmlSchemaVersion, string> = {
  "4.0": "oasis-v4.0/",
  "4.01": "oasis-v4.01/",
};

/**
 * Entry schema handed to xmllint. It only imports the two OASIS schemas so that
 * both namespaces are loaded from the preloaded in-memory files. edm.xsd is
 * imported first on purpose: the 4.0 edmx.xsd imports the edm namespace
 * without a schemaLocation, so the edm schema must already be known.
 */
const ENTRY_XSD = `<?xml version="1.0" encoding="utf-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:virtual-entity-provider:test:csdl-entry" elementFormDefault="qualified">
  <xs:import namespace="${EDM_NS}" schemaLocation="edm.xsd" />
  <xs:import namespace="${EDMX_NS}" schemaLocation="edmx.xsd" />
</xs:schema>
`;

/** xmllint-wasm memory ceiling: 256 MiB (in 64 KiB wasm pages); the default 32 MiB is tight for big $metadata. */
const MAX_MEMORY_PAGES = 16 * 256;

const xsdCache = new Map<CsdlXmlSchemaVersion, XMLFileInfo[]>();

function loadXsds(version: CsdlXmlSchemaVersion): XMLFileInfo[] {
  let files = xsdCache.get(version);
  if (!files) {
    const dir = new URL(SCHEMA_DIRS[version], CSDL_FIXTURES_DIR);
    files = ["edm.xsd", "edmx.xsd"].map((fileName) => ({
      fileName,
      contents: readFileSync(new URL(fileName, dir), "utf8"),
    }));
    xsdCache.set(version, files);
  }
  return files;
}

interface RootInfo {
  prefix: string;
  localName: string;
  namespace: string | undefined;
  attributes: Record<string, string>;
}

/**
 * Finds the document element's start tag with a small scanner (skips the XML
 * declaration, comments, processing instructions and a DOCTYPE without an
 * internal subset). Returns undefined when it cannot tell; xmllint then reports
 * whatever is wrong with the document.
 */
function inspectRoot(xml: string): RootInfo | undefined {
  let rest = xml.replace(/^\uFEFF/, "");
  for (;;) {
    const trimmed = rest.replace(/^\s+/, "");
    const skip = /^(<\?[\s\S]*?\?>|<!--[\s\S]*?-->|<!DOCTYPE[^>\[]*>)/.exec(trimmed);
    if (!skip) {
      rest = trimmed;
      break;
    }
    rest = trimmed.slice(skip[0].length);
  }
  const tag = /^<([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)((?:\s+[^\s=>/]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*\/?>/.exec(rest);
  if (!tag) return undefined;
  const qname = tag[1]!;
  const attributes: Record<string, string> = {};
  for (const m of (tag[2] ?? "").matchAll(/([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
    attributes[m[1]!] = m[2] ?? m[3] ?? "";
  }
  const colon = qname.indexOf(":");
  const prefix = colon >= 0 ? qname.slice(0, colon) : "";
  const localName = colon >= 0 ? qname.slice(colon + 1) : qname;
  const namespace = attributes[prefix ? `xmlns:${prefix}` : "xmlns"];
  return { prefix, localName, namespace, attributes };
}

/**
 * Validates a CSDL XML document ($metadata) against the OASIS edmx.xsd/edm.xsd.
 * Also requires the document element to be {http://docs.oasis-open.org/odata/ns/edmx}Edmx
 * (the XSDs alone would also accept e.g. a bare edm:Schema as root).
 */
export async function validateCsdlXml(
  xml: string,
  options: ValidateCsdlXmlOptions = {},
): Promise<CsdlValidationResult> {
  const errors: string[] = [];
  const root = inspectRoot(xml);
  if (root && (root.localName !== "Edmx" || root.namespace !== EDMX_NS)) {
    errors.push(
      `csdl.xml: document element must be {${EDMX_NS}}Edmx, found {${root.namespace ?? ""}}${root.localName}`,
    );
  }
  const version: CsdlXmlSchemaVersion =
    options.schemaVersion ?? (root?.attributes["Version"] === "4.01" ? "4.01" : "4.0");

  const result = await validateXML({
    xml: [{ fileName: "csdl.xml", contents: xml }],
    schema: [{ fileName: "csdl-entry.xsd", contents: ENTRY_XSD }],
    preload: loadXsds(version),
    maxMemoryPages: MAX_MEMORY_PAGES,
  });
  if (!result.valid) {
    const messages = result.errors.map((e) => e.rawMessage.trim()).filter((m) => m.length > 0);
    errors.push(...(messages.length > 0 ? messages : [result.rawOutput.trim() || "xmllint: document is not valid"]));
  }
  return { valid: errors.length === 0, errors };
}

let jsonValidator: ValidateFunction | undefined;

function getJsonValidator(): ValidateFunction {
  if (!jsonValidator) {
    const schema = JSON.parse(
      readFileSync(new URL("oasis-v4.01/csdl.schema.json", CSDL_FIXTURES_DIR), "utf8"),
    ) as object;
    // Draft-07 schema: the default Ajv class. Its patterns use \p{L} etc., which
    // need Ajv's (default) unicodeRegExp: true. strict: false only silences
    // warnings about annotation keywords such as "default" next to "$ref".
    const ajv = new Ajv({ allErrors: true, strict: false });
    jsonValidator = ajv.compile(schema);
  }
  return jsonValidator;
}

function formatAjvError(e: ErrorObject): string {
  const where = e.instancePath === "" ? "/" : e.instancePath;
  const params = e.params as Record<string, unknown>;
  let detail = "";
  if (typeof params["additionalProperty"] === "string") detail = ` (${params["additionalProperty"]})`;
  else if (Array.isArray(params["allowedValues"])) detail = ` (${JSON.stringify(params["allowedValues"])})`;
  return `${where}: ${e.message ?? e.keyword}${detail}`;
}

/**
 * Validates a CSDL JSON document ($metadata?$format=json) against the OASIS
 * CSDL JSON 4.01 JSON Schema. Accepts the parsed document, or its JSON text.
 * Errors are Ajv's (allErrors), de-duplicated; oneOf/anyOf branches make them noisy.
 */
export function validateCsdlJson(doc: unknown): CsdlValidationResult {
  let value = doc;
  if (typeof doc === "string") {
    try {
      value = JSON.parse(doc) as unknown;
    } catch (err) {
      return { valid: false, errors: [`not JSON: ${(err as Error).message}`] };
    }
  }
  const validate = getJsonValidator();
  if (validate(value)) return { valid: true, errors: [] };
  const errors = [...new Set((validate.errors ?? []).map(formatAjvError))];
  return { valid: false, errors: errors.length > 0 ? errors : ["invalid CSDL JSON"] };
}
