"""ComfyUI's public extension points, as small modules for the stand-in, so a custom node pack loads unchanged.

install(app, ...) puts these into sys.modules (what a pack imports inside ComfyUI; nothing else):

  server          PromptServer with PromptServer.instance: .routes (web.RouteTableDef: a pack's routes, served at
                  /x and /api/x), .app, .loop, .send_sync(event, data, sid=None) (thread-safe; reaches the
                  stand-in's /ws clients as {"type": event, "data": data}, sid None = every client, an int event
                  = a binary frame), async .send / .send_json, .client_id, .last_node_id, .last_prompt_id, .sockets,
                  .address, .port, .web_root, .supports
  folder_paths    get_output_directory / get_input_directory / get_temp_directory / get_user_directory (+ set_*),
                  get_public_user_directory, get_directory_by_type, annotated_filepath, get_annotated_filepath,
                  exists_annotated_filepath, folder_names_and_paths, get_folder_paths, get_filename_list,
                  get_full_path(_or_raise), is_within_directory, filter_files_extensions, get_save_image_path,
                  map_legacy, SYSTEM_USER_PREFIX, supported_pt_extensions
  comfy, comfy.cli_args   `args`: listen, port (the port really bound), tls_keyfile/tls_certfile None,
                  disable_metadata False, multi_user False, output/input/temp/user directories, front_end_root, ...
  nodes           NODE_CLASS_MAPPINGS (the stand-in's own table, so a pack's classes appear in /object_info),
                  NODE_DISPLAY_NAME_MAPPINGS, EXTENSION_WEB_DIRS, LOADED_MODULE_DIRS, MAX_RESOLUTION,
                  interrupt_processing(), load_custom_node()

load_custom_node(path) imports a pack like ComfyUI's nodes.load_custom_node: spec_from_file_location on
<path>/__init__.py under the sys.modules name path.replace(".", "_x_"), then WEB_DIRECTORY ->
EXTENSION_WEB_DIRS[<folder name>], NODE_CLASS_MAPPINGS -> the node table (names of built-in nodes are not
replaced; RELATIVE_PYTHON_MODULE = "custom_nodes.<folder name>"), NODE_DISPLAY_NAME_MAPPINGS. A pack that raises
is logged ("Cannot import ... module for custom nodes") and the stand-in goes on, as ComfyUI does.

A pack's node classes are listed in /object_info so the frontend offers them; the stand-in's own IMAGE is an
ImageBatch, not a torch tensor, so running them here may fail (reported as execution_error like any node error).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import logging
import os
import sys
import traceback
import types

from aiohttp import web

from . import nodes as standin_nodes
from .frontend import SYSTEM_USER_PREFIX, model_folder_paths
from .server import MODEL_FOLDERS

log = logging.getLogger("standin.shims")

SHIM_MODULES = ("server", "folder_paths", "comfy", "comfy.cli_args", "nodes")
MAX_RESOLUTION = 16384
SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}


class PromptServer:
    """server.PromptServer as a custom node pack sees it; PromptServer.instance is the running stand-in."""

    instance: "PromptServer | None" = None

    def __init__(self, app: web.Application, loop, *, address: str, port: int):
        PromptServer.instance = self
        self.app = app
        self.loop = loop
        self.routes = web.RouteTableDef()
        self.address = address
        self.port = port
        self.supports = ["custom_nodes_from_web"]

    @property
    def state(self):
        return self.app["comfy"]

    @property
    def web_root(self):
        return self.state.web_root

    @property
    def client_id(self):
        return self.state.client_id

    @property
    def last_node_id(self):
        return self.state.last_node_id

    @property
    def last_prompt_id(self):
        return self.state.last_prompt_id

    @property
    def sockets(self):
        return self.state.sockets

    @property
    def sockets_metadata(self):
        return self.state.sockets_metadata

    def send_sync(self, event, data, sid=None):
        """Thread-safe, like ComfyUI's (loop.call_soon_threadsafe onto the message queue)."""
        self.state.send_sync(event, data, sid)

    async def send(self, event, data, sid=None):
        self.state.send_sync(event, data, sid)

    async def send_json(self, event, data, sid=None):
        self.state.send_sync(event, data, sid)

    def get_queue_info(self):
        return self.state.get_queue_info()


class _Folders:
    """folder_paths' state: the stand-in's folders."""

    def __init__(self, state):
        self.state = state
        self.folder_names_and_paths = {f: (model_folder_paths(f), set(SUPPORTED_PT_EXTENSIONS)) for f in MODEL_FOLDERS}
        self.folder_names_and_paths["custom_nodes"] = ([], set())

    def module(self) -> types.ModuleType:
        st = self.state
        m = types.ModuleType("folder_paths", "ComfyUI's folder_paths, stood in for by tests/standin/comfy_shims.py")
        m.SYSTEM_USER_PREFIX = SYSTEM_USER_PREFIX
        m.supported_pt_extensions = set(SUPPORTED_PT_EXTENSIONS)
        m.folder_names_and_paths = self.folder_names_and_paths
        m.base_path = os.getcwd()
        m.models_dir = os.path.join(os.getcwd(), "models")

        def get_output_directory():
            return st.output_dir

        def get_input_directory():
            return st.input_dir

        def get_temp_directory():
            return st.temp_dir

        def get_user_directory():
            return st.user_dir

        def _setter(attr):
            def set_directory(path):
                setattr(st, attr, os.path.abspath(path))

            set_directory.__name__ = "set_" + attr.replace("_dir", "_directory")
            return set_directory

        def get_public_user_directory(user):
            if not user or user.startswith(SYSTEM_USER_PREFIX):
                return None
            return os.path.join(st.user_dir, user)

        def get_directory_by_type(type_name):
            return st.dir_by_type(type_name)

        def annotated_filepath(name):
            for suffix, kind in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
                if name.endswith(suffix):
                    return name[: -len(suffix)], st.dir_by_type(kind)
            return name, None

        def get_annotated_filepath(name, default_dir=None):
            name, base_dir = annotated_filepath(name)
            if base_dir is None:
                base_dir = default_dir if default_dir is not None else st.input_dir
            return os.path.join(base_dir, name)

        def exists_annotated_filepath(name):
            return os.path.exists(get_annotated_filepath(name))

        def map_legacy(folder_name):
            return LEGACY_FOLDERS.get(folder_name, folder_name)

        def get_folder_paths(folder_name):
            folder_name = map_legacy(folder_name)
            return list(self.folder_names_and_paths[folder_name][0])

        def filter_files_extensions(files, extensions):
            return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)

        def get_filename_list(folder_name):
            folder_name = map_legacy(folder_name)
            if folder_name == "checkpoints":
                return list(st.models)  # the stand-in's checkpoints are names without files
            out = []
            paths, exts = self.folder_names_and_paths.get(folder_name, ([], set()))
            for d in paths:
                for root, _dirs, files in os.walk(d, followlinks=True):
                    out += [os.path.relpath(os.path.join(root, f), d) for f in files]
            return filter_files_extensions(out, exts)

        def get_full_path(folder_name, filename):
            folder_name = map_legacy(folder_name)
            if folder_name not in self.folder_names_and_paths:
                return None
            filename = os.path.relpath(os.path.join("/", filename), "/")
            for d in self.folder_names_and_paths[folder_name][0]:
                full = os.path.join(d, filename)
                if os.path.isfile(full):
                    return full
            return None

        def get_full_path_or_raise(folder_name, filename):
            full = get_full_path(folder_name, filename)
            if full is None:
                raise FileNotFoundError("Model in folder '%s' with filename '%s' not found." % (folder_name, filename))
            return full

        def is_within_directory(directory, target):
            directory, target = os.path.realpath(directory), os.path.realpath(target)
            try:
                return os.path.commonpath([directory, target]) == directory
            except ValueError:
                return False

        def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
            if "%" in filename_prefix:
                filename_prefix = filename_prefix.replace("%width%", str(image_width)).replace(
                    "%height%", str(image_height)
                )
            return standin_nodes.get_save_image_path(filename_prefix, output_dir)

        for fn in (
            get_output_directory,
            get_input_directory,
            get_temp_directory,
            get_user_directory,
            get_public_user_directory,
            get_directory_by_type,
            annotated_filepath,
            get_annotated_filepath,
            exists_annotated_filepath,
            map_legacy,
            get_folder_paths,
            filter_files_extensions,
            get_filename_list,
            get_full_path,
            get_full_path_or_raise,
            is_within_directory,
            get_save_image_path,
        ):
            setattr(m, fn.__name__, fn)
        for attr in ("output_dir", "input_dir", "temp_dir", "user_dir"):
            setter = _setter(attr)
            setattr(m, setter.__name__, setter)
        return m


def make_args(*, listen: str, port: int, state) -> argparse.Namespace:
    """comfy.cli_args.args: ComfyUI's parsed command line, as far as packs read it."""
    return argparse.Namespace(
        listen=listen,
        port=port,
        tls_keyfile=None,
        tls_certfile=None,
        enable_cors_header=None,
        max_upload_size=100,
        base_directory=None,
        output_directory=state.output_dir,
        input_directory=state.input_dir,
        temp_directory=state.temp_dir,
        user_directory=state.user_dir,
        front_end_root=state.web_root,
        front_end_version="comfyanonymous/ComfyUI@latest",
        disable_metadata=False,
        disable_all_custom_nodes=False,
        whitelist_custom_nodes=[],
        disable_api_nodes=False,
        multi_user=False,
        verbose="INFO",
        log_stdout=False,
        preview_method="none",
        cpu=True,
        disable_auto_launch=True,
        dont_print_server=False,
        quick_test_for_ci=False,
        windows_standalone_build=False,
        enable_manager=False,
        database_url=None,
    )


class Shims:
    """The installed modules; uninstall() puts back whatever sys.modules held before."""

    def __init__(self, app: web.Application, prompt_server: PromptServer, modules: dict, saved: dict):
        self.app = app
        self.prompt_server = prompt_server
        self.modules = modules
        self.saved = saved

    @property
    def nodes(self) -> types.ModuleType:
        return self.modules["nodes"]

    @property
    def args(self) -> argparse.Namespace:
        return self.modules["comfy.cli_args"].args

    def uninstall(self) -> None:
        for name in SHIM_MODULES:
            if self.saved.get(name) is not None:
                sys.modules[name] = self.saved[name]
            else:
                sys.modules.pop(name, None)
        if PromptServer.instance is self.prompt_server:
            PromptServer.instance = None


def install(app: web.Application, *, listen: str = "127.0.0.1", port: int = 8188, loop=None) -> Shims:
    """Puts server, folder_paths, comfy.cli_args and nodes into sys.modules for the stand-in `app` (before any
    pack is imported). `port` must be the port the server really listens on: packs derive their own URL from it."""
    state = app["comfy"]
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop_policy().get_event_loop()
    saved = {name: sys.modules.get(name) for name in SHIM_MODULES}

    server_mod = types.ModuleType("server", "ComfyUI's server module, stood in for by tests/standin/comfy_shims.py")
    prompt_server = PromptServer(app, loop, address=listen, port=port)
    server_mod.PromptServer = PromptServer

    comfy_mod = types.ModuleType("comfy", "ComfyUI's comfy package (only cli_args), stood in for by the stand-in")
    comfy_mod.__path__ = []
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = make_args(listen=listen, port=port, state=state)
    comfy_mod.cli_args = cli_args

    nodes_mod = types.ModuleType("nodes", "ComfyUI's nodes module (registries only), stood in for by the stand-in")
    nodes_mod.NODE_CLASS_MAPPINGS = state.node_classes
    nodes_mod.NODE_DISPLAY_NAME_MAPPINGS = state.display_names
    nodes_mod.EXTENSION_WEB_DIRS = state.extension_web_dirs
    nodes_mod.LOADED_MODULE_DIRS = state.loaded_module_dirs
    nodes_mod.MAX_RESOLUTION = MAX_RESOLUTION
    nodes_mod.interrupt_processing = lambda value=True: state.interrupt_processing(value)
    nodes_mod.load_custom_node = load_custom_node

    modules = {
        "server": server_mod,
        "folder_paths": _Folders(state).module(),
        "comfy": comfy_mod,
        "comfy.cli_args": cli_args,
        "nodes": nodes_mod,
    }
    sys.modules.update(modules)
    return Shims(app, prompt_server, modules, saved)


def get_module_name(module_path: str) -> str:
    base = os.path.basename(os.path.normpath(module_path))
    if os.path.isfile(module_path):
        base = os.path.splitext(base)[0]
    return base


async def load_custom_node(module_path: str, ignore=frozenset(), module_parent: str = "custom_nodes") -> bool:
    """nodes.load_custom_node (V1 packs: NODE_CLASS_MAPPINGS). Needs install() first. Never raises."""
    nodes_mod = sys.modules["nodes"]
    module_path = os.path.normpath(module_path)
    module_name = get_module_name(module_path)
    if os.path.isfile(module_path):
        sys_module_name = os.path.splitext(module_path)[0]
    else:
        sys_module_name = module_path.replace(".", "_x_")
    try:
        log.debug("Trying to load custom node %s", module_path)
        if os.path.isfile(module_path):
            spec = importlib.util.spec_from_file_location(sys_module_name, module_path)
            module_dir = os.path.split(module_path)[0]
        else:
            spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
            module_dir = module_path
        module = importlib.util.module_from_spec(spec)
        sys.modules[sys_module_name] = module
        spec.loader.exec_module(module)

        nodes_mod.LOADED_MODULE_DIRS[module_name] = os.path.abspath(module_dir)
        web_directory = getattr(module, "WEB_DIRECTORY", None)
        if web_directory is not None:
            web_dir = os.path.abspath(os.path.join(module_dir, web_directory))
            if os.path.isdir(web_dir):
                nodes_mod.EXTENSION_WEB_DIRS[module_name] = web_dir
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is not None:
            for name, node_cls in mappings.items():
                if name in ignore:
                    continue
                problem = _incompatible(node_cls)
                if problem:
                    log.warning("custom node %s from %s is left out of the stand-in: %s", name, module_name, problem)
                    continue
                nodes_mod.NODE_CLASS_MAPPINGS[name] = node_cls
                node_cls.RELATIVE_PYTHON_MODULE = "%s.%s" % (module_parent, module_name)
            display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None)
            if display is not None:
                nodes_mod.NODE_DISPLAY_NAME_MAPPINGS.update(display)
            return True
        if hasattr(module, "comfy_entrypoint"):
            log.warning("Skip %s: V3 packs (comfy_entrypoint) are not supported by the stand-in", module_path)
            return False
        log.warning(
            "Skip %s module for custom nodes due to the lack of NODE_CLASS_MAPPINGS or comfy_entrypoint (need one).",
            module_path,
        )
        return False
    except Exception as e:  # noqa: BLE001 - like ComfyUI: log, and start without the pack
        log.warning("%s", traceback.format_exc())
        log.warning("Cannot import %s module for custom nodes: %s", module_path, e)
        return False


def _incompatible(node_cls) -> str | None:
    """Why a V1 node class cannot be listed in the stand-in's /object_info (None: it can)."""
    if not inspect.isclass(node_cls):
        return "not a class"
    for attr in ("INPUT_TYPES", "RETURN_TYPES", "FUNCTION"):
        if not hasattr(node_cls, attr):
            return "no %s" % attr
    try:
        inputs = node_cls.INPUT_TYPES()
    except Exception as e:  # noqa: BLE001 - e.g. it needs a ComfyUI module the stand-in does not have
        return "INPUT_TYPES() raised %s: %s" % (type(e).__name__, e)
    if not isinstance(inputs, dict):
        return "INPUT_TYPES() is not a dict"
    return None


def add_pack_routes(app: web.Application, prompt_server: PromptServer) -> None:
    """Serves the routes packs registered on PromptServer.instance.routes, as ComfyUI's add_routes does: every
    RouteDef at "/api" + path first, then every route (static ones too) as registered."""
    api_routes = web.RouteTableDef()
    for route in prompt_server.routes:
        if isinstance(route, web.RouteDef):  # static routes a pack adds get no /api twin
            api_routes.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
    app.add_routes(api_routes)
    app.add_routes(prompt_server.routes)
