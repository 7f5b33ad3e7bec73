"""Templates over HTTP (api/template_routes.py) on the standalone host's app with a real store: stored and
versioned in the store, checked against /object_info when stored and at submit, rendered with the precedence
request > default > workflow, swept and counted in one commit, loaded at start from a folder (seed 003's config
as it is), and durable across a reopen."""

from __future__ import annotations

import json

import jsonschema
import pytest

WORKFLOW = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 5,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "tpl", "images": ["8", 0]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
}
OBJECT_INFO = {
    "KSampler": {
        "input": {
            "required": {
                "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615}],
                "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
                "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1}],
                "sampler_name": [["euler", "euler_ancestral", "dpmpp_2m"], {}],
            }
        }
    },
    "LoadImage": {"input": {"required": {"image": [["example.png"], {"image_upload": True}]}}},
}
TEMPLATE = {
    "name": "sd_basic",
    "description": "text to image",
    "category": "text_to_image",
    "workflow": WORKFLOW,
    "parameters": {
        "prompt": {"targets": ["6.text"], "default": "a lighthouse"},
        "seed": {"targets": ["3.seed"]},
        "steps": {"targets": ["3.steps"], "max": 50},
        "sampler": {"targets": ["3.sampler_name"]},
        "size": {"type": "integer", "targets": ["5.width", "5.height"], "min": 256, "max": 1024},
        "image": {"targets": ["10.image"]},
    },
    "object_info": OBJECT_INFO,
}


async def call(client, method, path, body=None, status=200):
    if body is not None:
        resp = await client.request(method, path, json=body)
    else:  # (a state change carries the JSON content type even without a body: the site rules)
        headers = {} if method == "GET" else {"Content-Type": "application/json"}
        resp = await client.request(method, path, headers=headers)
    text = await resp.text()
    assert resp.status == status, text
    return json.loads(text) if text else None


@pytest.mark.asyncio
async def test_store_read_version_and_delete(client, service):
    created = await call(client, "POST", "/comfymq/templates", TEMPLATE, 201)
    t = created["template"]
    assert t["version"] == 1 and t["category"] == "text_to_image"
    params = t["parameters"]
    assert params["steps"] == {**params["steps"], "type": "integer", "min": 1, "max": 50}  # narrowed within INT
    assert params["sampler"]["type"] == "combo" and params["sampler"]["choices"] == [
        "euler",
        "euler_ancestral",
        "dpmpp_2m",
    ]
    assert params["image"]["type"] == "image"
    assert params["prompt"]["type"] == "string"  # from the workflow's value (no /object_info entry)
    await call(client, "POST", "/comfymq/templates", TEMPLATE, 409)
    same = await call(client, "PUT", "/comfymq/templates/sd_basic", TEMPLATE)
    assert same["result"] == "unchanged" and same["template"]["version"] == 1
    changed = {**TEMPLATE, "description": "v2"}
    assert (await call(client, "PUT", "/comfymq/templates/sd_basic", changed))["template"]["version"] == 2
    got = (await call(client, "GET", "/comfymq/templates/sd_basic"))["template"]
    assert got["version"] == 2 and [v["version"] for v in got["versions"]] == [1, 2]
    assert (await call(client, "GET", "/comfymq/templates/sd_basic?version=1"))["template"][
        "description"
    ] == "text to image"
    listed = (await call(client, "GET", "/comfymq/templates"))["templates"]
    assert [(x["name"], x["version"]) for x in listed] == [("sd_basic", 2)]
    assert (await call(client, "DELETE", "/comfymq/templates/sd_basic"))["version"] == 3
    await call(client, "GET", "/comfymq/templates/sd_basic", status=404)
    await call(client, "DELETE", "/comfymq/templates/sd_basic", status=404)
    assert (await call(client, "GET", "/comfymq/templates"))["templates"] == []
    again = await call(client, "POST", "/comfymq/templates", TEMPLATE, 201)
    assert again["template"]["version"] == 4  # numbers go on: a recorded version names one text


@pytest.mark.asyncio
async def test_bad_templates_are_refused_naming_template_and_parameter(client, service):
    bad = json.loads(json.dumps(TEMPLATE))
    bad["parameters"]["steps"]["max"] = 20000  # past /object_info's 10000
    resp = await client.post("/comfymq/templates", json=bad)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["type"] == "invalid_template" and "sd_basic" in err["message"] and "steps" in err["message"]
    bad = json.loads(json.dumps(TEMPLATE))
    bad["parameters"]["seed"]["targets"] = ["3.model"]  # a link, not a value
    assert (await client.post("/comfymq/templates", json=bad)).status == 400
    bad = json.loads(json.dumps(TEMPLATE))
    bad["webhooks"] = ["ftp://x/"]
    assert (await client.post("/comfymq/templates", json=bad)).status == 400
    resp = await client.put("/comfymq/templates/other", json=TEMPLATE)
    assert resp.status == 400 and "the path 'other'" in (await resp.json())["error"]["message"]
    assert service.store.list_docs(prefix="tpl/") == []


@pytest.mark.asyncio
async def test_jobs_from_a_template_follow_the_precedence_and_record_the_version(client, service):
    await call(client, "POST", "/comfymq/templates", TEMPLATE, 201)
    body = await call(client, "POST", "/comfymq/templates/sd_basic/jobs", {"params": {"seed": 42, "size": 768}})
    assert body["template"] == {"name": "sd_basic", "version": 1} and body["count"] == 1
    job = service.store.get(body["jobs"][0]["id"])
    p = job["prompt"]
    assert p["3"]["inputs"]["seed"] == 42  # the request's value
    assert p["5"]["inputs"]["width"] == 768 and p["5"]["inputs"]["height"] == 768  # both targets
    assert p["6"]["inputs"]["text"] == "a lighthouse"  # the template's default
    assert p["3"]["inputs"]["steps"] == 20 and p["7"]["inputs"]["text"] == "blurry"  # the workflow's own
    assert job["labels"]["comfymq/template"] == {"name": "sd_basic", "version": 1, "params": {"seed": 42, "size": 768}}
    listed = (await call(client, "GET", "/comfymq/templates/sd_basic/jobs"))["jobs"]
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["template"]["version"] == 1


@pytest.mark.parametrize(
    "params, words",
    [
        ({"steps": 51}, "steps"),
        ({"steps": True}, "steps"),
        ({"steps": 20.0}, "steps"),
        ({"size": 100}, "size"),
        ({"sampler": "bogus"}, "sampler"),
        ({"nope": 1}, "nope"),
        ({"prompt": 5}, "prompt"),
    ],
)
@pytest.mark.asyncio
async def test_bad_values_are_refused_and_queue_nothing(client, service, params, words):
    await call(client, "POST", "/comfymq/templates", TEMPLATE, 201)
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"params": params})
    assert resp.status == 400
    assert words in (await resp.json())["error"]["message"]
    assert service.store.stats()["total"] == 0


@pytest.mark.asyncio
async def test_sweep_and_count_in_one_batch_and_bounded(client, service):
    await call(client, "POST", "/comfymq/templates", TEMPLATE, 201)
    body = await call(
        client,
        "POST",
        "/comfymq/templates/sd_basic/jobs",
        {"sweep": {"size": [512, 768], "sampler": ["euler", "dpmpp_2m"]}, "count": 2, "priority": 7},
    )
    assert body["count"] == 8 and len({j["batch_id"] for j in body["jobs"]}) == 1
    combos = {(j["params"]["size"], j["params"]["sampler"]) for j in body["jobs"]}
    assert combos == {(512, "euler"), (512, "dpmpp_2m"), (768, "euler"), (768, "dpmpp_2m")}
    jobs = [service.store.get(j["id"]) for j in body["jobs"]]
    assert all(j["priority"] == 7 for j in jobs)
    seeds = {j["prompt"]["3"]["inputs"]["seed"] for j in jobs}
    assert len(seeds) == 8  # count gives fresh seeds to each copy
    resp = await client.post(
        "/comfymq/templates/sd_basic/jobs", json={"sweep": {"seed": list(range(200))}, "count": 100}
    )
    assert resp.status in (400, 413)
    assert service.store.stats()["total"] == 8


@pytest.mark.asyncio
async def test_the_schema_is_a_json_schema_a_form_can_use(client, service):
    await call(client, "POST", "/comfymq/templates", TEMPLATE, 201)
    schema = await call(client, "GET", "/comfymq/templates/sd_basic/schema")
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert props["prompt"]["default"] == "a lighthouse" and props["seed"]["default"] == 5
    assert props["sampler"]["enum"] == ["euler", "euler_ancestral", "dpmpp_2m"]
    jsonschema.validate({"seed": 1, "size": 512}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"size": 2048}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"unknown": 1}, schema)


@pytest.mark.asyncio
async def test_an_image_parameter_takes_a_stored_input_that_travels(client, service):
    await call(client, "POST", "/comfymq/templates", TEMPLATE, 201)
    up = await client.post("/comfymq/inputs?name=cat.png", data=b"\x89PNG fake image bytes")
    assert up.status == 200, await up.text()
    sha = (await up.json())["sha256"]
    body = await call(client, "POST", "/comfymq/templates/sd_basic/jobs", {"params": {"image": sha}})
    value = service.store.get(body["jobs"][0]["id"])["prompt"]["10"]["inputs"]["image"]
    assert sha in json.dumps(value)  # the stored-input form a worker fetches
    resp = await client.post("/comfymq/templates/sd_basic/jobs", json={"params": {"image": "blake3:" + "0" * 64}})
    assert resp.status == 400


@pytest.mark.asyncio
async def test_templates_survive_a_reopen(tmp_path):
    from comfy_nodes.service import QueueService
    from comfy_nodes.templates.registry import TemplateRegistry

    svc = QueueService(tmp_path / "d", threads=2)
    raw = {k: v for k, v in TEMPLATE.items() if k != "object_info"}
    TemplateRegistry(svc.store).save(raw, object_info=OBJECT_INFO)
    TemplateRegistry(svc.store).save({**raw, "description": "x"}, object_info=OBJECT_INFO)
    svc.close()
    svc = QueueService(tmp_path / "d", threads=2)
    try:
        rec = TemplateRegistry(svc.store).get("sd_basic")
        assert rec["version"] == 2 and rec["template"]["parameters"]["steps"]["max"] == 50
    finally:
        svc.close()


SEED_CONFIG = """
database:
  client: {host: localhost, port: 3306, user: root, password: "123456", database: comfyui_client}
redis: {host: localhost, port: 6379, db: 0}
nodes:
  static_nodes:
    - node_id: "comfyui-worker-1"
      host: "192.168.1.101"
      port: 8188
task_types:
  text_to_image:
    workflows:
      sd_basic:
        workflow_file: "workflows/text_to_image/文生图.json"
        parameter_mapping:
          prompt:
            node_id: "6"
            input_name: "text"
            default_value: ""
          width:
            node_id: "5"
            input_name: "width"
            default_value: 512
"""


def test_seed_003_config_loads_at_start_of_the_standalone_host(tmp_path):
    from http_host import HostProcess

    folder = tmp_path / "backend"
    (folder / "workflows" / "text_to_image").mkdir(parents=True)
    (folder / "config.yaml").write_text(SEED_CONFIG, encoding="utf-8")
    wf = {k: v for k, v in WORKFLOW.items() if k != "10"}
    (folder / "workflows" / "text_to_image" / "文生图.json").write_text(json.dumps(wf, ensure_ascii=False), "utf-8")
    with HostProcess(tmp_path, f"--templates-dir={folder}") as host:
        status, listed = host.json("GET", "/comfymq/templates")
        assert status == 200, host.output()
        [t] = listed["templates"]
        assert t["name"] == "sd_basic" and t["category"] == "text_to_image" and t["source"].startswith("file:")
        status, body = host.json("POST", "/comfymq/templates/sd_basic/jobs", {"params": {"prompt": "hi"}})
        assert status == 200, body
        status, job = host.json("GET", f"/comfymq/jobs/{body['jobs'][0]['id']}")
        assert job["job"]["prompt"]["6"]["inputs"]["text"] == "hi"
        assert job["job"]["prompt"]["5"]["inputs"]["width"] == 512  # the mapping's default_value
    # a bad file is logged naming it, and the rest still load
    (folder / "broken.json").write_text(
        '{"name": "x", "workflow": {"1": {"class_type": "A", "inputs": {}}}, "parameters": {"p": {"targets": ["9.z"]}}}'
    )
    with HostProcess(tmp_path, f"--templates-dir={folder}") as host:
        status, listed = host.json("GET", "/comfymq/templates")
        assert [t["name"] for t in listed["templates"]] == ["sd_basic"]
        assert listed["templates"][0]["version"] == 1  # unchanged: no new version
        out = host.output()
        assert "broken.json" in out and "template 'x'" in out and "parameter 'p'" in out
