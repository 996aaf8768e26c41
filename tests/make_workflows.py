"""Write the example workflows (workflows/*.json, UI format) and their thumbnails (*.jpg).

    COMFYUI_PATH=/path/to/ComfyUI-0.3.64 python tests/make_workflows.py
    COMFYUI_PATH=/path/to/ComfyUI-0.33 python tests/make_workflows.py

Needs a ComfyUI tree (for the node registry, CPU only, no model files). The files are committed; run this
again after a node's schema changes, then run tests/comfyui/test_workflows.py. Each file is written by the
oldest tested ComfyUI that registers its nodes (NEWER_NODES): 0.3.64 writes the common ones and skips the
others, 0.33 writes only those (``--all``: every file, in 0.33's widget layout).

The file names are the titles the template browser shows (MAX_TITLE characters at most), WORKFLOWS holds each
card's description (drawn into its thumbnail), and each builder lays its graph out to open readable (the
columns of workflow_builder.Graph; tests/comfyui/test_workflows.py and test_frontend.py check it).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "comfyui")]

WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
WAN22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
HV15 = "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/"
# LTX-2 as ComfyUI's own LTX-2 templates load it: Lightricks' checkpoint (model, video VAE and audio VAE in one
# file) and Comfy-Org's repackaged Gemma 3 text encoder
LTX2_CKPT = "https://huggingface.co/Lightricks/LTX-2/resolve/main/ltx-2-19b-dev-fp8.safetensors"
LTX2_SPLIT = "https://huggingface.co/Comfy-Org/ltx-2/resolve/main/split_files/"
HV10 = "https://huggingface.co/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files/"
SPLIT_FILES = (WAN21, WAN22, HV15, LTX2_SPLIT, HV10)  # <base><directory>/<name>
# Kandinsky 5 Video Lite as ComfyUI's Kandinsky 5 template loads it: the model from kandinskylab's own
# repository, CLIP-L from comfyanonymous' text encoders, Qwen 2.5 VL and the HunyuanVideo VAE from Comfy-Org
K5_LITE = ("https://huggingface.co/kandinskylab/Kandinsky-5.0-T2V-Lite-sft-5s/resolve/main/model/"
           "kandinsky5lite_t2v_sft_5s.safetensors")
CLIP_L = "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"
# MiniMax-H3 as ComfyUI's MiniMax-H3 templates load it: Comfy-Org's repository, <directory>/<name>
MINIMAX = "https://huggingface.co/Comfy-Org/MiniMax-H3/resolve/main/"


def model(name: str, directory: str, base: str = WAN21) -> dict:
    url = base + f"{directory}/{name}" if base in SPLIT_FILES + (MINIMAX,) else base
    return {"name": name, "url": url, "directory": directory}


M = {
    "umt5": model("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
    "vae21": model("wan_2.1_vae.safetensors", "vae"),
    "vae22": model("wan2.2_vae.safetensors", "vae", WAN22),
    "t2v_1.3b": model("wan2.1_t2v_1.3B_fp16.safetensors", "diffusion_models"),
    "t2v_14b": model("wan2.1_t2v_14B_fp8_scaled.safetensors", "diffusion_models"),
    "ti2v_5b": model("wan2.2_ti2v_5B_fp16.safetensors", "diffusion_models", WAN22),
    "a14b_high": model("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "diffusion_models", WAN22),
    "a14b_low": model("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "diffusion_models", WAN22),
    "i2v_720p": model("wan2.1_i2v_720p_14B_fp16.safetensors", "diffusion_models"),
    "clip_vision": model("clip_vision_h.safetensors", "clip_vision"),
    "distill_lora": {"name": "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors", "directory": "loras",
                     "url": "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/"
                            "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors"},
    "esrgan": {"name": "RealESRGAN_x4plus.safetensors", "directory": "upscale_models",
               "url": "https://huggingface.co/Comfy-Org/Real-ESRGAN_repackaged/resolve/main/RealESRGAN_x4plus.safetensors"},
    "hv15_720p_t2v": model("hunyuanvideo1.5_720p_t2v_fp16.safetensors", "diffusion_models", HV15),
    "qwen25_vl": model("qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders", HV15),
    "byt5": model("byt5_small_glyphxl_fp16.safetensors", "text_encoders", HV15),
    "hv15_vae": model("hunyuanvideo15_vae_fp16.safetensors", "vae", HV15),
    "ltx2_dev": model("ltx-2-19b-dev-fp8.safetensors", "checkpoints", LTX2_CKPT),
    "gemma3": model("gemma_3_12B_it_fp4_mixed.safetensors", "text_encoders", LTX2_SPLIT),
    "k5_lite_t2v": model("kandinsky5lite_t2v_sft_5s.safetensors", "diffusion_models", K5_LITE),
    "clip_l": model("clip_l.safetensors", "text_encoders", CLIP_L),
    "hv_vae": model("hunyuan_video_vae_bf16.safetensors", "vae", HV10),
    "h3": model("minimax_h3_fl2va_pruned_int8_convrot.safetensors", "diffusion_models", MINIMAX),
    "h3_text": model("qwen3vl_32b_minimax_h3_nvfp4_awq.safetensors", "text_encoders", MINIMAX),
    "h3_vae": model("minimax_h3_video_vae_fp16.safetensors", "vae", MINIMAX),
    "h3_audio_vae": model("minimax_h3_audio_vae_fp32.safetensors", "vae", MINIMAX),
}

PROMPT = ("A red fox trots through fresh snow in a sunlit pine forest, fine fur detail, snow crystals "
          "sparkling, slow tracking shot, cinematic, sharp focus")
NEGATIVE = ("blurry, low quality, jpeg artifacts, static, overexposed, washed out, deformed, extra limbs, "
            "subtitles, watermark, text")
PURPLE = "#335"

SETTINGS_HINT = ("**Settings:** 0 / auto = automatic everywhere; hover an input for what it does (README: "
                 "*UltraGen Attention Settings*). `memory_budget_gb` 0 follows the card's free VRAM.")


def note(text: str, files: list[str], vram: str) -> str:
    listing = "\n".join(f"- [{M[k]['name']}]({M[k]['url']}) -> `models/{M[k]['directory']}/`" for k in files)
    return f"{text.strip()}\n\n**Files**\n{listing}\n\n**VRAM:** {vram}\n\n{SETTINGS_HINT}"


# Layout: the Read me note spans columns 0-1 at the top left; the graph flows left to right in columns 0-5
# (COLUMN_WIDTH apart), each kept short, so a template fits a 1920x1080 window at a zoom where the frontend
# draws text (see tests/comfyui/test_frontend.py). Prompts sit in the column just left of their sampler, so
# no link runs behind their text.


def prompts(g, col, text=PROMPT):
    clip = g.add("CLIPLoader", col, models=[M["umt5"]], clip_name=M["umt5"]["name"], type="wan", device="default")
    return encode(g, clip, col, text)


def encode(g, clip, col, text=PROMPT):
    pos = g.add("CLIPTextEncode", col, title="Positive prompt", text=text)
    neg = g.add("CLIPTextEncode", col, title="Negative prompt", text=NEGATIVE)
    g.connect(clip, pos, "clip")
    g.connect(clip, neg, "clip")
    return pos, neg


def resolution(g, family, target, frames, settings=None, col=0):
    """UltraGen Resolution; with ``settings`` linked, its report follows the chosen preset / windows and a
    bad setting stops this branch at validation too."""
    res = g.add("UltraGenResolution", col, color=PURPLE, model_family=family, target=target,
                orientation="landscape", frames=frames, custom_width=1920, custom_height=1080, rounding="nearest")
    if settings is not None:
        g.connect(settings, res, "settings")
    return res


def size_into(g, res, node):
    for slot, name in enumerate(("width", "height", "length")):
        g.connect((res, slot), node, name)


def patched(g, model_src, settings, shift, col=1):
    sampling = g.add("ModelSamplingSD3", col, shift=shift)
    g.connect(model_src, sampling, "model")
    apply = g.add("UltraGenApply", col, color=PURPLE)
    g.connect(sampling, apply, "model")
    g.connect(settings, apply, "settings")
    return apply


def decode_and_save(g, samples, vae, fps, prefix, col=5, tiled=True):
    if tiled:
        dec = g.add("UltraGenTiledVAEDecode", col, color=PURPLE, max_vram_gb=0.0, tile_size=0, overlap=64,
                    temporal_size=0, temporal_overlap=8)
    else:
        dec = g.add("VAEDecode", col)
    g.connect(samples, dec, "samples")
    g.connect(vae, dec, "vae")
    video = g.add("CreateVideo", col, fps=float(fps))
    g.connect(dec, video, "images")
    save = g.add("SaveVideo", col, filename_prefix=prefix, format="auto", codec="auto")
    g.connect(video, save, "video")
    return dec


def report(g, res, col, title="Token grid and attention cost"):
    show = g.add("PreviewAny", col, title=title)
    g.connect((res, 4), show, "source")


def t2v(g, *, unet_key, vae_key, family, target, frames, steps, cfg, shift, fps, prefix, five_b=False,
        preset="quality", lora=None, sampler="uni_pc", between=None):
    """Columns: 0-1 the note, below it the settings (0) and the model chain (1); 2 text encoder, prompts,
    resolution, latent; 3 the sampler, lower than the prompts (the links into it pass below their text), and
    the cost report; 4 VAE, decode, save. ``lora``: a LoraLoaderModelOnly (its file key in M) before
    ModelSamplingSD3; ``between``: (node type, widgets) placed between UltraGen Apply and the sampler."""
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE, preset=preset)
    model = g.add("UNETLoader", 1, models=[M[unet_key]], unet_name=M[unet_key]["name"], weight_dtype="default")
    if lora is not None:
        with_lora = g.add("LoraLoaderModelOnly", 1, title="Step-distill LoRA", models=[M[lora]],
                          lora_name=M[lora]["name"], strength_model=1.0)
        g.connect(model, with_lora, "model")
        model = with_lora
    model = patched(g, model, settings, shift, col=1)
    if between is not None:
        node_type, inputs = between
        after = g.add(node_type, 1, **inputs)
        g.connect(model, after, "model")
        model = after
    vae = g.add("VAELoader", 1 if five_b else 4, models=[M[vae_key]], vae_name=M[vae_key]["name"])
    pos, neg = prompts(g, 2)
    res = resolution(g, family, target, frames, settings, col=2)
    if five_b:
        latent = g.add("Wan22ImageToVideoLatent", 2, width=1280, height=704, length=121, batch_size=1)
        g.connect(vae, latent, "vae")
    else:
        latent = g.add("EmptyHunyuanLatentVideo", 2, width=1280, height=720, length=81, batch_size=1)
    size_into(g, res, latent)
    ks = g.add("KSampler", 3, below=neg, seed=42, seed_control="fixed", steps=steps, cfg=cfg, sampler_name=sampler,
               scheduler="simple", denoise=1.0)
    for src, name in ((model, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        g.connect(src, ks, name)
    report(g, res, 3)
    decode_and_save(g, ks, vae, fps, prefix, col=4)
    return g


def wan21_1_3b_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 1.3B at native 1080p
The small Wan model (trained at 832x480) sampled directly at 1920x1088 x 81 frames: 171,360 tokens, 4.4x its
training size. UltraGen Apply swaps full self-attention for windows of the native size plus a pooled global
branch; the report node shows the token grid and cost. uni_pc, 30 steps, CFG 6, shift 8.""",
                ["t2v_1.3b", "umt5", "vae21"], "about 10-14 GB (estimate)"), 0)
    return t2v(g, unet_key="t2v_1.3b", vae_key="vae21", family="Wan 2.1 T2V/I2V 1.3B", target="1080p (1920x1080)",
               frames=81, steps=30, cfg=6.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_1.3B_1080p")


def wan21_14b_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B at native 4K UHD
3840x2160 x 81 frames straight from the 14B model: 680,400 tokens, 9x its 720p training size. UltraGen's
windows + global branch cost about 6x less than full attention (report node); the decode runs in tiles.
uni_pc, 30 steps, CFG 5, shift 8. Try 33 frames first to check the prompt.""",
                ["t2v_14b", "umt5", "vae21"],
                "measured 66.8 GiB peak on an H200; within 32 GB with the automatic memory budget (fp8)"), 0)
    return t2v(g, unet_key="t2v_14b", vae_key="vae21", family="Wan 2.1 T2V/I2V 14B", target="4K UHD (3840x2160)",
               frames=81, steps=30, cfg=5.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_14B_4K")


def wan21_14b_4k_8_steps(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B: native 4K in 8 steps
The step-distilled recipe at 3840x2160 x 81: a step-distill LoRA (here lightx2v's CFG + step distill for
Wan 2.1 T2V 14B) on the model, then UltraGen Apply; 8 steps, **CFG 1** (one model call per step, the
negative prompt is not used), euler, shift 5. The LoRA changes the weights, UltraGen the attention: they
stack. 4 steps is faster, 8 keeps more detail at 4K; strength 1.""",
                ["t2v_14b", "distill_lora", "umt5", "vae21"],
                "as the 4K template (the LoRA adds about 0.3 GB); 8 model calls instead of 60 (30 steps with CFG)"), 0)
    return t2v(g, unet_key="t2v_14b", vae_key="vae21", family="Wan 2.1 T2V/I2V 14B", target="4K UHD (3840x2160)",
               frames=81, steps=8, cfg=1.0, shift=5.0, fps=16, prefix="video/UltraGen_wan21_14B_4K_8steps",
               lora="distill_lora", sampler="euler")


def wan22_5b_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.2 TI2V 5B at native 4K UHD
The 5B model's 16x16 VAE keeps 4K small: 3840x2176 x 121 frames is 31x68x120 tokens (sizes are multiples of
32, hence 2176 rows). Text to video; connect a start image to *Wan22ImageToVideoLatent* for image to
video. uni_pc, 20 steps, CFG 5, shift 8, 24 fps.""",
                ["ti2v_5b", "umt5", "vae22"], "about 30-40 GB (estimate); 12 GB with the memory budget"), 0)
    return t2v(g, unet_key="ti2v_5b", vae_key="vae22", family="Wan 2.2 TI2V 5B", target="4K UHD (3840x2160)",
               frames=121, steps=20, cfg=5.0, shift=8.0, fps=24, prefix="video/UltraGen_wan22_5B_4K", five_b=True)


def wan22_a14b_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.2 T2V A14B at native 1080p, both experts
The high-noise expert runs steps 0-10 of 20, the low-noise expert the rest (two KSamplerAdvanced).
**Both** go through UltraGen Apply with the same settings: patching one leaves half the steps at full
1080p attention. euler, 20 steps, CFG 3.5, shift 8.""",
                ["a14b_high", "a14b_low", "umt5", "vae21"],
                "about 35-45 GB with fp8 experts (estimate; ComfyUI keeps one loaded when memory is short)"), 0)
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    high = g.add("UNETLoader", 0, title="High-noise expert", models=[M["a14b_high"]],
                 unet_name=M["a14b_high"]["name"], weight_dtype="default")
    low = g.add("UNETLoader", 0, title="Low-noise expert", models=[M["a14b_low"]],
                unet_name=M["a14b_low"]["name"], weight_dtype="default")
    m_high = patched(g, high, settings, 8.0, col=1)
    m_low = patched(g, low, settings, 8.0, col=1)
    pos, neg = prompts(g, 2)
    res = resolution(g, "Wan 2.2 A14B (per expert)", "1080p (1920x1080)", 81, settings, col=2)
    latent = g.add("EmptyHunyuanLatentVideo", 2, width=1280, height=720, length=81, batch_size=1)
    size_into(g, res, latent)
    k1 = g.add("KSamplerAdvanced", 3, below=neg, title="KSampler (high noise, steps 0-10)", add_noise="enable",
               noise_seed=42, noise_seed_control="fixed", steps=20, cfg=3.5, sampler_name="euler",
               scheduler="simple", start_at_step=0, end_at_step=10, return_with_leftover_noise="enable")
    report(g, res, 3)
    k2 = g.add("KSamplerAdvanced", 4, below=neg, title="KSampler (low noise, steps 10-20)", add_noise="disable",
               noise_seed=0, steps=20, cfg=3.5, sampler_name="euler", scheduler="simple", start_at_step=10,
               end_at_step=10000, return_with_leftover_noise="disable")
    for src, name in ((m_high, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        g.connect(src, k1, name)
    for src, name in ((m_low, "model"), (pos, "positive"), (neg, "negative"), (k1, "latent_image")):
        g.connect(src, k2, name)
    vae = g.add("VAELoader", 5, models=[M["vae21"]], vae_name=M["vae21"]["name"])
    decode_and_save(g, k2, vae, 16, "video/UltraGen_wan22_A14B_1080p", col=5)
    return g


def wan21_i2v_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 I2V 14B at native 1080p
Image to video at 1920x1088 x 81 frames from the 720p I2V model. Load your start image (it is resized to
the output size); CLIP Vision H encodes it for the image cross-attention; UltraGen patches the
self-attention only. uni_pc, 20 steps, CFG 5, shift 8.""",
                ["i2v_720p", "umt5", "vae21", "clip_vision"],
                "about 45-55 GB with fp16 weights (estimate); an fp8 copy of the model on 24-48 GB cards"), 0)
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    unet = g.add("UNETLoader", 1, models=[M["i2v_720p"]], unet_name=M["i2v_720p"]["name"], weight_dtype="default")
    model = patched(g, unet, settings, 8.0, col=1)
    cv = g.add("CLIPVisionLoader", 1, models=[M["clip_vision"]], clip_name=M["clip_vision"]["name"])
    image = g.add("LoadImage", 1, title="Start image", image="example.png")
    pos, neg = prompts(g, 2, text="The fox turns its head toward the camera, snow falling gently, subtle camera "
                                  "push-in, sharp fur detail")
    res = resolution(g, "Wan 2.1 T2V/I2V 14B", "1080p (1920x1080)", 81, settings, col=2)
    vae = g.add("VAELoader", 3, models=[M["vae21"]], vae_name=M["vae21"]["name"])
    enc = g.add("CLIPVisionEncode", 3, crop="none")
    g.connect(cv, enc, "clip_vision")
    g.connect(image, enc, "image")
    i2v = g.add("WanImageToVideo", 3, width=1280, height=720, length=81, batch_size=1)
    for src, name in ((pos, "positive"), (neg, "negative"), (vae, "vae"), (enc, "clip_vision_output"),
                      (image, "start_image")):
        g.connect(src, i2v, name)
    size_into(g, res, i2v)
    ks = g.add("KSampler", 4, seed=42, seed_control="fixed", steps=20, cfg=5.0, sampler_name="uni_pc",
               scheduler="simple", denoise=1.0)
    for src, name in ((model, "model"), ((i2v, 0), "positive"), ((i2v, 1), "negative"), ((i2v, 2), "latent_image")):
        g.connect(src, ks, name)
    report(g, res, 4)
    decode_and_save(g, ks, vae, 16, "video/UltraGen_wan21_i2v_1080p", col=5)
    return g


def compare_4k_vs_upscale(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Native 4K vs. 720p + upscale model
Wan 2.1 T2V 14B, same prompt and seed (42), twice: (a) natively at 3840x2160 with UltraGen, (b) at 1280x720
with plain attention, then RealESRGAN x4 (5120x2880); UltraGen Compare scales (b) to (a). The noise differs
with the latent size, so compare detail and steadiness, not pixels. (a) is saved on its own too. Fill in wall times and peak VRAM from
the console to see cost next to quality. The upscale of 81 frames holds about 15 GB of frames in RAM.""",
                ["t2v_14b", "umt5", "vae21", "esrgan"], "about 60-75 GB for (a) (estimate); (b) about 25-30 GB"), 0)
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    unet = g.add("UNETLoader", 0, models=[M["t2v_14b"]], unet_name=M["t2v_14b"]["name"], weight_dtype="default")
    sampling = g.add("ModelSamplingSD3", 0, shift=8.0)
    g.connect(unet, sampling, "model")
    pos, neg = prompts(g, 1)
    vae = g.add("VAELoader", 1, models=[M["vae21"]], vae_name=M["vae21"]["name"])
    up_loader = g.add("UpscaleModelLoader", 1, models=[M["esrgan"]], model_name=M["esrgan"]["name"])
    # the two branches side by side, each in its own group: (a) in columns 2-3, (b) in column 4
    g.align(2, 3)
    first = len(g.nodes)
    apply = g.add("UltraGenApply", 2, color=PURPLE)
    g.connect(sampling, apply, "model")
    g.connect(settings, apply, "settings")
    res = resolution(g, "Wan 2.1 T2V/I2V 14B", "4K UHD (3840x2160)", 81, settings, col=2)
    latent = g.add("EmptyHunyuanLatentVideo", 2, width=1280, height=720, length=81, batch_size=1)
    size_into(g, res, latent)
    ks = g.add("KSampler", 3, title="KSampler (native 4K)", seed=42, seed_control="fixed", steps=30, cfg=5.0,
               sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    for src, name in ((apply, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        g.connect(src, ks, name)
    native = decode_and_save(g, ks, vae, 16, "video/UltraGen_compare_a", col=3)
    g.group("(a) native 4K, UltraGen", g.nodes[first:], color=GROUP_A)
    g.align(4)
    first = len(g.nodes)
    latent = g.add("EmptyHunyuanLatentVideo", 4, title="Empty latent (720p)", width=1280, height=720, length=81,
                   batch_size=1)
    ks = g.add("KSampler", 4, title="KSampler (720p)", seed=42, seed_control="fixed", steps=30, cfg=5.0,
               sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    for src, name in ((sampling, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        g.connect(src, ks, name)
    dec = g.add("UltraGenTiledVAEDecode", 4, color=PURPLE, max_vram_gb=0.0, tile_size=0, overlap=64, temporal_size=0,
                temporal_overlap=8)
    g.connect(ks, dec, "samples")
    g.connect(vae, dec, "vae")
    up = g.add("ImageUpscaleWithModel", 4)
    g.connect(up_loader, up, "upscale_model")
    g.connect(dec, up, "image")
    g.group("(b) 720p + RealESRGAN x4", g.nodes[first:], color=GROUP_B)
    cmp = g.add("UltraGenCompare", 5, color=PURPLE, layout="split_wipe", size_mode="first", length_mode="trim",
                label_a="native 4K (UltraGen)", label_b="720p + RealESRGAN x4", flow_max_side=512,
                wall_time_a=0.0, peak_vram_a=0.0, wall_time_b=0.0, peak_vram_b=0.0)
    g.connect(native, cmp, "video_a")
    g.connect(up, cmp, "video_b")
    video = g.add("CreateVideo", 5, fps=16.0)
    g.connect((cmp, 0), video, "images")
    save = g.add("SaveVideo", 5, filename_prefix="video/UltraGen_compare", format="auto", codec="auto")
    g.connect(video, save, "video")
    show = g.add("PreviewAny", 5, title="Comparison report")
    g.connect((cmp, 1), show, "source")
    return g


GROUP_A, GROUP_B = "#9a9aff", "#8fd08f"  # the frontend draws a group's title in its colour: light, to be read

PROXY_NOTE = """
*Proxy Guidance* `strength` 1: each window attends to its tokens and the proxy tokens near it (0 = off).
*KSamplerAdvanced* `start_at_step`: later = closer to the proxy, earlier = more new detail. Inputs' tooltips
say more."""


def proxy_to_4k(g, *, unet_key, vae_key, family, target, frames, proxy_size, proxy_frames, steps, start, cfg,
                shift, fps, prefix, five_b=False):
    """First pass at the native size (the proxy) -> UltraGen Upscale Latent (coarse-to-fine start) and UltraGen
    Proxy Guidance -> KSamplerAdvanced from step ``start`` at the target size -> tiled decode. Columns: 0-1
    the note, settings (0) and the model chain (1); 2 prompts and the proxy latent; 3 first pass and its
    preview; 4 resolution, guidance, upscale; 5 second pass, decode and save."""
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    unet = g.add("UNETLoader", 1, models=[M[unet_key]], unet_name=M[unet_key]["name"], weight_dtype="default")
    sampling = g.add("ModelSamplingSD3", 1, shift=shift)
    g.connect(unet, sampling, "model")
    apply = g.add("UltraGenApply", 1, color=PURPLE)
    g.connect(sampling, apply, "model")
    g.connect(settings, apply, "settings")
    vae = g.add("VAELoader", 1, models=[M[vae_key]], vae_name=M[vae_key]["name"])
    pos, neg = prompts(g, 2)
    width, height = proxy_size
    if five_b:
        first = g.add("Wan22ImageToVideoLatent", 2, title="Proxy latent (native size)", width=width, height=height,
                      length=proxy_frames, batch_size=1)
        g.connect(vae, first, "vae")
    else:
        first = g.add("EmptyHunyuanLatentVideo", 2, title="Proxy latent (native size)", width=width, height=height,
                      length=proxy_frames, batch_size=1)
    ks1 = g.add("KSampler", 3, below=neg, title=f"First pass: proxy at {width}x{height}", seed=42,
                seed_control="fixed", steps=steps, cfg=cfg, sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    for src, name in ((sampling, "model"), (pos, "positive"), (neg, "negative"), (first, "latent_image")):
        g.connect(src, ks1, name)
    res = resolution(g, family, target, frames, settings, col=4)
    guided = g.add("UltraGenProxyGuidance", 4, color=PURPLE, strength=1.0, neighbourhood="neighbourhood",
                   radius_frames=1, radius_cells=4, seed=0)
    g.connect(apply, guided, "model")
    g.connect(ks1, guided, "proxy")
    init = g.add("UltraGenUpscaleLatent", 4, color=PURPLE, upscale_method="bilinear")
    g.connect(ks1, init, "latent")
    size_into(g, res, init)
    ks2 = g.add("KSamplerAdvanced", 5, title=f"Second pass: 4K from step {start} of {steps}", add_noise="enable",
                noise_seed=42, noise_seed_control="fixed", steps=steps, cfg=cfg, sampler_name="uni_pc",
                scheduler="simple", start_at_step=start, end_at_step=10000, return_with_leftover_noise="disable")
    for src, name in ((guided, "model"), (pos, "positive"), (neg, "negative"), (init, "latent_image")):
        g.connect(src, ks2, name)
    report(g, res, 4)
    decode_and_save(g, ks2, vae, fps, prefix, col=5)
    preview = g.add("VAEDecode", 3, title="Proxy preview (decode)")
    g.connect(ks1, preview, "samples")
    g.connect(vae, preview, "vae")
    video = g.add("CreateVideo", 3, fps=float(fps) * (proxy_frames - 1) / (frames - 1))  # same duration
    g.connect(preview, video, "images")
    save = g.add("SaveVideo", 3, title="Save the proxy", filename_prefix=prefix + "_proxy", format="auto",
                 codec="auto")
    g.connect(video, save, "video")
    return g


def wan21_14b_proxy_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B: 720p proxy -> 4K, guided
Two passes. (1) The 14B model samples 1280x720 x 41 frames (the **proxy**, plain attention: in distribution,
fast). (2) The proxy, upscaled to 3840x2160 x 81, is re-noised and sampled again from step 20 of 30 with
UltraGen's windows **guided by the proxy**, so objects keep one layout across windows. Both videos are
saved. uni_pc, 30 steps, CFG 5, shift 8.""" + PROXY_NOTE,
                ["t2v_14b", "umt5", "vae21"],
                "measured on an H200: the 4K pass peaks at 79.4 GiB, 56.3 GiB with a 70 GB memory budget"), 0)
    return proxy_to_4k(g, unet_key="t2v_14b", vae_key="vae21", family="Wan 2.1 T2V/I2V 14B",
                       target="4K UHD (3840x2160)", frames=81, proxy_size=(1280, 720), proxy_frames=41, steps=30,
                       start=20, cfg=5.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_14B_proxy_4K")


def wan22_5b_proxy_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.2 TI2V 5B: 1280x704 proxy -> 4K, guided
Two passes. (1) The 5B model samples its native 1280x704 x 121 frames (the **proxy**, plain attention).
(2) The proxy, upscaled to 3840x2176, is re-noised and sampled again from step 13 of 20 with UltraGen's
windows **guided by the proxy**. Both videos are saved. uni_pc, 20 steps, CFG 5, shift 8, 24 fps.""" +
                PROXY_NOTE,
                ["ti2v_5b", "umt5", "vae22"], "not measured; the 4K 5B template's 30-40 GB plus a few GB"), 0)
    return proxy_to_4k(g, unet_key="ti2v_5b", vae_key="vae22", family="Wan 2.2 TI2V 5B",
                       target="4K UHD (3840x2160)", frames=121, proxy_size=(1280, 704), proxy_frames=121, steps=20,
                       start=13, cfg=5.0, shift=8.0, fps=24, prefix="video/UltraGen_wan22_5B_proxy_4K", five_b=True)


def wan21_14b_4k_multigpu(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B at native 4K, CFG split over 2 GPUs (ComfyUI 0.33+)
**Needs ComfyUI 0.33 or later:** older versions lack *MultiGPU CFG Split* (`MultiGPU_WorkUnits`) and open
this template with that node missing. It runs the positive and negative prompt on two GPUs (at most 2x;
nothing to split at CFG 1); on one GPU it passes the model through. Measured per 14B 4K step on two H200s:
1.74x with preset **fast** (set here). For 2+ GPUs on one video see "4K split across GPUs".""",
                ["t2v_14b", "umt5", "vae21"], "per GPU about the 4K template's; each GPU holds a copy of the model"), 0)
    return t2v(g, unet_key="t2v_14b", vae_key="vae21", family="Wan 2.1 T2V/I2V 14B", target="4K UHD (3840x2160)",
               frames=81, steps=30, cfg=5.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_14B_4K_multigpu",
               preset="fast", between=("MultiGPU_WorkUnits", {"title": "MultiGPU CFG Split", "max_gpus": 2}))


def wan21_14b_4k_split(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B at native 4K, one video split across GPUs (ComfyUI 0.33+)
**UltraGen Split Video Across GPUs** shares every model call over `gpus` GPUs by attention windows (rows are
swapped after each block), with or without CFG; needs ComfyUI 0.33's multi-GPU engine and that many GPUs
(the node says so otherwise). Predicted from each GPU's measured share on an H200 (quality preset): 1.97x
on 2 GPUs, 3.4x on 4, 5.6x on 8; not yet run on 2 GPUs. uni_pc, 30 steps, CFG 5, shift 8.""",
                ["t2v_14b", "umt5", "vae21"], "per GPU about the 4K template's; each GPU holds a copy of the model"), 0)
    return t2v(g, unet_key="t2v_14b", vae_key="vae21", family="Wan 2.1 T2V/I2V 14B", target="4K UHD (3840x2160)",
               frames=81, steps=30, cfg=5.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_14B_4K_split",
               between=("UltraGenSplitAcrossGPUs", {"color": PURPLE, "gpus": 2, "cfg_groups": 1}))


# HunyuanVideo 1.5 and LTX-2 sample as ComfyUI's own templates for them do (SamplerCustomAdvanced with a
# guider, a sampler and a scheduler node); UltraGen Apply sits between the model chain and the guider. Their
# VAEs are not among the registry's video VAEs, so the decode is ComfyUI's own tiled one (VAE_WHY).
VAE_WHY = ("*VAE Decode (Tiled)* is ComfyUI's own: UltraGen Tiled VAE Decode knows the Wan VAEs and hands this "
           "one to that same decode.")
NEEDS_033 = ("**Needs ComfyUI 0.33 or later** ({what}; older versions open this template with those nodes "
             "missing).")


def custom_sampling(g, col, model, pos, neg, latent, scheduler, *, cfg, sampler, below=None, run_col=None):
    """CFGGuider (BasicGuider, one model call per step, where ``neg`` and ``cfg`` are None), RandomNoise (seed
    42, fixed), KSamplerSelect and ``scheduler`` (node type, widgets; it gets ``model`` or ``latent`` where it
    takes one) in column ``col``, then SamplerCustomAdvanced at the bottom of ``run_col`` (default ``col`` + 1).
    Returns the SamplerCustomAdvanced node."""
    if neg is None:
        guider = g.add("BasicGuider", col, below=below)
        conditioning = ((model, "model"), (pos, "conditioning"))
    else:
        guider = g.add("CFGGuider", col, below=below, cfg=cfg)
        conditioning = ((model, "model"), (pos, "positive"), (neg, "negative"))
    for src, name in conditioning:
        g.connect(src, guider, name)
    noise = g.add("RandomNoise", col, noise_seed=42, noise_seed_control="fixed")
    select = g.add("KSamplerSelect", col, sampler_name=sampler)
    node_type, widgets = scheduler
    sigmas = g.add(node_type, col, **widgets)
    for src, name in ((model, "model"), (latent, "latent")):
        if any(spec.name == name for spec in sigmas.specs):
            g.connect(src, sigmas, name)
    run = g.add("SamplerCustomAdvanced", col + 1 if run_col is None else run_col)
    for src, name in ((noise, "noise"), (guider, "guider"), (select, "sampler"), (sigmas, "sigmas"),
                      (latent, "latent_image")):
        g.connect(src, run, name)
    return run


def hunyuan15_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## HunyuanVideo 1.5 T2V (720p model) at native 1080p (ComfyUI 0.33+)
""" + NEEDS_033.format(what="its HunyuanVideo 1.5 nodes") + """ The 720p text-to-video model sampled directly at
1920x1088 x 121 frames: 31x68x120 = 252,960 tokens, 2.3x its training size (no super-resolution pass). UltraGen
Apply, after ModelSamplingSD3, gives it windows of the native size plus a pooled global branch. Wired as
ComfyUI's HunyuanVideo 1.5 template: euler, 20 steps (the Hunyuan team uses 50), CFG 6, shift 7, 24 fps.
""" + VAE_WHY, ["hv15_720p_t2v", "qwen25_vl", "byt5", "hv15_vae"],
                "not measured; the fp16 model is about 17 GB (8.3B weights; weight_dtype fp8_e4m3fn halves it)"), 0)
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    unet = g.add("UNETLoader", 1, models=[M["hv15_720p_t2v"]], unet_name=M["hv15_720p_t2v"]["name"],
                 weight_dtype="default")
    model = patched(g, unet, settings, 7.0, col=1)
    vae = g.add("VAELoader", 1, models=[M["hv15_vae"]], vae_name=M["hv15_vae"]["name"])
    clip = g.add("DualCLIPLoader", 2, models=[M["qwen25_vl"], M["byt5"]], clip_name1=M["qwen25_vl"]["name"],
                 clip_name2=M["byt5"]["name"], type="hunyuan_video_15", device="default")
    pos, neg = encode(g, clip, 2)
    res = resolution(g, "HunyuanVideo 1.5 720p", "1080p (1920x1080)", 121, settings, col=2)
    latent = g.add("EmptyHunyuanVideo15Latent", 2, width=1280, height=720, length=121, batch_size=1)
    size_into(g, res, latent)
    run = custom_sampling(g, 3, model, pos, neg, latent, ("BasicScheduler", dict(scheduler="simple", steps=20,
                                                                                  denoise=1.0)),
                          cfg=6.0, sampler="euler", below=neg)
    report(g, res, 3)
    decode = g.add("VAEDecodeTiled", 4, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8)
    g.connect(run, decode, "samples")
    g.connect(vae, decode, "vae")
    video = g.add("CreateVideo", 4, fps=24.0)
    g.connect(decode, video, "images")
    save = g.add("SaveVideo", 4, filename_prefix="video/UltraGen_hunyuan15_1080p", format="auto", codec="auto")
    g.connect(video, save, "video")
    return g


LTX2_PROMPT = PROMPT + (". Sound: paws crunching in the snow, a soft wind in the pines, a distant raven calls")


def ltx2_1440p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## LTX-2 19B at native 1440p, with sound (ComfyUI 0.33+)
""" + NEEDS_033.format(what="its LTX-2 audio-video nodes") + """ One stage straight at 2560x1440 x 121 frames
(16x45x80 = 57,600 video tokens, 9.4x LTX-2's 768x512 first stage) instead of LTX-2's two stages (half size,
then the x2 latent upsampler). UltraGen Apply patches the video self-attention; the audio stream and audio <->
video attention run as ComfyUI runs them. Wired as the first stage of ComfyUI's LTX-2 template: dev model,
CFG 4, LTXV Scheduler 20 steps, euler_ancestral, 24 fps (keep the frame rate equal in LTXV Conditioning, LTXV
Empty Latent Audio and Create Video). """ + VAE_WHY, ["ltx2_dev", "gemma3"],
                "not measured; the model alone holds 19B weights (at least 19 GB in fp8)"), 0)
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    ckpt = g.add("CheckpointLoaderSimple", 1, models=[M["ltx2_dev"]], ckpt_name=M["ltx2_dev"]["name"])
    model = g.add("UltraGenApply", 1, color=PURPLE)
    g.connect(ckpt, model, "model")
    g.connect(settings, model, "settings")
    audio_vae = g.add("LTXVAudioVAELoader", 1, models=[M["ltx2_dev"]], ckpt_name=M["ltx2_dev"]["name"])
    clip = g.add("LTXAVTextEncoderLoader", 2, models=[M["gemma3"], M["ltx2_dev"]], text_encoder=M["gemma3"]["name"],
                 ckpt_name=M["ltx2_dev"]["name"], device="default")
    pos, neg = encode(g, clip, 2, LTX2_PROMPT)
    cond = g.add("LTXVConditioning", 3, frame_rate=24.0)
    g.connect(pos, cond, "positive")
    g.connect(neg, cond, "negative")
    res = resolution(g, "LTX-2", "1440p / 2K (2560x1440)", 121, settings, col=3)
    video_latent = g.add("EmptyLTXVLatentVideo", 3, width=768, height=512, length=121, batch_size=1)
    size_into(g, res, video_latent)
    audio_latent = g.add("LTXVEmptyLatentAudio", 3, frames_number=121, frame_rate=24.0, batch_size=1)
    g.connect((res, 2), audio_latent, "frames_number")
    g.connect(audio_vae, audio_latent, "audio_vae")
    latent = g.add("LTXVConcatAVLatent", 3)
    g.connect(video_latent, latent, "video_latent")
    g.connect(audio_latent, latent, "audio_latent")
    run = custom_sampling(g, 4, model, (cond, 0), (cond, 1), latent,
                          ("LTXVScheduler", dict(steps=20, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1)),
                          cfg=4.0, sampler="euler_ancestral", run_col=4)
    report(g, res, 4)
    split = g.add("LTXVSeparateAVLatent", 5)
    g.connect(run, split, "av_latent")
    decode = g.add("VAEDecodeTiled", 5, tile_size=512, overlap=64, temporal_size=4096, temporal_overlap=8)
    g.connect((split, 0), decode, "samples")
    g.connect((ckpt, 2), decode, "vae")
    sound = g.add("LTXVAudioVAEDecode", 5)
    g.connect((split, 1), sound, "samples")
    g.connect(audio_vae, sound, "audio_vae")
    video = g.add("CreateVideo", 5, fps=24.0)
    g.connect(decode, video, "images")
    g.connect(sound, video, "audio")
    save = g.add("SaveVideo", 5, filename_prefix="video/UltraGen_ltx2_1440p", format="auto", codec="auto")
    g.connect(video, save, "video")
    return g


def kandinsky5_lite_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Kandinsky 5 Video Lite T2V at native 1080p (ComfyUI 0.33+)
""" + NEEDS_033.format(what="its Kandinsky 5 nodes") + """ The 2B Lite text-to-video model (5 s, trained at
768x512) sampled directly at 1920x1088 x 121 frames: 31x68x120 = 252,960 tokens, 5.3x its training size.
UltraGen Apply, after ModelSamplingSD3, gives it windows of the native size plus a pooled global branch. Wired
as ComfyUI's Kandinsky 5 template (its official templates use Lite; for Pro load its file and pick family
"Kandinsky 5 Video Pro"): euler_ancestral, beta, 50 steps, CFG 5, shift 5, 24 fps. Connect a start image to
*Kandinsky 5 Image to Video* (with the I2V Lite model) for image to video. """ + VAE_WHY,
                ["k5_lite_t2v", "qwen25_vl", "clip_l", "hv_vae"], "not measured"), 0)
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    unet = g.add("UNETLoader", 1, models=[M["k5_lite_t2v"]], unet_name=M["k5_lite_t2v"]["name"],
                 weight_dtype="default")
    model = patched(g, unet, settings, 5.0, col=1)
    vae = g.add("VAELoader", 1, models=[M["hv_vae"]], vae_name=M["hv_vae"]["name"])
    clip = g.add("DualCLIPLoader", 2, models=[M["qwen25_vl"], M["clip_l"]], clip_name1=M["qwen25_vl"]["name"],
                 clip_name2=M["clip_l"]["name"], type="kandinsky5", device="default")
    pos, neg = encode(g, clip, 2)
    res = resolution(g, "Kandinsky 5 Video Lite", "1080p (1920x1080)", 121, settings, col=2)
    latent = g.add("Kandinsky5ImageToVideo", 2, width=768, height=512, length=121, batch_size=1)
    for src, name in ((pos, "positive"), (neg, "negative"), (vae, "vae")):
        g.connect(src, latent, name)
    size_into(g, res, latent)
    ks = g.add("KSampler", 3, below=neg, seed=42, seed_control="fixed", steps=50, cfg=5.0,
               sampler_name="euler_ancestral", scheduler="beta", denoise=1.0)
    for src, name in ((model, "model"), ((latent, 0), "positive"), ((latent, 1), "negative"),
                      ((latent, 2), "latent_image")):
        g.connect(src, ks, name)
    report(g, res, 3)
    decode = g.add("VAEDecodeTiled", 4, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8)
    g.connect(ks, decode, "samples")
    g.connect(vae, decode, "vae")
    video = g.add("CreateVideo", 4, fps=24.0)
    g.connect(decode, video, "images")
    save = g.add("SaveVideo", 4, filename_prefix="video/UltraGen_kandinsky5_lite_1080p", format="auto",
                 codec="auto")
    g.connect(video, save, "video")
    return g


def minimax_h3_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## MiniMax-H3 at native 1080p, with sound (ComfyUI 0.33+)
""" + NEEDS_033.format(what="its MiniMax-H3 nodes") + """ The 33B audio-video model (trained at 1344x768)
sampled directly at 1920x1088 x 124 frames: 37x34x60 = 75,480 video tokens, 2x its canvas per frame. UltraGen
Apply patches the video self-attention; the audio stream runs as ComfyUI runs it. Wired as ComfyUI's MiniMax-H3
template, without its turbo LoRA: BasicGuider (no negative prompt), res_multistep, 20 steps, 24 fps.
**Frames:** *MiniMax H3 Image to Video* snaps its length up to 17k+5 (124 = 5.2 s), UltraGen Resolution rounds
to 4n+1, so the H3 node keeps its own length (124); Resolution's 121 gives the same 37 latent frames in its
report. """ + VAE_WHY, ["h3", "h3_text", "h3_vae", "h3_audio_vae"], "not measured"), 0)
    settings = g.add("UltraGenAttentionSettings", 0, color=PURPLE)
    unet = g.add("UNETLoader", 1, models=[M["h3"]], unet_name=M["h3"]["name"], weight_dtype="default")
    model = g.add("UltraGenApply", 1, color=PURPLE)
    g.connect(unet, model, "model")
    g.connect(settings, model, "settings")
    vae = g.add("VAELoader", 1, models=[M["h3_vae"]], vae_name=M["h3_vae"]["name"])
    audio_vae = g.add("VAELoader", 1, title="Load VAE (audio)", models=[M["h3_audio_vae"]],
                      vae_name=M["h3_audio_vae"]["name"])
    clip = g.add("CLIPLoader", 2, models=[M["h3_text"]], clip_name=M["h3_text"]["name"], type="minimax",
                 device="default")
    res = resolution(g, "MiniMax-H3", "1080p (1920x1080)", 121, settings, col=2)
    cond = g.add("MiniMaxH3ImageToVideo", 2, prompt=LTX2_PROMPT, width=1344, height=768, length=124)
    g.connect(clip, cond, "clip")
    g.connect(vae, cond, "vae")
    g.connect((res, 0), cond, "width")
    g.connect((res, 1), cond, "height")  # its length stays its own: 17k + 5 frames
    run = custom_sampling(g, 3, model, (cond, 0), None, (cond, 1),
                          ("BasicScheduler", dict(scheduler="simple", steps=20, denoise=1.0)),
                          cfg=None, sampler="res_multistep")
    report(g, res, 3)
    decode = g.add("VAEDecodeTiled", 5, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8)
    g.connect(run, decode, "samples")
    g.connect(vae, decode, "vae")
    sound = g.add("VAEDecodeAudio", 5)
    g.connect(run, sound, "samples")
    g.connect(audio_vae, sound, "vae")
    video = g.add("CreateVideo", 5, fps=24.0)
    g.connect(decode, video, "images")
    g.connect(sound, video, "audio")
    save = g.add("SaveVideo", 5, filename_prefix="video/UltraGen_minimax_h3_1080p", format="auto", codec="auto")
    g.connect(video, save, "video")
    return g


DEMO_NOTE = """## UltraGen demo (no download)
The pack's own small Wan model (8M parameters, trained on captioned moving shapes, wide shots and close-ups, at
64x64 x 8 frames) at its native size, then at 3x per side (192x192, 9x the tokens). Demo Prompt: up to 3 objects,
e.g. "a large red disc, a small blue square". Left to right: the native pass upscaled 3x (bicubic), quality 3x
and fast 3x from noise, and coarse to fine 3x (the native pass upscaled, re-noised and finished at 3x with the
quality preset: the best native path in the fidelity bench, docs/FIDELITY.md); the preview compares it with
bicubic. Seconds on a GPU; on a CPU set `frames` to 2 in both Demo Latent nodes. The model passes the bench's gate
at cfg 1; it shows the pack working in your ComfyUI, not what Wan gains."""


def demo_no_download(reg):
    """Columns: 0-1 the note, the model, both presets' settings and the native pass; 2 the 3x latent, UltraGen Apply
    and the coarse-to-fine upscale; 3 the three 3x samplers; 4 decodes, the bicubic upscale and the comparison; 5 the
    four-up video and the previews."""
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(DEMO_NOTE, 0)
    model = g.add("UltraGenDemoModel", 0, color=PURPLE, weights="ultragen_fidelity_wan.safetensors")
    caption = g.add("UltraGenDemoPrompt", 0, color=PURPLE, caption="a large red disc, a small blue square")
    quality = g.add("UltraGenAttentionSettings", 0, title="Settings (quality)", color=PURPLE, preset="quality")
    fast = g.add("UltraGenAttentionSettings", 1, title="Settings (fast)", color=PURPLE, preset="fast")
    native_latent = g.add("UltraGenDemoLatent", 1, title="Demo Latent (native)", color=PURPLE, scale=1, frames=8,
                          batch_size=1)
    big_latent = g.add("UltraGenDemoLatent", 2, title="Demo Latent (3x)", color=PURPLE, scale=3, frames=8,
                       batch_size=1)
    samples, models = {}, {}
    for name, settings in (("native", None), ("quality 3x", quality), ("fast 3x", fast)):
        source = model
        if settings is not None:
            source = g.add("UltraGenApply", 2, title=f"UltraGen Apply ({name.split()[0]})", color=PURPLE)
            g.connect(model, source, "model")
            g.connect(settings, source, "settings")
        ks = g.add("KSampler", 1 if settings is None else 3, title=f"KSampler ({name})", seed=42, seed_control="fixed",
                   steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
        for src, slot in ((source, "model"), (caption, "positive"), ((model, 1), "negative"),
                          (native_latent if settings is None else big_latent, "latent_image")):
            g.connect(src, ks, slot)
        samples[name], models[name] = ks, source
    # coarse to fine: the native pass resized to the 3x latent, re-noised to step 14 of 20 (0.7 of the schedule: at 3x
    # unguided the fidelity bench's balance of the native pass's objects and new detail, docs/FIDELITY.md, run 58),
    # finished with quality
    init = g.add("UltraGenUpscaleLatent", 2, title="Upscale Latent (native to 3x)", color=PURPLE,
                 upscale_method="bicubic")
    g.connect(samples["native"], init, "latent")
    g.connect(big_latent, init, "reference")
    finish = g.add("KSamplerAdvanced", 3, title="KSampler Advanced (coarse to fine 3x, from step 14)",
                   add_noise="enable", noise_seed=43, noise_seed_control="fixed", steps=20, cfg=1.0,
                   sampler_name="euler", scheduler="simple", start_at_step=14, end_at_step=10000,
                   return_with_leftover_noise="disable")
    for src, slot in ((models["quality 3x"], "model"), (caption, "positive"), ((model, 1), "negative"),
                      (init, "latent_image")):
        g.connect(src, finish, slot)
    samples["coarse to fine 3x"] = finish
    frames = {}
    for name, ks in samples.items():
        frames[name] = g.add("UltraGenDemoDecode", 4, title=f"Demo Decode ({name})", color=PURPLE)
        g.connect(ks, frames[name], "samples")
        if name == "native":
            upscaled = g.add("ImageScaleBy", 4, title="Upscale native 3x (bicubic)", upscale_method="bicubic",
                             scale_by=3.0)
            g.connect(frames[name], upscaled, "image")
    row = upscaled
    for name in ("quality 3x", "fast 3x", "coarse to fine 3x"):
        stitch = g.add("ImageStitch", 5, title=f"+ {name}", direction="right", match_image_size=True, spacing_width=4,
                       spacing_color="white")
        g.connect(row, stitch, "image1")
        g.connect(frames[name], stitch, "image2")
        row = stitch
    video = g.add("CreateVideo", 5, fps=8.0)
    g.connect(row, video, "images")
    save = g.add("SaveVideo", 5, filename_prefix="video/UltraGen_demo", format="auto", codec="auto")
    g.connect(video, save, "video")
    cmp = g.add("UltraGenCompare", 4, color=PURPLE, layout="side_by_side", size_mode="first", length_mode="trim",
                label_a="UltraGen coarse to fine 3x", label_b="native + bicubic 3x", flow_max_side=512,
                wall_time_a=0.0, peak_vram_a=0.0, wall_time_b=0.0, peak_vram_b=0.0)
    g.connect(frames["coarse to fine 3x"], cmp, "video_a")
    g.connect(upscaled, cmp, "video_b")
    preview = g.add("PreviewImage", 5, title="Coarse to fine 3x vs bicubic")
    g.connect((cmp, 0), preview, "images")
    show = g.add("PreviewAny", 5, title="Comparison report")
    g.connect((cmp, 1), show, "source")
    return g


# ComfyUI's template browser knows a custom node pack's template by its file name only: the name is the card's
# title (frontends 1.27 to 1.58; 1.27 repeats it as the description) and <name>.jpg its picture; nothing in the
# file is read. So the names are short titles (MAX_TITLE characters: no "..." on a card 15 rem wide) and the
# description is drawn into the thumbnail. file name -> (card description, builder)
MAX_TITLE = 30
WORKFLOWS = {
    "Wan 2.1 1.3B native 1080p": (
        "Text to video, 1920x1088 x 81 frames, with the small Wan 2.1 T2V 1.3B. About 10-14 GB VRAM.",
        wan21_1_3b_1080p),
    "Wan 2.1 14B native 4K": (
        "Text to video, 3840x2160 x 81 frames, Wan 2.1 T2V 14B. Fits 32 GB with the automatic memory budget.",
        wan21_14b_4k),
    "Wan 2.1 14B 4K in 8 steps": (
        "Native 4K with a step-distill LoRA: 8 steps at CFG 1, Wan 2.1 T2V 14B. LoRA slot included.",
        wan21_14b_4k_8_steps),
    "Wan 2.2 5B native 4K": (
        "Text (or image) to video, 3840x2176 x 121 frames, Wan 2.2 TI2V 5B. 12 GB with the memory budget.",
        wan22_5b_4k),
    "Wan 2.2 A14B native 1080p": (
        "Text to video at 1920x1088 with both Wan 2.2 A14B experts patched (high and low noise).",
        wan22_a14b_1080p),
    "Wan 2.1 I2V 14B native 1080p": (
        "Image to video, 1920x1088 x 81 frames, Wan 2.1 I2V 14B (720p model) and your start image.",
        wan21_i2v_1080p),
    "Native 4K vs 720p upscale": (
        "Same prompt and seed: native 4K with UltraGen vs 720p + RealESRGAN x4, side by side with a report.",
        compare_4k_vs_upscale),
    "Wan 2.1 14B 720p proxy to 4K": (
        "Two passes: a 720p proxy, then 4K from step 20 of 30, UltraGen's windows guided by the proxy.",
        wan21_14b_proxy_4k),
    "Wan 2.2 5B 704p proxy to 4K": (
        "Two passes with Wan 2.2 TI2V 5B: a native 1280x704 proxy, then 4K guided by it.",
        wan22_5b_proxy_4k),
    "4K CFG split on 2 GPUs (0.33+)": (
        "Needs ComfyUI 0.33+ (MultiGPU CFG Split node; missing on 0.3.64). Wan 14B 4K, CFG on two GPUs.",
        wan21_14b_4k_multigpu),
    "4K split across GPUs (0.33+)": (
        "Needs ComfyUI 0.33+ and 2+ GPUs. One Wan 14B 4K video shared over the GPUs by attention windows.",
        wan21_14b_4k_split),
    "HunyuanVideo 1.5 1080p (0.33+)": (
        "Needs ComfyUI 0.33+. Text to video, 1920x1088 x 121 frames, with the HunyuanVideo 1.5 720p model.",
        hunyuan15_1080p),
    "LTX-2 19B native 1440p (0.33+)": (
        "Needs ComfyUI 0.33+. Text to video with sound, 2560x1440 x 121 frames, LTX-2 19B in one stage.",
        ltx2_1440p),
    "Kandinsky 5 Lite 1080p (0.33+)": (
        "Needs ComfyUI 0.33+. Text to video, 1920x1088 x 121 frames, with Kandinsky 5 Video Lite (2B).",
        kandinsky5_lite_1080p),
    "MiniMax-H3 1080p (0.33+)": (
        "Needs ComfyUI 0.33+. Text to video with sound, 1920x1088 x 124 frames, with MiniMax-H3 (33B).",
        minimax_h3_1080p),
    "UltraGen demo (no download)": (
        "Try it without a download: the pack's small demo model at 3x, native and coarse to fine, beside bicubic.",
        demo_no_download),
}
# Workflows with nodes that only newer ComfyUI versions register: written by such a version (ComfyUI 0.33),
# the others by 0.3.64 (its SaveVideo / CreateVideo widgets are plain; 0.33 loads them too, but writes its
# own). The pack cannot hide a template per ComfyUI version (the server lists every file in workflows/), so
# such a template says the version it needs in its title, its picture and its note.
NEWER_NODES = {"4K CFG split on 2 GPUs (0.33+)": ("MultiGPU_WorkUnits",),
               "HunyuanVideo 1.5 1080p (0.33+)": ("EmptyHunyuanVideo15Latent",),
               "LTX-2 19B native 1440p (0.33+)": ("LTXAVTextEncoderLoader", "LTXVAudioVAELoader", "LTXVEmptyLatentAudio",
                                                  "LTXVConcatAVLatent", "LTXVSeparateAVLatent", "LTXVAudioVAEDecode"),
               "Kandinsky 5 Lite 1080p (0.33+)": ("Kandinsky5ImageToVideo",),
               "MiniMax-H3 1080p (0.33+)": ("MiniMaxH3ImageToVideo",)}
# Written by hand (checkpoint mode); main() only redraws its thumbnail.
HAND_WRITTEN = {"Checkpoint mode 1.3B 1080p": (
    "The published UltraGen checkpoint (trained branches) on Wan 2.1 T2V 1.3B at 1920x1088.")}


def main(argv: list[str]) -> None:
    import cv2
    from harness import ComfyRuntime
    from workflow_builder import render_thumbnail
    out = HERE.parent / "workflows"
    out.mkdir(exist_ok=True)
    for name in list(WORKFLOWS) + list(HAND_WRITTEN):
        if len(name) > MAX_TITLE:
            raise ValueError(f"{name!r}: {len(name)} characters, a card shows {MAX_TITLE}")
    with tempfile.TemporaryDirectory() as tmp:
        runtime = ComfyRuntime(Path(tmp))
        registry = runtime.nodes.NODE_CLASS_MAPPINGS
        newer = all(n in registry for needs in NEWER_NODES.values() for n in needs)
        for name, (description, build) in WORKFLOWS.items():
            needs = NEWER_NODES.get(name, ())
            missing = [n for n in needs if n not in registry]
            if missing:
                print(f"skipped workflows/{name}: needs {', '.join(missing)}, not registered in this ComfyUI; "
                      "run again with ComfyUI 0.33+")
                continue
            if newer and not needs and "--all" not in argv:
                print(f"skipped workflows/{name}: written with ComfyUI 0.3.64 (--all writes it with this one)")
                continue
            workflow = build(registry).to_json()
            (out / f"{name}.json").write_text(json.dumps(workflow, indent=1, ensure_ascii=False) + "\n")
            cv2.imwrite(str(out / f"{name}.jpg"), render_thumbnail(workflow, name, description),
                        [cv2.IMWRITE_JPEG_QUALITY, 88])
            print(f"wrote workflows/{name}.json and .jpg")
        for name, description in HAND_WRITTEN.items():
            workflow = json.loads((out / f"{name}.json").read_text())
            cv2.imwrite(str(out / f"{name}.jpg"), render_thumbnail(workflow, name, description),
                        [cv2.IMWRITE_JPEG_QUALITY, 88])
            print(f"wrote workflows/{name}.jpg")


if __name__ == "__main__":
    main(sys.argv[1:])
