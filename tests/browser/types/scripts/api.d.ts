// What ComfyUI serves as /scripts/api.js, typed by @comfyorg/comfyui-frontend-types (see tsconfig.json rootDirs).
import type {ComfyApi} from "@comfyorg/comfyui-frontend-types";

export declare const api: ComfyApi;
