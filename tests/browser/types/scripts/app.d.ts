// What ComfyUI serves as /scripts/app.js, typed by @comfyorg/comfyui-frontend-types (see tsconfig.json rootDirs).
import type {ComfyApp} from "@comfyorg/comfyui-frontend-types";

export declare const app: ComfyApp;
