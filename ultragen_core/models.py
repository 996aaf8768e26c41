"""What the pack knows about each model family, in one place.

The adapters (which native grid to window at, which classes they patch), UltraGen Resolution (valid
sizes, token grids, attention cost), the tiled decode (VAE compression) and bench/ all read it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class ModelFamily:
    """What fixes the valid sizes, the native token grid and the attention cost of one model family.

    vae_spatial / vae_temporal: VAE compression; patch: (t, h, w) patch of the transformer;
    latent_channels: channels of its latent; dim: attention width (heads * head_dim); blocks:
    transformer blocks with self-attention; native: the size it was trained at, (width, height,
    frames); ultragen: UltraGen Apply patches it.
    """

    name: str
    vae_spatial: int
    vae_temporal: int
    patch: Grid
    latent_channels: int
    dim: int
    heads: int
    blocks: int
    native: tuple[int, int, int]
    ultragen: bool

    @property
    def pixel_step(self) -> int:
        return self.vae_spatial * self.patch[1]

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.vae_temporal + 1

    def grid(self, width: int, height: int, frames: int) -> Grid:
        """Token grid (T, H, W) for a valid size."""
        t = math.ceil(self.latent_frames(frames) / self.patch[0])
        return (t, height // self.pixel_step, width // self.pixel_step)

    @property
    def native_grid(self) -> Grid:
        return self.grid(*self.native)

    def native_grid_at(self, width: int, height: int) -> Grid:
        """The native grid of this family's model trained at width x height (its native frame count)."""
        return self.grid(round(width / self.pixel_step) * self.pixel_step,
                         round(height / self.pixel_step) * self.pixel_step, self.native[2])


WAN21_13B = ModelFamily("Wan 2.1 T2V/I2V 1.3B", 8, 4, (1, 2, 2), 16, 1536, 12, 30, (832, 480, 81), True)
WAN21_14B = ModelFamily("Wan 2.1 T2V/I2V 14B", 8, 4, (1, 2, 2), 16, 5120, 40, 40, (1280, 720, 81), True)
WAN21_14B_480P = ModelFamily("Wan 2.1 I2V 14B 480P", 8, 4, (1, 2, 2), 16, 5120, 40, 40, (832, 480, 81), True)
WAN22_5B = ModelFamily("Wan 2.2 TI2V 5B", 16, 4, (1, 2, 2), 48, 3072, 24, 30, (1280, 704, 121), True)
WAN22_A14B = ModelFamily("Wan 2.2 A14B (per expert)", 8, 4, (1, 2, 2), 16, 5120, 40, 40, (1280, 720, 81), True)
# HunyuanVideo: 20 double + 40 single stream blocks, 24 x 128 wide; trained at 720p x 129 frames.
HUNYUAN_VIDEO = ModelFamily("HunyuanVideo", 8, 4, (1, 2, 2), 16, 3072, 24, 60, (1280, 720, 129), True)
# LTX-Video (0.9.x 2B): 32x32x8 VAE, patch 1, 28 blocks, 32 x 64 wide; trained at 768x512 x 121 frames.
LTX_VIDEO = ModelFamily("LTX-Video", 32, 8, (1, 1, 1), 128, 2048, 32, 28, (768, 512, 121), True)
# HunyuanVideo 1.5 (8.3B): 16x16x4 VAE with 32 channels, patch 1, 54 double-stream blocks (no single-stream
# ones), 16 x 128 wide; 480p and 720p checkpoints of one shape, 121 frames. The 1080p super-resolution
# model (98 input channels) is another config and is refused (families/hunyuan_video/variants.py).
HUNYUAN_VIDEO_15_720P = ModelFamily("HunyuanVideo 1.5 720p", 16, 4, (1, 1, 1), 32, 2048, 16, 54, (1280, 720, 121), True)
HUNYUAN_VIDEO_15_480P = ModelFamily("HunyuanVideo 1.5 480p", 16, 4, (1, 1, 1), 32, 2048, 16, 54, (848, 480, 121), True)
# LTX-2 (19B audio-video, LTXAVModel; video stream): the same 32x32x8 VAE and patch 1, 48 blocks, 32 x 128 wide
# (ComfyUI's LTXAVModel defaults); first stage at 768x512 x 121 frames (the published two-stage recipe doubles it).
LTX2 = ModelFamily("LTX-2", 32, 8, (1, 1, 1), 128, 4096, 32, 48, (768, 512, 121), True)

# The order is the order of UltraGen Resolution's model_family list (saved workflows hold the names).
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    WAN21_13B, WAN21_14B, WAN22_5B, WAN22_A14B, HUNYUAN_VIDEO, LTX_VIDEO, WAN21_14B_480P, HUNYUAN_VIDEO_15_720P,
    HUNYUAN_VIDEO_15_480P, LTX2)}

# What the user can state as the native training size where the weights cannot tell (Wan 2.1 I2V-14B
# exists at 480p and at 720p with identical shapes). "auto" takes the family's own.
NATIVE_RESOLUTIONS: dict[str, tuple[int, int] | None] = {
    "auto": None,
    "480p (832x480)": (832, 480),
    "720p (1280x720)": (1280, 720),
    "704p (1280x704, Wan 2.2 5B)": (1280, 704),
    "1080p (1920x1080)": (1920, 1080),
}


# --- video VAEs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoVae:
    """A causal video VAE that UltraGen Tiled VAE Decode tiles itself (frame by frame, with a cache).

    spatial / temporal: compression; latent_channels: C of its latents; file: ComfyUI's usual file name."""

    name: str
    spatial: int
    temporal: int
    latent_channels: int
    file: str


WAN21_VAE = VideoVae("Wan 2.1", 8, 4, 16, "wan_2.1_vae")  # Wan 2.1 (all sizes) and the Wan 2.2-A14B experts
WAN22_VAE = VideoVae("Wan 2.2", 16, 4, 48, "wan2.2_vae")  # Wan 2.2 TI2V-5B
# ComfyUI's VAE classes (module, class name) -> the VAE; the families' vae_spatial / latent_channels agree.
VIDEO_VAES: dict[tuple[str, str], VideoVae] = {("comfy.ldm.wan.vae", "WanVAE"): WAN21_VAE,
                                                ("comfy.ldm.wan.vae2_2", "WanVAE"): WAN22_VAE}


# --- Wan -------------------------------------------------------------------------------------------------------

# Diffusion-model classes of ComfyUI's comfy.ldm.wan that UltraGen Apply patches (each is tested with a
# tiny model through the real ComfyUI runtime), and those it refuses, with the reason.
WAN_SUPPORTED = ("WanModel", "VaceWanModel", "CameraWanModel")
WAN_REFUSED: dict[str, str] = {
    "CausalWanModel": "it generates autoregressively, a few frames at a time against a key / value cache "
                      "(its own CausalWanSelfAttention), so there is no whole-video grid to window",
    "WanAnimate2Model": "its blocks use their own self-attention (WanAnimate2SelfAttention, pose and "
                        "generation streams), which the patch does not replace",
    "WanModel_S2V": "it appends reference and motion-frame tokens and injects audio per block; the patch "
                    "has not been verified with that layout yet",
    "AnimateWanModel": "its face-adapter blocks run between the transformer blocks; the patch has not been "
                       "verified with them yet",
    "SCAILWanModel": "it appends pose tokens with their own shifted positions; the patch has not been "
                     "verified with that layout yet",
    "SCAIL2WanModel": "it appends pose tokens with their own shifted positions; the patch has not been "
                      "verified with that layout yet",
    "WanDancerModel": "its music-conditioned layout has not been verified with the patch yet",
    "HumoWanModel": "its audio blocks and appended reference frames have not been verified with the patch yet",
}


def wan_family(dm) -> ModelFamily:
    """The family of a loaded Wan diffusion model, from its shapes (T2V / I2V share them)."""
    if getattr(dm, "out_dim", 16) == 48:  # Wan2.2-TI2V-5B: 16x16 VAE, 48 latent channels
        return WAN22_5B
    if dm.dim >= 5120:  # 14B, each Wan2.2-A14B expert (and Wan 2.1 I2V-14B-480P: say so in the settings)
        return WAN21_14B
    return WAN21_13B  # 1.3B (and the tiny test models)


def native_grid(family: ModelFamily, native_resolution: str = "auto") -> tuple[Grid, str]:
    """The native token grid to window at, and a few words on where it came from (for the log)."""
    if native_resolution not in NATIVE_RESOLUTIONS:
        raise ValueError(f"native_resolution must be one of {list(NATIVE_RESOLUTIONS)}, got {native_resolution!r}.")
    size = NATIVE_RESOLUTIONS[native_resolution]
    if size is None:
        w, h, _ = family.native
        return family.native_grid, f"native {w}x{h} (automatic, {family.name})"
    return family.native_grid_at(*size), f"native {size[0]}x{size[1]} (set in the settings)"


# --- LTX (comfy.ldm.lightricks) ------------------------------------------------------------------------------

# LTXVModel: LTX-Video 0.9.x (and any video-only LTX checkpoint); LTXAVModel: LTX-2 / 2.3, whose video stream
# is patched (its audio stream and the audio <-> video cross-attention run as ComfyUI runs them).
LTX_SUPPORTED = ("LTXVModel", "LTXAVModel")
LTX_REFUSED: dict[str, str] = {}


def ltx_family(dm) -> ModelFamily:
    """The family of a loaded LTX diffusion model: LTX-2 for the audio-video class, LTX-Video otherwise."""
    return LTX2 if type(dm).__name__ == "LTXAVModel" else LTX_VIDEO
