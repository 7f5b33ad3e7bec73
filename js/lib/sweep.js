// Parsing what the user types as a sweep axis's values. Pure functions.
//
//   numbers: "5, 7.5, 9"   ranges: "1..5" (step 1), "0.5..1.5:0.25", "10..1:-3"
//   booleans: "true, false"        text: "euler, dpmpp_2m"; "*" = every choice of a combo
//   a JSON array is taken as it is: ["a, b", "c"]

export const MAX_VALUES = 10000;

/**
 * @param {string} text
 * @param {{current?: any, choices?: any[] | null, integer?: boolean}} [kind]
 *        current: the input's value now (its type decides how tokens parse); choices: a combo's values
 * @returns {{values: any[], error?: string}}
 */
export function parseValues(text, kind = {}) {
  const raw = (text || "").trim();
  if (!raw) return {values: [], error: "enter values, separated by commas"};
  const choices = Array.isArray(kind.choices) ? kind.choices : null;
  if (raw.startsWith("[")) {
    try {
      const v = JSON.parse(raw);
      if (!Array.isArray(v) || !v.length) return {values: [], error: "the JSON must be a non-empty array"};
      return checkChoices(v, choices);
    } catch (e) {
      return {values: [], error: "not valid JSON: " + (e instanceof Error ? e.message : String(e))};
    }
  }
  if (choices && raw === "*") return {values: choices.slice(0, MAX_VALUES)};
  const tokens = raw.split(",").map((t) => t.trim()).filter((t) => t.length);
  const current = kind.current;
  /** @type {any[]} */
  const values = [];
  for (const t of tokens) {
    if (typeof current === "number") {
      const range = /^(-?[\d.eE+-]+?)\s*\.\.\s*(-?[\d.eE+-]+?)(?:\s*:\s*(-?[\d.eE+-]+))?$/.exec(t);
      if (range) {
        const from = Number(range[1]);
        const to = Number(range[2]);
        let by = range[3] !== undefined ? Number(range[3]) : (to >= from ? 1 : -1);
        if (![from, to, by].every(isFinite) || by === 0 || (to - from) * by < 0) {
          return {values: [], error: `'${t}' is not a range like 1..5 or 0.5..2:0.5`};
        }
        const n = Math.floor((to - from) / by + 1e-9) + 1;
        if (values.length + n > MAX_VALUES) return {values: [], error: `more than ${MAX_VALUES} values`};
        const decimals = Math.max(decimalsOf(range[1]), decimalsOf(range[3] || "1"));
        for (let i = 0; i < n; i++) values.push(Number((from + i * by).toFixed(decimals)));
        continue;
      }
      const v = Number(t);
      if (!isFinite(v) || t === "") return {values: [], error: `'${t}' is not a number`};
      values.push(v);
    } else if (typeof current === "boolean") {
      const l = t.toLowerCase();
      if (["true", "yes", "on", "1"].includes(l)) values.push(true);
      else if (["false", "no", "off", "0"].includes(l)) values.push(false);
      else return {values: [], error: `'${t}' is not true or false`};
    } else {
      values.push(unquote(t));
    }
    if (values.length > MAX_VALUES) return {values: [], error: `more than ${MAX_VALUES} values`};
  }
  if (!values.length) return {values: [], error: "enter values, separated by commas"};
  if (kind.integer && values.some((v) => typeof v === "number" && !Number.isInteger(v))) {
    return {values: [], error: "this input takes whole numbers"};
  }
  return checkChoices(values, choices);
}

/** @param {string} s */
function decimalsOf(s) {
  const m = /\.(\d+)/.exec(s);
  return m ? m[1].length : 0;
}

/** @param {string} t */
function unquote(t) {
  if (t.length >= 2 && ((t[0] === '"' && t.endsWith('"')) || (t[0] === "'" && t.endsWith("'")))) return t.slice(1, -1);
  return t;
}

/**
 * @param {any[]} values
 * @param {any[] | null} choices
 * @returns {{values: any[], error?: string}}
 */
function checkChoices(values, choices) {
  if (!choices) return {values};
  const bad = values.filter((v) => !choices.includes(v));
  if (bad.length) {
    const shown = choices.slice(0, 6).join(", ") + (choices.length > 6 ? ", …" : "");
    return {values: [], error: `not a choice of this input: ${bad.slice(0, 3).join(", ")} (choices: ${shown})`};
  }
  return {values};
}

/**
 * How many jobs a request makes: count x the product of the axes' lengths.
 * @param {number} count
 * @param {any[][]} axes
 */
export function jobTotal(count, axes) {
  return axes.reduce((n, a) => n * a.length, Math.max(1, count || 1));
}
