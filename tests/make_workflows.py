"""Write the example workflows (workflows/*.json, UI format) and their thumbnails (*.jpg).

    COMFYUI_PATH=/path/to/ComfyUI-0.3.64 python tests/make_workflows.py
    COMFYUI_PATH=/path/to/ComfyUI-0.33 python tests/make_workflows.py

Needs a ComfyUI tree (for the node registry, CPU only, no model files). The files are committed; run this
again after a node's schema changes, then run tests/comfyui/test_workflows.py. Each file is written by the
oldest tested ComfyUI that registers its nodes (NEWER_NODES): 0.3.64 writes the common ones and skips the
others, 0.33 writes only those (``--all``: every file, in 0.33's widget layout).
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


def model(name: str, directory: str, base: str = WAN21) -> dict:
    url = base + f"{directory}/{name}" if base in (WAN21, WAN22) else base
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
    "esrgan": {"name": "RealESRGAN_x4plus.safetensors", "directory": "upscale_models",
               "url": "https://huggingface.co/Comfy-Org/Real-ESRGAN_repackaged/resolve/main/RealESRGAN_x4plus.safetensors"},
}

PROMPT = ("A red fox trots through fresh snow in a sunlit pine forest, fine fur detail, snow crystals "
          "sparkling, slow tracking shot, cinematic, sharp focus")
NEGATIVE = ("blurry, low quality, jpeg artifacts, static, overexposed, washed out, deformed, extra limbs, "
            "subtitles, watermark, text")
PURPLE = "#335"

SETTINGS_NOTE = """
**UltraGen settings** (UltraGen Attention Settings): all 0 = automatic. Windows get the model's native size
(Wan 2.1-1.3B 30x52 tokens, 14B 45x80, 5B 22x40), alternate blocks shift them by half a window, and a
global branch attends over tokens pooled back to about the native grid (fusion *band*). For more global
coherence keep the first blocks dense with `full_attention_blocks` = `0,1` (costs more), or lower
`end_percent` to return to full attention in the last steps. `preset` *fast* makes the automatic windows
smaller and unshifted (Wan 14B at 4K: a sampling step about 3x faster than *quality*, for less context). **UltraGen Resolution** gives sizes the model
accepts (1088 rows, not 1080; 4n+1 frames) and prints the token grid and what full vs. UltraGen attention
costs. **UltraGen Tiled VAE Decode** decodes high resolutions in spatial tiles within a VRAM budget
(`max_vram_gb` 0 = automatic). `memory_budget_gb` (0 = automatic, from ComfyUI's free VRAM) lets the patch
work on chunks of tokens when the card is small: measured, Wan 14B fp8 at 4K x 81 fits 32 GB, at 1080p
16 GB, Wan 2.2-5B at 4K 12 GB, 1-3% slower.
"""


def note(text: str, files: list[str], vram: str) -> str:
    listing = "\n".join(f"- [{M[k]['name']}]({M[k]['url']}) -> `models/{M[k]['directory']}/`" for k in files)
    return f"{text.strip()}\n\n**Files**\n{listing}\n\n**VRAM** (estimate, not measured): {vram}\n{SETTINGS_NOTE}"


def loaders(g, unet_key, vae_key, col=0):
    unet = g.add("UNETLoader", col, models=[M[unet_key]], unet_name=M[unet_key]["name"], weight_dtype="default")
    clip = g.add("CLIPLoader", col, models=[M["umt5"]], clip_name=M["umt5"]["name"], type="wan", device="default")
    vae = g.add("VAELoader", col, models=[M[vae_key]], vae_name=M[vae_key]["name"])
    return unet, clip, vae


def prompts(g, clip, col=1, text=PROMPT):
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
    apply = g.add("UltraGenApply", col + 1, color=PURPLE)
    g.connect(sampling, apply, "model")
    g.connect(settings, apply, "settings")
    return apply


def decode_and_save(g, samples, vae, fps, prefix, col=3, tiled=True):
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


def t2v(g, *, unet_key, vae_key, family, target, frames, steps, cfg, shift, fps, prefix, five_b=False):
    unet, clip, vae = loaders(g, unet_key, vae_key)
    settings = g.add("UltraGenAttentionSettings", 1, color=PURPLE)
    res = resolution(g, family, target, frames, settings)
    pos, neg = prompts(g, clip)
    if five_b:
        latent = g.add("Wan22ImageToVideoLatent", 1, width=1280, height=704, length=121, batch_size=1)
        g.connect(vae, latent, "vae")
    else:
        latent = g.add("EmptyHunyuanLatentVideo", 1, width=1280, height=720, length=81, batch_size=1)
    size_into(g, res, latent)
    model = patched(g, unet, settings, shift)
    ks = g.add("KSampler", 2, seed=42, seed_control="fixed", steps=steps, cfg=cfg, sampler_name="uni_pc",
               scheduler="simple", denoise=1.0)
    for src, name in ((model, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        g.connect(src, ks, name)
    decode_and_save(g, ks, vae, fps, prefix)
    report(g, res, 2)
    return g


def wan21_1_3b_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 1.3B at native 1080p (UltraGen)
The small Wan model, trained at 832x480, sampled directly at 1920x1088 x 81 frames (21x68x120 = 171,360
tokens, 4.4x its training size). UltraGen Apply swaps full self-attention for windows of the native size
plus a pooled global branch; the token grid and cost appear in the report node after a run.
Sampler: uni_pc, 30 steps, CFG 6, shift 8 (ComfyUI's Wan 1.3B template).""",
                ["t2v_1.3b", "umt5", "vae21"], "about 10-14 GB (fp16 weights 2.8 GB; text encoder offloaded)"), 0)
    return t2v(g, unet_key="t2v_1.3b", vae_key="vae21", family="Wan 2.1 T2V/I2V 1.3B", target="1080p (1920x1080)",
               frames=81, steps=30, cfg=6.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_1.3B_1080p")


def wan21_14b_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B at native 4K UHD (UltraGen)
3840x2160 x 81 frames straight from the 14B model (21x135x240 = 680,400 tokens, 9x its 720p training
size). Full attention would cost about 19 s per block and step on an H200; UltraGen's windows + global
branch about 6x less (see the report node). The decode runs in spatial tiles (untiled 4K needs > 80 GB).
Sampler: uni_pc, 30 steps, CFG 5, shift 8. Start with fewer frames (e.g. 33) to check the prompt.""",
                ["t2v_14b", "umt5", "vae21"], "about 60-75 GB: an 80 GB H100 / H200 class card (fp8 weights 14 GB)"), 0)
    return t2v(g, unet_key="t2v_14b", vae_key="vae21", family="Wan 2.1 T2V/I2V 14B", target="4K UHD (3840x2160)",
               frames=81, steps=30, cfg=5.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_14B_4K")


def wan22_5b_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.2 TI2V 5B at native 4K UHD (UltraGen)
The 5B model's 16x16 VAE keeps 4K small: 3840x2176 x 121 frames is a 31x68x120 token grid (the size must
be a multiple of 32, hence 2176 rows). Text to video here; connect a start image to *Wan22ImageToVideoLatent*
for image to video. Sampler: uni_pc, 20 steps, CFG 5, shift 8, 24 fps (ComfyUI's 5B template).""",
                ["ti2v_5b", "umt5", "vae22"], "about 30-40 GB (fp16 weights 10 GB; tiled Wan 2.2 VAE decode)"), 0)
    return t2v(g, unet_key="ti2v_5b", vae_key="vae22", family="Wan 2.2 TI2V 5B", target="4K UHD (3840x2160)",
               frames=121, steps=20, cfg=5.0, shift=8.0, fps=24, prefix="video/UltraGen_wan22_5B_4K", five_b=True)


def wan22_a14b_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.2 T2V A14B at native 1080p (UltraGen on both experts)
Wan 2.2-A14B is two models: the high-noise expert runs the first 10 of 20 steps, the low-noise expert the
rest (two KSamplerAdvanced). **Both** go through UltraGen Apply with the same settings; patching only one
leaves half the steps at full 1080p attention. Sampler: euler, 20 steps, CFG 3.5, shift 8.""",
                ["a14b_high", "a14b_low", "umt5", "vae21"],
                "about 35-45 GB with fp8 experts (14 GB each; ComfyUI keeps one loaded at a time when memory is short)"), 0)
    high = g.add("UNETLoader", 0, title="High-noise expert", models=[M["a14b_high"]],
                 unet_name=M["a14b_high"]["name"], weight_dtype="default")
    low = g.add("UNETLoader", 0, title="Low-noise expert", models=[M["a14b_low"]],
                unet_name=M["a14b_low"]["name"], weight_dtype="default")
    clip = g.add("CLIPLoader", 0, models=[M["umt5"]], clip_name=M["umt5"]["name"], type="wan", device="default")
    vae = g.add("VAELoader", 0, models=[M["vae21"]], vae_name=M["vae21"]["name"])
    settings = g.add("UltraGenAttentionSettings", 1, color=PURPLE)
    res = resolution(g, "Wan 2.2 A14B (per expert)", "1080p (1920x1080)", 81, settings)
    pos, neg = prompts(g, clip)
    latent = g.add("EmptyHunyuanLatentVideo", 1, width=1280, height=720, length=81, batch_size=1)
    size_into(g, res, latent)
    m_high = patched(g, high, settings, 8.0)
    m_low = patched(g, low, settings, 8.0)
    k1 = g.add("KSamplerAdvanced", 3, title="KSampler (high noise, steps 0-10)", add_noise="enable", noise_seed=42,
               noise_seed_control="fixed", steps=20, cfg=3.5, sampler_name="euler", scheduler="simple",
               start_at_step=0, end_at_step=10, return_with_leftover_noise="enable")
    k2 = g.add("KSamplerAdvanced", 3, title="KSampler (low noise, steps 10-20)", add_noise="disable", noise_seed=0,
               steps=20, cfg=3.5, sampler_name="euler", scheduler="simple", start_at_step=10, end_at_step=10000,
               return_with_leftover_noise="disable")
    for src, name in ((m_high, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        g.connect(src, k1, name)
    for src, name in ((m_low, "model"), (pos, "positive"), (neg, "negative"), (k1, "latent_image")):
        g.connect(src, k2, name)
    decode_and_save(g, k2, vae, 16, "video/UltraGen_wan22_A14B_1080p", col=4)
    report(g, res, 3)
    return g


def wan21_i2v_1080p(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 I2V 14B at native 1080p (UltraGen)
Image to video at 1920x1088 x 81 frames from the 720p I2V model. Load your start image (it is resized to
the output size); CLIP Vision H encodes it for the model's image cross-attention. UltraGen patches the
self-attention only. Sampler: uni_pc, 20 steps, CFG 5, shift 8.""",
                ["i2v_720p", "umt5", "vae21", "clip_vision"],
                "about 45-55 GB with fp16 weights (32 GB); use an fp8 copy of the model on 24-48 GB cards"), 0)
    unet, clip, vae = loaders(g, "i2v_720p", "vae21")
    cv = g.add("CLIPVisionLoader", 0, models=[M["clip_vision"]], clip_name=M["clip_vision"]["name"])
    image = g.add("LoadImage", 0, title="Start image", image="example.png")
    settings = g.add("UltraGenAttentionSettings", 1, color=PURPLE)
    res = resolution(g, "Wan 2.1 T2V/I2V 14B", "1080p (1920x1080)", 81, settings, col=1)
    pos, neg = prompts(g, clip, col=1, text="The fox turns its head toward the camera, snow falling gently, "
                                             "subtle camera push-in, sharp fur detail")
    enc = g.add("CLIPVisionEncode", 2, crop="none")
    g.connect(cv, enc, "clip_vision")
    g.connect(image, enc, "image")
    i2v = g.add("WanImageToVideo", 2, width=1280, height=720, length=81, batch_size=1)
    for src, name in ((pos, "positive"), (neg, "negative"), (vae, "vae"), (enc, "clip_vision_output"),
                      (image, "start_image")):
        g.connect(src, i2v, name)
    size_into(g, res, i2v)
    model = patched(g, unet, settings, 8.0, col=2)
    ks = g.add("KSampler", 3, seed=42, seed_control="fixed", steps=20, cfg=5.0, sampler_name="uni_pc",
               scheduler="simple", denoise=1.0)
    for src, name in ((model, "model"), ((i2v, 0), "positive"), ((i2v, 1), "negative"), ((i2v, 2), "latent_image")):
        g.connect(src, ks, name)
    decode_and_save(g, ks, vae, 16, "video/UltraGen_wan21_i2v_1080p", col=4)
    report(g, res, 3)
    return g


def compare_4k_vs_upscale(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Native 4K (UltraGen) vs. 720p + upscale model
The same prompt and seed (42, fixed) rendered twice with Wan 2.1 T2V 14B: (a) natively at 3840x2160 with
UltraGen, (b) at its native 1280x720 with plain attention, then 4x upscaled by RealESRGAN (ImageUpscaleWithModel,
5120x2880) - UltraGen Compare scales (b) to (a)'s size. The noise differs with the latent size, so the two
clips share prompt and seed, not content: compare detail and steadiness, not pixels (PSNR / SSIM are low
for different content). Fill in the wall times and peak VRAM from ComfyUI's console
to see cost next to quality. The 720p -> 4K upscale of 81 frames holds about 15 GB of frames in RAM.""",
                ["t2v_14b", "umt5", "vae21", "esrgan"], "about 60-75 GB for branch (a); branch (b) about 25-30 GB"), 0)
    unet, clip, vae = loaders(g, "t2v_14b", "vae21")
    up_loader = g.add("UpscaleModelLoader", 0, models=[M["esrgan"]], model_name=M["esrgan"]["name"])
    pos, neg = prompts(g, clip, col=1)
    sampling = g.add("ModelSamplingSD3", 1, shift=8.0)
    g.connect(unet, sampling, "model")
    settings = g.add("UltraGenAttentionSettings", 1, color=PURPLE)
    images = {}
    # the two branches side by side in columns 2-4, (a) above (b), each in its own group
    for branch, target in (("a", "4K UHD (3840x2160)"), ("b", "720p (1280x720)")):
        g.align(2, 3, 4)
        first = len(g.nodes)
        if branch == "a":
            model_src = g.add("UltraGenApply", 2, color=PURPLE)
            g.connect(sampling, model_src, "model")
            g.connect(settings, model_src, "settings")
        else:
            model_src = sampling
        res = resolution(g, "Wan 2.1 T2V/I2V 14B", target, 81, settings if branch == "a" else None, col=2)
        latent = g.add("EmptyHunyuanLatentVideo", 2, width=1280, height=720, length=81, batch_size=1)
        size_into(g, res, latent)
        ks = g.add("KSampler", 3, title=f"KSampler ({'native 4K' if branch == 'a' else '720p'})", seed=42,
                   seed_control="fixed", steps=30, cfg=5.0, sampler_name="uni_pc", scheduler="simple", denoise=1.0)
        for src, name in ((model_src, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
            g.connect(src, ks, name)
        images[branch] = decode_and_save(g, ks, vae, 16, f"video/UltraGen_compare_{branch}", col=4)
        if branch == "b":
            up = g.add("ImageUpscaleWithModel", 3)
            g.connect(up_loader, up, "upscale_model")
            g.connect(images["b"], up, "image")
            g.group("(b) 720p, plain attention, then RealESRGAN x4", g.nodes[first:], color="#3f5a3f")
        else:
            g.group("(a) native 4K with UltraGen", g.nodes[first:], color="#3f3f6a")
    cmp = g.add("UltraGenCompare", 5, color=PURPLE, layout="split_wipe", size_mode="first", length_mode="trim",
                label_a="native 4K (UltraGen)", label_b="720p + RealESRGAN x4", flow_max_side=512,
                wall_time_a=0.0, peak_vram_a=0.0, wall_time_b=0.0, peak_vram_b=0.0)
    g.connect(images["a"], cmp, "video_a")
    g.connect(up, cmp, "video_b")
    video = g.add("CreateVideo", 5, fps=16.0)
    g.connect((cmp, 0), video, "images")
    save = g.add("SaveVideo", 5, filename_prefix="video/UltraGen_compare", format="auto", codec="auto")
    g.connect(video, save, "video")
    show = g.add("PreviewAny", 5, title="Comparison report")
    g.connect((cmp, 1), show, "source")
    return g


PROXY_NOTE = """
**Settings.** *UltraGen Proxy Guidance*: `strength` 1 = every window attends to its own tokens and its proxy
tokens in one joint attention call (0 = no guidance, the model unchanged; values between cost a second
attention call per window). `neighbourhood` = each window sees the proxy cells under it plus `radius_frames`
(1) proxy frames and `radius_cells` (2) proxy tokens around (bounded cost at 4K); `all` = every proxy token
(about 1.5x the step time at 4K). *UltraGen Upscale Latent* resizes the proxy to the 4K latent (frame 0 stays
frame 0; a proxy with fewer frames is interpolated in time). *KSamplerAdvanced* adds noise and starts at
`start_at_step` of `steps`: later = closer to the proxy's layout and colours, fewer 4K steps; earlier = more
new detail, more freedom to drift (the proxy guidance still holds the layout). Same prompt, seed and sampler
as the first pass."""


def proxy_to_4k(g, *, unet_key, vae_key, family, target, frames, proxy_size, proxy_frames, steps, start, cfg,
                shift, fps, prefix, five_b=False):
    """First pass at the native size (the proxy) -> UltraGen Upscale Latent (coarse-to-fine start) and UltraGen
    Proxy Guidance -> KSamplerAdvanced from step ``start`` at the target size -> tiled decode."""
    unet, clip, vae = loaders(g, unet_key, vae_key)
    settings = g.add("UltraGenAttentionSettings", 1, color=PURPLE)
    res = resolution(g, family, target, frames, settings)
    pos, neg = prompts(g, clip)
    sampling = g.add("ModelSamplingSD3", 1, shift=shift)
    g.connect(unet, sampling, "model")
    width, height = proxy_size
    if five_b:
        first = g.add("Wan22ImageToVideoLatent", 2, title="Proxy latent (native size)", width=width, height=height,
                      length=proxy_frames, batch_size=1)
        g.connect(vae, first, "vae")
    else:
        first = g.add("EmptyHunyuanLatentVideo", 2, title="Proxy latent (native size)", width=width, height=height,
                      length=proxy_frames, batch_size=1)
    ks1 = g.add("KSampler", 2, title=f"First pass: proxy at {width}x{height}", seed=42, seed_control="fixed",
                steps=steps, cfg=cfg, sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    for src, name in ((sampling, "model"), (pos, "positive"), (neg, "negative"), (first, "latent_image")):
        g.connect(src, ks1, name)
    apply = g.add("UltraGenApply", 2, color=PURPLE)
    g.connect(sampling, apply, "model")
    g.connect(settings, apply, "settings")
    guided = g.add("UltraGenProxyGuidance", 3, color=PURPLE, strength=1.0, neighbourhood="neighbourhood",
                   radius_frames=1, radius_cells=2, seed=0)
    g.connect(apply, guided, "model")
    g.connect(ks1, guided, "proxy")
    init = g.add("UltraGenUpscaleLatent", 3, color=PURPLE, upscale_method="bilinear")
    g.connect(ks1, init, "latent")
    size_into(g, res, init)
    ks2 = g.add("KSamplerAdvanced", 3, title=f"Second pass: 4K from step {start} of {steps}", add_noise="enable",
                noise_seed=42, noise_seed_control="fixed", steps=steps, cfg=cfg, sampler_name="uni_pc",
                scheduler="simple", start_at_step=start, end_at_step=10000, return_with_leftover_noise="disable")
    for src, name in ((guided, "model"), (pos, "positive"), (neg, "negative"), (init, "latent_image")):
        g.connect(src, ks2, name)
    report(g, res, 3)
    decode_and_save(g, ks2, vae, fps, prefix, col=4)
    preview = g.add("VAEDecode", 4, title="Proxy preview (decode)")
    g.connect(ks1, preview, "samples")
    g.connect(vae, preview, "vae")
    video = g.add("CreateVideo", 4, fps=float(fps) * (proxy_frames - 1) / (frames - 1))  # same duration
    g.connect(preview, video, "images")
    save = g.add("SaveVideo", 4, title="Save the proxy", filename_prefix=prefix + "_proxy", format="auto",
                 codec="auto")
    g.connect(video, save, "video")
    return g


def wan21_14b_proxy_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B: 720p proxy -> 4K, guided (UltraGen)
Coarse to fine in two passes. (1) The 14B model samples the video at its native 1280x720 with 41 frames
(the **proxy**, plain attention: in distribution, fast). (2) The proxy, upscaled to 3840x2160 x 81 frames, is
re-noised and sampled again at 4K from step 20 of 30 (sigma about 0.8 with shift 8), with UltraGen's windows
**guided by the proxy**: every window also attends to the proxy tokens around it, so objects keep one layout
across windows instead of repeating. The proxy is saved too (at a frame rate matching its 41 frames).
Sampler: uni_pc, 30 steps, CFG 5, shift 8.""" + PROXY_NOTE,
                ["t2v_14b", "umt5", "vae21"],
                "measured on an H200 (docs/BENCHMARKS.md sections 5-6): the 4K pass peaks at 79.4 GiB with the "
                "proxy when nothing limits it, 56.3 GiB with a 70 GB memory budget (the automatic budget follows "
                "the card's free VRAM); a step costs 1.1x an unguided 4K step. The first pass needs about 25-30 GB."), 0)
    return proxy_to_4k(g, unet_key="t2v_14b", vae_key="vae21", family="Wan 2.1 T2V/I2V 14B",
                       target="4K UHD (3840x2160)", frames=81, proxy_size=(1280, 720), proxy_frames=41, steps=30,
                       start=20, cfg=5.0, shift=8.0, fps=16, prefix="video/UltraGen_wan21_14B_proxy_4K")


def wan22_5b_proxy_4k(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.2 TI2V 5B: native 1280x704 proxy -> 4K, guided (UltraGen)
Coarse to fine in two passes. (1) The 5B model samples the video at its native 1280x704 x 121 frames (the
**proxy**, plain attention). (2) The proxy, upscaled to 3840x2176 (the 5B needs multiples of 32 px), is
re-noised and sampled again from step 13 of 20 (sigma about 0.8 with shift 8), with UltraGen's windows
**guided by the proxy**. The proxy is saved too. Text to video. Sampler: uni_pc, 20 steps, CFG 5, shift 8,
24 fps.""" +
                PROXY_NOTE,
                ["ti2v_5b", "umt5", "vae22"],
                "not measured; the native 4K 5B workflow is estimated at 30-40 GB, and the proxy's 31x22x40 tokens "
                "add their activations to every block (a few GB more)."), 0)
    return proxy_to_4k(g, unet_key="ti2v_5b", vae_key="vae22", family="Wan 2.2 TI2V 5B",
                       target="4K UHD (3840x2160)", frames=121, proxy_size=(1280, 704), proxy_frames=121, steps=20,
                       start=13, cfg=5.0, shift=8.0, fps=24, prefix="video/UltraGen_wan22_5B_proxy_4K", five_b=True)


def t2v_14b_4k_on_gpus(g, preset, prefix, node, **inputs):
    """The native 4K 14B graph with a multi-GPU ``node`` (its widget ``inputs``) between the patch and the
    sampler; uni_pc, 30 steps, CFG 5, shift 8."""
    unet, clip, vae = loaders(g, "t2v_14b", "vae21")
    settings = g.add("UltraGenAttentionSettings", 1, color=PURPLE, preset=preset)
    res = resolution(g, "Wan 2.1 T2V/I2V 14B", "4K UHD (3840x2160)", 81, settings)
    pos, neg = prompts(g, clip)
    latent = g.add("EmptyHunyuanLatentVideo", 1, width=1280, height=720, length=81, batch_size=1)
    size_into(g, res, latent)
    model = patched(g, unet, settings, 8.0)
    gpus = g.add(node, 2, **inputs)
    g.connect(model, gpus, "model")
    ks = g.add("KSampler", 3, seed=42, seed_control="fixed", steps=30, cfg=5.0, sampler_name="uni_pc",
               scheduler="simple", denoise=1.0)
    for src, name in ((gpus, "model"), (pos, "positive"), (neg, "negative"), (latent, "latent_image")):
        g.connect(src, ks, name)
    decode_and_save(g, ks, vae, 16, prefix, col=4)
    report(g, res, 3)
    return g


def wan21_14b_4k_multigpu(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B at native 4K on two GPUs: MultiGPU CFG Split (UltraGen, ComfyUI 0.33+)
ComfyUI 0.33's own multi-GPU engine (**MultiGPU CFG Split**, node `MultiGPU_WorkUnits`) puts a copy of the
model on each extra GPU and runs the conditionings in parallel: with CFG, the positive prompt on one GPU, the
negative on the other. So at most 2x, from 2 GPUs; more GPUs do not help one video (`max_gpus` 2). Place it
after UltraGen Apply; each GPU's copy runs its own patch with its own weights. Without CFG (CFG 1) there is
nothing to split. Measured per 14B step with CFG on two H200s (docs/BENCHMARKS.md section 4): 1080p 1.96x
(default preset) / 1.41x (fast); 4K 1.74x with preset **fast** (set here), while the default preset gains
nothing at 4K. For one video on 2 or more GPUs see the template "split across GPUs" (UltraGen Split Video
Across GPUs). *Select Model Device* (same menu) can pin the first copy to a GPU.
On a machine with one GPU the node passes the model through. Sampler: uni_pc, 30 steps, CFG 5, shift 8.""",
                ["t2v_14b", "umt5", "vae21"],
                "per GPU about the single-GPU figure of the 4K workflow (60-75 GB; the fast preset a little less), "
                "each GPU holds a full copy of the 14B model; system RAM for the second copy while it loads"), 0)
    return t2v_14b_4k_on_gpus(g, "fast", "video/UltraGen_wan21_14B_4K_multigpu", "MultiGPU_WorkUnits",
                              title="MultiGPU CFG Split", max_gpus=2)


def wan21_14b_4k_split(reg):
    from workflow_builder import Graph
    g = Graph(reg)
    g.note(note("""## Wan 2.1 T2V 14B at native 4K, one video split across GPUs (UltraGen, ComfyUI 0.33+)
**UltraGen Split Video Across GPUs** shares every model call out over the GPUs by attention windows: each GPU
computes its windows and the tokens they own through every block, and the GPUs swap rows after each block
(a few GB per block over NVLink). The conditionings stay together, so it also speeds up sampling with CFG 1,
and more than two GPUs help one video; it takes the place of ComfyUI's MultiGPU CFG Split for an UltraGen
model. It uses ComfyUI's own multi-GPU engine: a copy of the model on each extra GPU, one worker thread each.
Share of one 14B call at 4K per GPU, timed on an H200 (docs/BENCHMARKS.md section 4): the quality preset (set
here) 1.87x on 2 GPUs with 4 of 40 blocks (1.97x at full depth), 3.4x on 4, 5.6x on 8; the fast preset 1.6x /
2.5x / 3.7x. Predicted from each GPU's measured share; not yet run on 2 GPUs. Needs ComfyUI 0.33 or later
and at least `gpus` GPUs (the node says so otherwise). Sampler: uni_pc, 30 steps, CFG 5, shift 8.""",
                ["t2v_14b", "umt5", "vae21"],
                "per GPU about the single-GPU figure of the 4K workflow (60-75 GB); each GPU holds a full copy of the "
                "14B model; system RAM for each copy while it loads"), 0)
    return t2v_14b_4k_on_gpus(g, "quality", "video/UltraGen_wan21_14B_4K_split", "UltraGenSplitAcrossGPUs",
                              color=PURPLE, gpus=2, cfg_groups=1)


# file name -> (thumbnail title, builder). ComfyUI's template browser shows a custom node pack's
# templates by file name (as the card title and, 0.33's frontend, with - and _ as spaces, the
# description); it reads no title or description from the file. So the names are the titles.
WORKFLOWS = {
    "UltraGen Wan 2.1 T2V 1.3B native 1080p": ("Wan 2.1 T2V 1.3B native 1080p", wan21_1_3b_1080p),
    "UltraGen Wan 2.1 T2V 14B native 4K": ("Wan 2.1 T2V 14B native 4K", wan21_14b_4k),
    "UltraGen Wan 2.2 TI2V 5B native 4K": ("Wan 2.2 TI2V 5B native 4K", wan22_5b_4k),
    "UltraGen Wan 2.2 T2V A14B native 1080p": ("Wan 2.2 A14B native 1080p", wan22_a14b_1080p),
    "UltraGen Wan 2.1 I2V 14B native 1080p": ("Wan 2.1 I2V 14B native 1080p", wan21_i2v_1080p),
    "UltraGen compare native 4K vs 720p upscale": ("Native 4K vs 720p + upscale", compare_4k_vs_upscale),
    "UltraGen Wan 2.1 T2V 14B proxy 720p to 4K": ("Wan 2.1 14B proxy 720p to 4K", wan21_14b_proxy_4k),
    "UltraGen Wan 2.2 TI2V 5B proxy 704p to 4K": ("Wan 2.2 5B proxy 704p to 4K", wan22_5b_proxy_4k),
    "UltraGen Wan 2.1 T2V 14B 4K MultiGPU CFG split": ("Wan 2.1 14B 4K MultiGPU CFG split (0.33+)",
                                                        wan21_14b_4k_multigpu),
    "UltraGen Wan 2.1 T2V 14B 4K split across GPUs": ("Wan 2.1 14B 4K split across GPUs (0.33+)",
                                                       wan21_14b_4k_split),
}
# Workflows with nodes that only newer ComfyUI versions register: written by such a version (ComfyUI 0.33),
# the others by 0.3.64 (its SaveVideo / CreateVideo widgets are plain; 0.33 loads them too, but writes its
# own).
NEWER_NODES = {"UltraGen Wan 2.1 T2V 14B 4K MultiGPU CFG split": ("MultiGPU_WorkUnits",)}
# Written by hand (checkpoint mode); main() only redraws its thumbnail.
HAND_WRITTEN = {"UltraGen checkpoint mode Wan 2.1 1.3B 1080p": "Checkpoint mode: Wan 2.1 1.3B 1080p"}


def main(argv: list[str]) -> None:
    import cv2
    from harness import ComfyRuntime
    from workflow_builder import render_thumbnail
    out = HERE.parent / "workflows"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = ComfyRuntime(Path(tmp))
        registry = runtime.nodes.NODE_CLASS_MAPPINGS
        newer = all(n in registry for needs in NEWER_NODES.values() for n in needs)
        for name, (title, build) in WORKFLOWS.items():
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
            cv2.imwrite(str(out / f"{name}.jpg"), render_thumbnail(workflow, title), [cv2.IMWRITE_JPEG_QUALITY, 85])
            print(f"wrote workflows/{name}.json and .jpg")
        for name, title in HAND_WRITTEN.items():
            workflow = json.loads((out / f"{name}.json").read_text())
            cv2.imwrite(str(out / f"{name}.jpg"), render_thumbnail(workflow, title), [cv2.IMWRITE_JPEG_QUALITY, 85])
            print(f"wrote workflows/{name}.jpg")


if __name__ == "__main__":
    main(sys.argv[1:])
