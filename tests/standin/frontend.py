"""What the real ComfyUI frontend needs from the stand-in: ComfyUI's app routes and the static files.

    add_app_routes(app)      ComfyUI's user manager, settings, model lists, custom node manager (i18n, workflow
                             templates), global subgraphs and internal routes, with ComfyUI's shapes (app/
                             user_manager.py, app/app_settings.py, app/model_manager.py, app/custom_node_manager.py,
                             app/subgraph_manager.py, api_server/routes/internal); make_app always adds them, as
                             ComfyUI always has them
    add_static_routes(app)   GET / (index.html, never cached), every file of the frontend's folder, and
                             /extensions/<pack>/<file> from each loaded pack's WEB_DIRECTORY; added after every
                             other route, as ComfyUI adds its static routes last
    package_web_root()       the `static` folder of the installed comfyui-frontend-package (tests/requirements.txt)
    capture_logs()           keeps this process's log records for GET /internal/logs (the frontend's log panel)

The frontend is the PyPI package comfyui-frontend-package (the one ComfyUI's requirements.txt pins; 1.35.9 is the
version ComfyUI v0.8.0 requires). Single-user mode only (ComfyUI without --multi-user): every request is user
"default", whose files live in <user dir>/default.
"""

from __future__ import annotations

import collections
import glob
import json
import logging
import os
import shutil
import tempfile
import time
from urllib import parse

from aiohttp import web

from .server import MODEL_FOLDERS, add_routes, get_state

log = logging.getLogger("standin.frontend")

DEFAULT_USER = "default"
SYSTEM_USER_PREFIX = "__"  # folder_paths.SYSTEM_USER_PREFIX: users ComfyUI never serves over HTTP

# Content types for the frontend's files, set explicitly so the answer does not depend on /etc/mime.types.
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".wasm": "application/wasm",
    ".glb": "model/gltf-binary",
}

EXTRA_LOCALE_FILES = ("nodeDefs.json", "commands.json", "settings.json")
EXAMPLE_WORKFLOW_FOLDER_NAMES = ("example_workflows", "example", "examples", "workflow", "workflows")


def package_web_root() -> str | None:
    """The static folder of the installed comfyui-frontend-package, or None if it is not installed."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    root = os.path.join(os.path.dirname(os.path.abspath(comfyui_frontend_package.__file__)), "static")
    return root if os.path.isfile(os.path.join(root, "index.html")) else None


def package_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("comfyui_frontend_package")
    except Exception:  # noqa: BLE001 - not installed
        return None


# ---- logs (GET /internal/logs) -----------------------------------------------------------------------------


class LogBuffer(logging.Handler):
    """app.logger's ring of recent records: [{"t": time, "m": message}]."""

    def __init__(self, size: int = 300):
        super().__init__()
        self.entries: collections.deque = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        try:
            self.entries.append(
                {
                    "t": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)) + ".%03d" % record.msecs,
                    "m": self.format(record) + "\n",
                }
            )
        except Exception:  # noqa: BLE001 - logging must never raise
            pass


_log_buffer: LogBuffer | None = None


def capture_logs(level: int = logging.INFO) -> LogBuffer:
    """Keeps this process's log records (root logger) for /internal/logs; idempotent."""
    global _log_buffer
    if _log_buffer is None:
        _log_buffer = LogBuffer()
        _log_buffer.setLevel(level)
        logging.getLogger().addHandler(_log_buffer)
    return _log_buffer


# ---- users and userdata (app/user_manager.py, single-user) -------------------------------------------------


def _is_within(directory: str, target: str) -> bool:
    """folder_paths.is_within_directory."""
    directory, target = os.path.realpath(directory), os.path.realpath(target)
    try:
        return os.path.commonpath([directory, target]) == directory
    except ValueError:
        return False


def public_user_directory(state, user: str) -> str | None:
    """folder_paths.get_public_user_directory: None for empty or system users."""
    if not user or user.startswith(SYSTEM_USER_PREFIX):
        return None
    return os.path.join(state.user_dir, user)


def request_user_filepath(request, file, create_dir: bool = True) -> str | None:
    """UserManager.get_request_user_filepath (single user: always "default")."""
    state = get_state(request)
    user_root = public_user_directory(state, DEFAULT_USER)
    if user_root is None or not _is_within(state.user_dir, user_root):
        return None
    path = user_root
    if file is not None:
        if "%" in file:
            file = parse.unquote(file)
        path = os.path.abspath(os.path.join(user_root, file))
        if not _is_within(user_root, path):
            return None
    parent = os.path.split(path)[0]
    if create_dir and not os.path.exists(parent):
        os.makedirs(parent, exist_ok=True)
    return path


def file_info(path: str, relative_to: str) -> dict:
    return {
        "path": os.path.relpath(path, relative_to).replace(os.sep, "/"),
        "size": os.path.getsize(path),
        "modified": int(os.path.getmtime(path) * 1000),
        "created": int(os.path.getctime(path) * 1000),
    }


async def get_users(request):
    user_dir = request_user_filepath(request, None, create_dir=False)
    if not user_dir:
        return web.Response(status=403, text="Invalid user directory")
    return web.json_response({"storage": "server", "migrated": os.path.exists(user_dir)})


async def post_users(request):
    # ComfyUI without --multi-user: adding a user to the one-user table answers like ComfyUI's add_user would,
    # but the stand-in keeps serving "default" (as ComfyUI does without --multi-user).
    try:
        body = await request.json()
        username = body["username"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return web.Response(status=400)
    if username == DEFAULT_USER:
        return web.json_response({"error": "Duplicate username."}, status=400)
    name = str(username).strip()
    if not name:
        return web.json_response({"error": "username not provided"}, status=400)
    if name.startswith(SYSTEM_USER_PREFIX):
        return web.json_response({"error": "System User prefix not allowed"}, status=400)
    return web.json_response(name)


async def list_userdata(request):
    directory = request.rel_url.query.get("dir", "")
    if not directory:
        return web.Response(status=400, text="Directory not provided")
    path = request_user_filepath(request, directory)
    if not path:
        return web.Response(status=403, text="Invalid directory")
    if not os.path.exists(path):
        return web.Response(status=404, text="Directory not found")
    query = request.rel_url.query
    recurse = query.get("recurse", "").lower() == "true"
    full_info = query.get("full_info", "").lower() == "true"
    split_path = query.get("split", "").lower() == "true"
    pattern = os.path.join(glob.escape(path), "**", "*") if recurse else os.path.join(glob.escape(path), "*")

    def process(full_path):
        if full_info:
            return file_info(full_path, path)
        rel_path = os.path.relpath(full_path, path).replace(os.sep, "/")
        if split_path:
            return [rel_path] + rel_path.split("/")
        return rel_path

    return web.json_response([process(p) for p in glob.glob(pattern, recursive=recurse) if os.path.isfile(p)])


async def list_userdata_v2(request):
    requested = parse.unquote(request.rel_url.query.get("path", ""))
    base = request_user_filepath(request, None, create_dir=False)
    target = request_user_filepath(request, requested, create_dir=False) if requested else base
    if not target:
        return web.Response(status=400, text="Invalid path requested")
    if not os.path.exists(target):
        if target == base:
            return web.json_response([])
        return web.Response(status=404, text="Requested path not found")
    if not os.path.isdir(target):
        return web.Response(status=400, text="Requested path is not a directory")
    results = []
    for root, dirs, files in os.walk(target, topdown=True):
        for d in dirs:
            results.append(
                {
                    "name": d,
                    "path": os.path.relpath(os.path.join(root, d), base).replace(os.sep, "/"),
                    "type": "directory",
                }
            )
        for f in files:
            full = os.path.join(root, f)
            entry = {"name": f, "path": os.path.relpath(full, base).replace(os.sep, "/"), "type": "file"}
            try:
                st = os.stat(full)
                entry["size"] = st.st_size
                entry["modified"] = st.st_mtime
            except OSError:
                pass
            results.append(entry)
    results.sort(key=lambda x: (x["type"] != "directory", x["name"].lower()))
    return web.json_response(results)


def _user_data_path(request, check_exists: bool = False, param: str = "file"):
    file = request.match_info.get(param, None)
    if not file:
        return web.Response(status=400)
    path = request_user_filepath(request, file)
    if not path:
        return web.Response(status=403)
    if check_exists and not os.path.exists(path):
        return web.Response(status=404)
    return path


async def get_userdata(request):
    path = _user_data_path(request, check_exists=True)
    if not isinstance(path, str):
        return path
    if os.path.isdir(path):
        return web.Response(status=404)
    return web.FileResponse(path)


async def post_userdata(request):
    path = _user_data_path(request)
    if not isinstance(path, str):
        return path
    overwrite = request.query.get("overwrite", "true") != "false"
    full_info = request.query.get("full_info", "false").lower() == "true"
    if not overwrite and os.path.exists(path):
        return web.Response(status=409, text="File already exists")
    try:
        body = await request.read()
        fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.replace(tmp_path, path)
        except BaseException:
            os.unlink(tmp_path)
            raise
    except OSError as e:
        log.warning("Error saving file '%s': %s", path, e)
        return web.Response(status=400, reason='Invalid filename. Please avoid special characters like :\\/*?"<>|')
    user_path = request_user_filepath(request, None)
    return web.json_response(file_info(path, user_path) if full_info else os.path.relpath(path, user_path))


async def delete_userdata(request):
    path = _user_data_path(request, check_exists=True)
    if not isinstance(path, str):
        return path
    os.remove(path)
    return web.Response(status=204)


async def move_userdata(request):
    source = _user_data_path(request, check_exists=True)
    if not isinstance(source, str):
        return source
    dest = _user_data_path(request, check_exists=False, param="dest")
    if not isinstance(dest, str):
        return dest
    overwrite = request.query.get("overwrite", "true") != "false"
    full_info = request.query.get("full_info", "false").lower() == "true"
    if not overwrite and os.path.exists(dest):
        return web.Response(status=409, text="File already exists")
    shutil.move(source, dest)
    user_path = request_user_filepath(request, None)
    return web.json_response(file_info(dest, user_path) if full_info else os.path.relpath(dest, user_path))


# ---- settings (app/app_settings.py) --------------------------------------------------------------------------


def store_settings(state, settings: dict) -> str:
    """Merges `settings` into the default user's comfy.settings.json (as POST /settings does); returns its path."""
    user_root = public_user_directory(state, DEFAULT_USER)
    os.makedirs(user_root, exist_ok=True)
    path = os.path.join(user_root, "comfy.settings.json")
    current = _read_json(path) if os.path.isfile(path) else {}
    with open(path, "w") as f:
        f.write(json.dumps({**current, **settings}, indent=4))
    return path


def _settings_file(request) -> str:
    file = request_user_filepath(request, "comfy.settings.json")
    if file is None:
        raise web.HTTPForbidden()
    return file


def load_settings(request) -> dict:
    file = _settings_file(request)
    if os.path.isfile(file):
        try:
            with open(file) as f:
                return json.load(f)
        except Exception:  # noqa: BLE001 - like ComfyUI: a corrupt file reads as no settings
            log.error("The user settings file is corrupted: %s", file)
            return {}
    return {}


def save_settings(request, settings: dict) -> None:
    with open(_settings_file(request), "w") as f:
        f.write(json.dumps(settings, indent=4))


async def get_settings(request):
    return web.json_response(load_settings(request))


async def get_setting(request):
    settings = load_settings(request)
    setting_id = request.match_info.get("id", None)
    return web.json_response(settings[setting_id] if setting_id and setting_id in settings else None)


async def post_settings(request):
    settings = load_settings(request)
    new_settings = await request.json()
    save_settings(request, {**settings, **new_settings})
    return web.Response(status=200)


async def post_setting(request):
    setting_id = request.match_info.get("id", None)
    if not setting_id:
        return web.Response(status=400)
    settings = load_settings(request)
    settings[setting_id] = await request.json()
    save_settings(request, settings)
    return web.Response(status=200)


# ---- model lists (app/model_manager.py) ----------------------------------------------------------------------


def model_folder_paths(folder: str) -> list:
    """folder_paths.get_folder_paths for a model folder: <cwd>/models/<folder> (the stand-in's models are names
    without files, so nothing is ever read from there)."""
    return [os.path.join(os.getcwd(), "models", folder)]


async def get_model_folders(request):
    return web.json_response(
        [{"name": f, "folders": model_folder_paths(f)} for f in MODEL_FOLDERS if f not in ("configs", "custom_nodes")]
    )


async def get_model_files(request):
    folder = request.match_info.get("folder", None)
    if folder not in MODEL_FOLDERS:
        return web.Response(status=404)
    state = get_state(request)
    names = list(state.models) if folder == "checkpoints" else []  # the stand-in's models have no files
    return web.json_response(
        [
            {"name": n, "pathIndex": 0, "modified": state.started_at, "created": state.started_at, "size": 0}
            for n in names
        ]
    )


async def get_model_preview(request):
    return web.Response(status=404)  # no model files, so no previews


async def view_metadata(request):
    return web.Response(status=404)  # no .safetensors files to read


# ---- custom node manager (i18n, workflow templates) and global subgraphs ---------------------------------------


def _merge_json(base, update):
    """utils.json_util.merge_json_recursive."""
    if not isinstance(base, dict) or not isinstance(update, dict):
        return update
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge_json(out[k], v) if k in out and isinstance(out[k], dict) and isinstance(v, dict) else v
    return out


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        log.error("Error loading %s", path)
        return {}


async def get_i18n(request):
    translations: dict = {}
    for pack_dir in sorted(get_state(request).loaded_module_dirs.values()):
        locales = os.path.join(pack_dir, "locales")
        if not os.path.isdir(locales):
            continue
        for lang_dir in glob.glob(os.path.join(glob.escape(locales), "*/")):
            lang = os.path.basename(os.path.dirname(lang_dir))
            translations.setdefault(lang, {})
            data = _read_json(os.path.join(lang_dir, "main.json"))
            for extra in EXTRA_LOCALE_FILES:
                extra_data = _read_json(os.path.join(lang_dir, extra))
                if extra_data:
                    data[extra.split(".")[0]] = extra_data
            if data:
                translations[lang] = _merge_json(translations[lang], data)
    return web.json_response(translations)


def _workflow_templates(state) -> dict:
    out: dict = {}
    for name, pack_dir in state.loaded_module_dirs.items():
        for folder in EXAMPLE_WORKFLOW_FOLDER_NAMES:
            d = os.path.join(pack_dir, folder)
            if os.path.isdir(d):
                for f in sorted(glob.glob(os.path.join(glob.escape(d), "*.json"))):
                    out.setdefault(name, {}).setdefault(os.path.splitext(os.path.basename(f))[0], f)
    return out


async def get_workflow_templates(request):
    return web.json_response({m: list(t) for m, t in _workflow_templates(get_state(request)).items()})


async def get_workflow_template_file(request):
    filename = request.match_info["filename"]
    if not filename.endswith(".json"):
        raise web.HTTPNotFound()
    templates = _workflow_templates(get_state(request)).get(request.match_info["module_name"]) or {}
    path = templates.get(filename[: -len(".json")])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path)


async def get_global_subgraphs(request):
    return web.json_response({})  # no pack ships subgraph blueprints


async def get_global_subgraph(request):
    return web.json_response(None)


# ---- internal routes (/internal/..., never under /api) --------------------------------------------------------


async def internal_logs(request):
    entries = list(_log_buffer.entries) if _log_buffer is not None else []
    return web.json_response("".join(e["t"] + " - " + e["m"] for e in entries))


async def internal_logs_raw(request):
    entries = list(_log_buffer.entries) if _log_buffer is not None else []
    size = shutil.get_terminal_size((80, 24))
    return web.json_response({"entries": entries, "size": {"cols": size.columns, "rows": size.lines}})


async def internal_logs_subscribe(request):
    try:
        await request.json()
    except json.JSONDecodeError:
        return web.Response(status=400)
    return web.Response(status=200)  # the stand-in streams no terminal output (no "logs" messages)


async def internal_folder_paths(request):
    state = get_state(request)
    paths = {f: model_folder_paths(f) for f in MODEL_FOLDERS}
    paths["custom_nodes"] = sorted({os.path.dirname(d) for d in state.loaded_module_dirs.values()})
    return web.json_response(paths)


async def internal_files(request):
    directory_type = request.match_info["directory_type"]
    if directory_type not in ("output", "input", "temp"):
        return web.json_response({"error": "Invalid directory type"}, status=400)
    directory = get_state(request).dir_by_type(directory_type)

    def visible(entry) -> bool:
        return entry.is_file() and not entry.name.startswith(".")

    entries = sorted((e for e in os.scandir(directory) if visible(e)), key=lambda e: -e.stat().st_mtime)
    return web.json_response([e.name for e in entries], status=200)


APP_ROUTES = [
    ("GET", "/users", get_users),
    ("POST", "/users", post_users),
    ("GET", "/userdata", list_userdata),
    ("GET", "/v2/userdata", list_userdata_v2),
    ("GET", "/userdata/{file}", get_userdata),
    ("POST", "/userdata/{file}", post_userdata),
    ("DELETE", "/userdata/{file}", delete_userdata),
    ("POST", "/userdata/{file}/move/{dest}", move_userdata),
    ("GET", "/settings", get_settings),
    ("GET", "/settings/{id}", get_setting),
    ("POST", "/settings", post_settings),
    ("POST", "/settings/{id}", post_setting),
    ("GET", "/experiment/models", get_model_folders),
    ("GET", "/experiment/models/{folder}", get_model_files),
    ("GET", "/experiment/models/preview/{folder}/{path_index}/{filename:.*}", get_model_preview),
    ("GET", "/view_metadata/{folder_name}", view_metadata),
    ("GET", "/workflow_templates", get_workflow_templates),
    ("GET", "/workflow_templates/{module_name}/{filename}", get_workflow_template_file),
    ("GET", "/i18n", get_i18n),
    ("GET", "/global_subgraphs", get_global_subgraphs),
    ("GET", "/global_subgraphs/{id}", get_global_subgraph),
]

INTERNAL_ROUTES = [
    ("GET", "/internal/logs", internal_logs),
    ("GET", "/internal/logs/raw", internal_logs_raw),
    ("PATCH", "/internal/logs/subscribe", internal_logs_subscribe),
    ("GET", "/internal/folder_paths", internal_folder_paths),
    ("GET", "/internal/files/{directory_type}", internal_files),
]


def add_app_routes(app: web.Application) -> None:
    """ComfyUI's app routes at /x and /api/x; the internal ones only at /internal/x (a sub-app in ComfyUI)."""
    add_routes(app, APP_ROUTES)
    for method, path, handler in INTERNAL_ROUTES:
        app.router.add_route(method, path, handler)


# ---- static files --------------------------------------------------------------------------------------------


def _file_response(root: str, relative: str):
    """The file `relative` under `root` (never outside it), with an explicit content type; 404 otherwise."""
    if root is None:
        raise web.HTTPNotFound()
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, relative.lstrip("/")))
    if not _is_within(base, path) or not os.path.isfile(path):
        raise web.HTTPNotFound()
    ext = os.path.splitext(path)[1].lower()
    content_type = CONTENT_TYPES.get(ext)
    if content_type is None:
        import mimetypes

        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Type": content_type})


async def get_root(request):
    state = get_state(request)
    if state.web_root is None:
        raise web.HTTPNotFound()
    response = _file_response(state.web_root, "index.html")
    response.headers["Cache-Control"] = "no-store, must-revalidate"
    response.headers["Pragma"] = "no-cache"
    response.headers["Expires"] = "0"
    return response


async def get_extension_file(request):
    state = get_state(request)
    name, tail = request.match_info["name"], request.match_info["tail"]
    if name in state.extension_web_dirs:
        return _file_response(state.extension_web_dirs[name], tail)
    return _file_response(state.web_root, "extensions/%s/%s" % (name, tail))


async def get_static_file(request):
    return _file_response(get_state(request).web_root, request.match_info["tail"])


def add_static_routes(app: web.Application) -> None:
    """GET / (index.html), /extensions/<pack>/<file> (a pack's WEB_DIRECTORY, else the frontend's own
    extensions folder) and any other file of the frontend. Call after every other route."""
    state = get_state(app)
    app.router.add_get("/extensions/{name}/{tail:.+}", get_extension_file)
    if state.web_root is not None:
        app.router.add_get("/", get_root)
        app.router.add_get("/{tail:.+}", get_static_file)
