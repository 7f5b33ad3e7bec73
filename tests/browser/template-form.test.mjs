// The Templates tab's logic without a browser (js/lib/template-form.js): which canvas values can become
// parameters and their names, the body saved, the form's fields from a schema, and reading the form back.

import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {candidates, formFields, paramName, readParams, templateBody, usedObjectInfo, validTemplateName} from "../../js/lib/template-form.js";

const PROMPT = {
  "3": {class_type: "KSampler", inputs: {seed: 5, steps: 20, cfg: 7.5, sampler_name: "euler", model: ["4", 0]},
    _meta: {title: "KSampler"}},
  "4": {class_type: "CheckpointLoaderSimple", inputs: {ckpt_name: "a.safetensors"}, _meta: {title: "Load Checkpoint"}},
  "6": {class_type: "CLIPTextEncode", inputs: {text: "a fox", clip: ["4", 1]}, _meta: {title: "Prompt (+)"}},
  "7": {class_type: "CLIPTextEncode", inputs: {text: "blurry", clip: ["4", 1]}, _meta: {title: "Prompt (+)"}},
  "10": {class_type: "Odd", inputs: {list: [1, 2, 3], obj: {a: 1}, flag: true}},
};

describe("template-form", () => {
  it("lists widget values, never links or structured values, with unique names from title and input", () => {
    const c = candidates(PROMPT);
    assert.deepEqual(c.map((x) => `${x.node}.${x.input}`),
      ["3.seed", "3.steps", "3.cfg", "3.sampler_name", "4.ckpt_name", "6.text", "7.text", "10.flag"]);
    assert.deepEqual(c.filter((x) => x.input === "text").map((x) => x.name), ["prompt_text", "prompt_text_2"]);
    assert.equal(c[0].name, "ksampler_seed");
    assert.equal(paramName("1st Pass · seed!"), "_1st_pass_seed");
    assert.equal(paramName("äöü"), "aou");
    assert.equal(paramName("%%%"), "param");
    assert.equal(paramName("x".repeat(100)).length, 64);
  });

  it("builds the body with the chosen values as parameters and only the /object_info the workflow uses", () => {
    const chosen = candidates(PROMPT).filter((x) => x.input === "steps");
    const info = {KSampler: {input: {}}, Unused: {input: {}}, CLIPTextEncode: {input: {}}};
    const body = templateBody({name: "t", description: "d", prompt: PROMPT, chosen, objectInfo: info});
    assert.deepEqual(body.parameters, {ksampler_steps: {targets: ["3.steps"], title: "KSampler · steps"}});
    assert.deepEqual(Object.keys(body.object_info).sort(), ["CLIPTextEncode", "KSampler"]);
    assert.deepEqual(usedObjectInfo(null, PROMPT), {});
    assert.ok(validTemplateName("sd_basic-1.5"));
    assert.ok(!validTemplateName("../x") && !validTemplateName("") && !validTemplateName("a".repeat(65)));
  });

  const SCHEMA = {
    type: "object",
    required: ["image"],
    properties: {
      steps: {type: "integer", minimum: 1, maximum: 50, default: 20, title: "Steps", "x-comfymq-step": 1},
      cfg: {type: "number", minimum: 0, maximum: 30, default: 7.5},
      sampler: {enum: ["euler", "dpmpp_2m", 3], default: "euler"},
      hires: {type: "boolean", default: false},
      prompt: {type: "string", default: "a fox", "x-comfymq-multiline": true},
      image: {oneOf: [{type: "string"}, {type: "object"}], "x-comfymq-kind": "image", "x-comfymq-type": "image"},
    },
  };

  it("draws fields from the schema", () => {
    const f = formFields(SCHEMA);
    assert.deepEqual(f.map((x) => [x.name, x.kind]), [["steps", "integer"], ["cfg", "number"], ["sampler", "choice"],
      ["hires", "boolean"], ["prompt", "string"], ["image", "media"]]);
    assert.equal(f[0].title, "Steps");
    assert.equal(f[0].step, 1);
    assert.equal(f[0].max, 50);
    assert.ok(f[4].multiline);
    assert.ok(f[5].required && !f[0].required);
  });

  it("reads the form back typed and checked", () => {
    const f = formFields(SCHEMA);
    const ok = readParams(f, {steps: "30", cfg: "2.5", sampler: "3", hires: true, prompt: "", image: "cat.png"});
    assert.deepEqual(ok.errors, {});
    assert.deepEqual(ok.params, {steps: 30, cfg: 2.5, sampler: 3, hires: true, prompt: "", image: "cat.png"});
    const bad = readParams(f, {steps: "2.5", cfg: "x", sampler: "nope", hires: false, prompt: "p", image: ""});
    assert.deepEqual(Object.keys(bad.errors).sort(), ["cfg", "image", "sampler", "steps"]);
    assert.equal(readParams(f, {steps: "51", image: "a"}).errors.steps, "at most 50");
    assert.equal(readParams(f, {steps: "0", image: "a"}).errors.steps, "at least 1");
    assert.deepEqual(readParams(f, {steps: "", image: "a"}).params, {image: "a", prompt: ""});
    const big = readParams([{...f[0], max: undefined}], {steps: "18446744073709551615"});
    assert.match(big.errors.steps, /too large/);
  });
});
