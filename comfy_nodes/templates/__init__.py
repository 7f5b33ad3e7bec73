"""Workflow templates: a stored ComfyUI API-format workflow plus named parameters mapped to node inputs,
checked at submit against the limits ComfyUI's /object_info gives. Pure logic: no storage, no HTTP.

  definition.py  parse_template: a template as written -> its normalized form (the one every module reads)
  values.py      the parameter types, and check_value: one value against one parameter
  specs.py       what /object_info says of one node input (type, min/max/step, choices, multiline)
  errors.py      TemplateError ("<where>: template '<t>', parameter '<p>': <what>") and message helpers
  schema.py      json_schema: the JSON Schema (2020-12) of a template's params object, for forms and clients
  render.py      render: params -> a new API prompt; sweep: the cartesian product of swept values, bounded
  documents.py   one templates file -> its document (JSON, or YAML through a SafeLoader without aliases)
  folder.py      load_folder: every template in a folder (also seed 003's task_types config), with errors

Import from the modules (comfy_nodes.templates.definition, ...): this file exports nothing. Importing the
package never raises and needs nothing outside the standard library (PyYAML is optional: only reading a YAML
file needs it).
"""
