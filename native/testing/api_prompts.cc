#include "testing/api_prompts.h"

#include <cstdio>

namespace comfymq::bench {
namespace {

struct Rng {
  uint64_t s;
  uint64_t Next() {  // splitmix64
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }
  template <size_t N>
  const char* Pick(const char* const (&a)[N]) {
    return a[Below(N)];
  }
};

const char* const kWords[] = {"masterpiece",
                              "best quality",
                              "highly detailed",
                              "portrait",
                              "of a",
                              "young",
                              "old",
                              "woman",
                              "man",
                              "knight",
                              "wizard",
                              "cyberpunk",
                              "city",
                              "at night",
                              "neon lights",
                              "rain",
                              "reflections",
                              "cinematic lighting",
                              "volumetric fog",
                              "golden hour",
                              "sunset",
                              "mountains",
                              "forest",
                              "river",
                              "castle",
                              "dragon",
                              "flying",
                              "over",
                              "the",
                              "ocean",
                              "waves",
                              "storm",
                              "clouds",
                              "dramatic",
                              "sky",
                              "8k",
                              "ultra realistic",
                              "photograph",
                              "35mm",
                              "bokeh",
                              "depth of field",
                              "sharp focus",
                              "intricate",
                              "ornate",
                              "armor",
                              "silver",
                              "gold",
                              "red",
                              "blue",
                              "green",
                              "purple",
                              "hair",
                              "eyes",
                              "smiling",
                              "looking at viewer",
                              "full body",
                              "close-up",
                              "wide shot",
                              "concept art",
                              "digital painting",
                              "oil painting",
                              "watercolor",
                              "by greg rutkowski",
                              "trending on artstation",
                              "unreal engine",
                              "octane render",
                              "studio ghibli",
                              "anime style",
                              "soft light",
                              "rim light",
                              "backlit",
                              "high contrast",
                              "muted colors",
                              "vibrant",
                              "pastel",
                              "ruins",
                              "ancient",
                              "temple",
                              "glowing",
                              "runes",
                              "magic",
                              "particles",
                              "snow",
                              "winter",
                              "desert",
                              "sand dunes",
                              "spaceship",
                              "robot",
                              "mechanical",
                              "steampunk",
                              "gears",
                              "victorian",
                              "street",
                              "market",
                              "crowd",
                              "lanterns",
                              "cherry blossoms",
                              "lowres",
                              "bad anatomy",
                              "bad hands",
                              "text",
                              "error",
                              "missing fingers",
                              "extra digit",
                              "cropped",
                              "worst quality",
                              "low quality",
                              "jpeg artifacts",
                              "signature",
                              "watermark",
                              "username",
                              "blurry",
                              "deformed"};

const char* const kCheckpoints[] = {"sd_xl_base_1.0.safetensors",
                                    "sd_xl_refiner_1.0.safetensors",
                                    "v1-5-pruned-emaonly.safetensors",
                                    "dreamshaper_8.safetensors",
                                    "juggernautXL_v9Rdphoto2Lightning.safetensors",
                                    "flux1-dev-fp8.safetensors"};
const char* const kLoras[] = {"add_detail.safetensors", "epi_noiseoffset2.safetensors", "more_details.safetensors",
                              "ghibli_style_offset.safetensors", "pixel-art-xl-v1.1.safetensors"};
const char* const kSamplers[] = {"euler",        "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde",
                                 "dpmpp_3m_sde", "uni_pc",          "ddim",     "lcm"};
const char* const kSchedulers[] = {"normal", "karras", "exponential", "sgm_uniform", "simple", "beta"};
const char* const kUpscale[] = {"nearest-exact", "bilinear", "area", "bicubic", "lanczos"};
const char* const kControlnets[] = {"control_v11p_sd15_canny.pth", "control_v11f1p_sd15_depth.pth",
                                    "diffusers_xl_canny_full.safetensors", "t2i-adapter_xl_openpose.safetensors"};

struct Writer {
  std::string out;
  bool first = true;
  void Key(const char* k) {
    if (!first) out += ", ";
    first = false;
    out += '"';
    out += k;
    out += "\": ";
  }
  void Str(const char* k, const std::string& v) {
    Key(k);
    out += '"';
    out += v;
    out += '"';
  }
  void Int(const char* k, uint64_t v) {
    Key(k);
    out += std::to_string(v);
  }
  void Num(const char* k, double v) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.2f", v);
    Key(k);
    out += b;
  }
  void Link(const char* k, size_t node, int slot) {
    Key(k);
    out += "[\"" + std::to_string(node) + "\", " + std::to_string(slot) + "]";
  }
};

std::string Text(Rng& r, size_t words) {
  std::string t;
  for (size_t i = 0; i < words; ++i) {
    if (i) t += r.Below(4) == 0 ? ", " : " ";
    t += r.Pick(kWords);
  }
  return t;
}

// Appends node `id` (links point at earlier nodes) and returns nothing; the class is chosen by the RNG.
void Node(Rng& r, size_t id, Writer& w) {
  const size_t prev = id > 1 ? 1 + r.Below(id - 1) : 1;
  const char* cls = nullptr;
  std::string inputs;
  Writer in;
  switch (id == 1 ? 0 : r.Below(9)) {
    case 0:
      cls = "CheckpointLoaderSimple";
      in.Str("ckpt_name", r.Pick(kCheckpoints));
      break;
    case 1:
    case 2:
      cls = "CLIPTextEncode";
      in.Str("text", Text(r, 12 + r.Below(60)));
      in.Link("clip", prev, 1);
      break;
    case 3:
      cls = "KSampler";
      in.Int("seed", r.Next() >> 14);
      in.Int("steps", 4 + r.Below(46));
      in.Num("cfg", 1.0 + static_cast<double>(r.Below(140)) / 10.0);
      in.Str("sampler_name", r.Pick(kSamplers));
      in.Str("scheduler", r.Pick(kSchedulers));
      in.Num("denoise", static_cast<double>(30 + r.Below(71)) / 100.0);
      in.Link("model", prev, 0);
      in.Link("positive", 1 + r.Below(id - 1), 0);
      in.Link("negative", 1 + r.Below(id - 1), 0);
      in.Link("latent_image", 1 + r.Below(id - 1), 0);
      break;
    case 4:
      cls = "LoraLoader";
      in.Str("lora_name", r.Pick(kLoras));
      in.Num("strength_model", static_cast<double>(r.Below(200)) / 100.0);
      in.Num("strength_clip", static_cast<double>(r.Below(200)) / 100.0);
      in.Link("model", prev, 0);
      in.Link("clip", prev, 1);
      break;
    case 5:
      cls = "EmptyLatentImage";
      in.Int("width", 512 + 64 * r.Below(17));
      in.Int("height", 512 + 64 * r.Below(17));
      in.Int("batch_size", 1 + r.Below(4));
      break;
    case 6:
      cls = "ImageScale";
      in.Str("upscale_method", r.Pick(kUpscale));
      in.Int("width", 512 + 64 * r.Below(25));
      in.Int("height", 512 + 64 * r.Below(25));
      in.Str("crop", r.Below(2) ? "disabled" : "center");
      in.Link("image", prev, 0);
      break;
    case 7:
      cls = "ControlNetApplyAdvanced";
      in.Num("strength", static_cast<double>(r.Below(150)) / 100.0);
      in.Num("start_percent", static_cast<double>(r.Below(50)) / 100.0);
      in.Num("end_percent", static_cast<double>(50 + r.Below(51)) / 100.0);
      in.Link("positive", prev, 0);
      in.Link("negative", 1 + r.Below(id - 1), 1);
      in.Link("control_net", 1 + r.Below(id - 1), 0);
      in.Link("image", 1 + r.Below(id - 1), 0);
      in.Str("control_net_name_hint", r.Pick(kControlnets));
      break;
    default:
      cls = r.Below(2) ? "VAEDecode" : "SaveImage";
      if (cls[0] == 'V') {
        in.Link("samples", prev, 0);
        in.Link("vae", 1 + r.Below(id - 1), 2);
      } else {
        in.Str("filename_prefix", "ComfyUI_" + std::to_string(r.Below(100000)));
        in.Link("images", prev, 0);
      }
      break;
  }
  w.Key(std::to_string(id).c_str());
  w.out += "{\"inputs\": {" + in.out + "}, \"class_type\": \"" + cls + "\", \"_meta\": {\"title\": \"" + cls + "\"}}";
}

}  // namespace

std::string MakeApiPrompt(size_t size, uint64_t seed) {
  Rng r{seed * 0x2545f4914f6cdd1dULL + 1};
  Writer w;
  w.out.reserve(size + 512);
  w.out += '{';
  size_t id = 1;
  do {
    Node(r, id++, w);
  } while (w.out.size() + 1 < size);
  w.out += '}';
  return w.out;
}

std::vector<std::string> MakeApiPromptPool(size_t n, size_t size, uint64_t seed) {
  std::vector<std::string> pool;
  pool.reserve(n);
  for (size_t i = 0; i < n; ++i) pool.push_back(MakeApiPrompt(size, seed + i));
  return pool;
}

}  // namespace comfymq::bench
