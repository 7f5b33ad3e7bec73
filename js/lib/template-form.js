// Templates in the panel, the logic without the DOM: which values of the canvas's workflow can become parameters
// ("Save as template"), a parameter's name from its node's title and input, the body POST /comfymq/templates takes
// (with the part of /object_info its nodes use, so the host knows their limits and choices), the form's fields
// from a template's JSON Schema (GET /comfymq/templates/{name}/schema), and the params read back from the form,
// checked as the schema says (the host checks them again).

/**
 * A value of the workflow that can become a parameter: a widget's value (not a link to another node's output).
 * @typedef {{node: string, input: string, value: string | number | boolean, title: string, classType: string,
 *            name: string}} Candidate
 */

/**
 * One field of a template's form. kind: how it is typed in (media: a file name, an input's sha256 or an asset).
 * @typedef {{name: string, title: string, description: string, kind: "integer" | "number" | "boolean" | "choice" |
 *            "string" | "media", type: string, default?: any, min?: number, max?: number, step?: number,
 *            choices?: any[], required: boolean, multiline: boolean}} Field
 */

/** A parameter name: letters, digits and _, starting with a letter or _, at most 64. @param {string} text */
export function paramName(text) {
  let s = String(text).normalize("NFKD").replace(/[\u0300-\u036f]/g, "")  // accents off their letters
    .replace(/[^A-Za-z0-9_]+/g, "_").replace(/_+/g, "_").replace(/^_+|_+$/g, "").toLowerCase();
  if (!s) s = "param";
  if (/^[0-9]/.test(s)) s = "_" + s;
  return s.slice(0, 64);
}

/** @param {any} v */
const isLink = (v) => Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "number";

/**
 * The widget values of an API prompt, in node order, each with a parameter name unique among them
 * ("<node title>_<input>").
 * @param {Record<string, {class_type: string, inputs: Record<string, any>, _meta?: {title?: string}}>} prompt
 * @returns {Candidate[]}
 */
export function candidates(prompt) {
  /** @type {Candidate[]} */
  const out = [];
  const used = new Set();
  const ids = Object.keys(prompt).sort((a, b) => (Number(a) - Number(b)) || a.localeCompare(b));
  for (const node of ids) {
    const n = prompt[node];
    if (!n || typeof n.inputs !== "object" || n.inputs === null) continue;
    const title = (n._meta && n._meta.title) || n.class_type;
    for (const [input, value] of Object.entries(n.inputs)) {
      if (isLink(value) || !["string", "number", "boolean"].includes(typeof value)) continue;
      let name = paramName(`${title}_${input}`);
      for (let i = 2; used.has(name); i++) name = paramName(`${title}_${input}_${i}`);
      used.add(name);
      out.push({node, input, value, title, classType: n.class_type, name});
    }
  }
  return out;
}

/**
 * The part of /object_info the prompt's node classes use.
 * @param {Record<string, any> | null} objectInfo @param {Record<string, {class_type: string}>} prompt
 */
export function usedObjectInfo(objectInfo, prompt) {
  /** @type {Record<string, any>} */
  const out = {};
  if (!objectInfo) return out;
  for (const n of Object.values(prompt)) {
    const c = n && n.class_type;
    if (c && objectInfo[c]) out[c] = objectInfo[c];
  }
  return out;
}

/**
 * The body of POST /comfymq/templates: the workflow, and each chosen value as a parameter named as given.
 * @param {{name: string, description: string, prompt: Record<string, any>, chosen: Candidate[],
 *          objectInfo: Record<string, any> | null}} o
 */
export function templateBody(o) {
  /** @type {Record<string, any>} */
  const parameters = {};
  for (const c of o.chosen) {
    parameters[c.name] = {targets: [`${c.node}.${c.input}`], title: `${c.title} · ${c.input}`};
  }
  const body = {name: o.name, description: o.description, workflow: o.prompt, parameters,
    object_info: usedObjectInfo(o.objectInfo, o.prompt)};
  return body;
}

/** Template names the host takes. @param {string} name */
export const validTemplateName = (name) => /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name);

/**
 * The form's fields from a template's JSON Schema.
 * @param {Record<string, any>} schema @returns {Field[]}
 */
export function formFields(schema) {
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  return Object.entries(schema.properties || {}).map(([name, p]) => {
    const type = String(p["x-comfymq-type"] || p.type || "string");
    /** @type {Field["kind"]} */
    let kind = "string";
    if (Array.isArray(p.enum)) kind = "choice";
    else if (p["x-comfymq-kind"]) kind = "media";
    else if (p.type === "integer" || p.type === "number" || p.type === "boolean") kind = p.type;
    /** @type {Field} */
    const f = {name, title: String(p.title || name), description: String(p.description || ""), kind, type,
      required: required.has(name), multiline: !!p["x-comfymq-multiline"]};
    if ("default" in p) f.default = p.default;
    if (typeof p.minimum === "number") f.min = p.minimum;
    if (typeof p.maximum === "number") f.max = p.maximum;
    if (typeof p["x-comfymq-step"] === "number") f.step = p["x-comfymq-step"];
    if (Array.isArray(p.enum)) f.choices = p.enum;
    return f;
  });
}

/**
 * The params object from what the form holds (strings from inputs, booleans from checkboxes). A field left as its
 * default is sent all the same (what the user saw is what runs); an empty optional one is left out.
 * @param {Field[]} fields @param {Record<string, string | boolean>} raw
 * @returns {{params: Record<string, any>, errors: Record<string, string>}}
 */
export function readParams(fields, raw) {
  /** @type {Record<string, any>} */
  const params = {};
  /** @type {Record<string, string>} */
  const errors = {};
  for (const f of fields) {
    const v = raw[f.name];
    if (f.kind === "boolean") {
      if (typeof v === "boolean") params[f.name] = v;
      continue;
    }
    const text = v == null ? "" : String(v);
    if (text === "" && f.kind !== "string") {
      if (f.required) errors[f.name] = "required";
      continue;
    }
    if (f.kind === "integer" || f.kind === "number") {
      const n = Number(text.trim());
      if (text.trim() === "" || !Number.isFinite(n)) {
        errors[f.name] = "not a number";
        continue;
      }
      if (f.kind === "integer" && !Number.isInteger(n)) {
        errors[f.name] = "a whole number";
        continue;
      }
      if (f.kind === "integer" && !Number.isSafeInteger(n)) {
        errors[f.name] = "too large for the browser to send exactly (use the API)";
        continue;
      }
      if (f.min != null && n < f.min) {
        errors[f.name] = `at least ${f.min}`;
        continue;
      }
      if (f.max != null && n > f.max) {
        errors[f.name] = `at most ${f.max}`;
        continue;
      }
      params[f.name] = n;
    } else if (f.kind === "choice") {
      const hit = (f.choices || []).find((c) => String(c) === text);
      if (hit === undefined) errors[f.name] = "not one of the choices";
      else params[f.name] = hit;
    } else {
      if (f.required && text === "") errors[f.name] = "required";
      else params[f.name] = text;
    }
  }
  return {params, errors};
}
