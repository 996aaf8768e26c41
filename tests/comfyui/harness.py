"""A headless ComfyUI runtime for tests: real node registry, real loaders, real executor.

Everything the tests write (tiny checkpoints, outputs) goes to a temporary base folder; the ComfyUI
tree itself is never written to. Import this module only when a ComfyUI tree was found.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from pathlib import Path

import torch

from comfyui_finder import PACK_DIR, find_comfyui

PACK_NAME = "ComfyUI-UltraGen"
TEST_NODES = Path(__file__).with_name("ultragen_test_nodes.py")


class ServerStub:
    """What PromptExecutor needs of the server: a client id and a message sink."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class PromptFailed(RuntimeError):
    pass


def enable_dynamic_vram() -> bool:
    """Turn on dynamic VRAM the way ComfyUI 0.33's main.py does at start-up on CUDA (comfy-aimdo; the
    default loader path there). Not public API, and only for the CUDA test mode: 0.3.64 has no dynamic
    VRAM (returns False), and a server started by main.py does this itself. comfy-aimdo's library must be
    loaded before ComfyUI's model patcher imports it, as main.py does."""
    try:
        import comfy_aimdo.control
    except ImportError:  # ComfyUI before dynamic VRAM
        return False
    import comfy.cli_args
    reserve = comfy.cli_args.args.reserve_vram  # --reserve-vram caps dynamic VRAM's weight cache too
    try:
        loaded = comfy_aimdo.control.init(simple_vram_headroom=None if reserve is None else int(reserve * 1024**3))
    except TypeError:  # older comfy-aimdo protocol
        loaded = comfy_aimdo.control.init()
    import comfy.memory_management
    import comfy.model_management
    import comfy.model_patcher as model_patcher
    if not loaded or not hasattr(model_patcher, "ModelPatcherDynamic"):
        return False
    devices = comfy.model_management.get_all_torch_devices()
    if not comfy_aimdo.control.init_devices(d.index for d in devices):
        return False
    model_patcher.CoreModelPatcher = model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
    return True


def make_executor(execution, server):
    """ComfyUI's PromptExecutor with the classic (drop-after-use) cache, in both tested versions.

    The constructor is not public API and differs: ComfyUI 0.3.64 takes ``(server, cache_type,
    cache_size)``; 0.33.0 takes ``(server, cache_type, cache_args)`` and reads ``cache_args["ram"]`` /
    ``["ram_inactive"]`` on every prompt (main.py passes them). Everything else the tests use of it
    (``execute``, ``reset``, ``success``, ``status_messages``, ``history_result``) is the same in both.
    """
    import inspect
    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:
        return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0})
    return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC)


class ComfyRuntime:
    def __init__(self, base: Path):
        root, how = find_comfyui()
        assert root is not None, how
        self.root = root
        self.base = base
        # ComfyUI's root must come first: its top-level `nodes` module would otherwise lose to this
        # pack's `nodes` package when the pack folder is on the path too.
        sys.path[:] = [str(root)] + [p for p in sys.path if p != str(root)]
        import comfy.cli_args
        # ComfyUI on the CPU, unless a CUDA run asks for the GPU (ULTRAGEN_TEST_DEVICE=cuda: ComfyUI's own
        # device choice, e.g. 0.33's dynamic VRAM loading)
        on_gpu = os.environ.get("ULTRAGEN_TEST_DEVICE") == "cuda"
        comfy.cli_args.args.cpu = not on_gpu
        self.dynamic_vram = on_gpu and enable_dynamic_vram()  # before comfy.model_patcher is imported
        comfy.cli_args.args.disable_api_nodes = True
        import folder_paths
        import utils.extra_config  # noqa: F401  (ComfyUI imports it before nodes)
        for sub in ("models/diffusion_models", "models/vae", "models/upscale_models", "output", "input",
                    "temp", "custom_nodes"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for kind in ("diffusion_models", "vae", "upscale_models"):
            folder_paths.add_model_folder_path(kind, str(base / "models" / kind), is_default=True)
        folder_paths.set_output_directory(str(base / "output"))
        folder_paths.set_input_directory(str(base / "input"))
        folder_paths.set_temp_directory(str(base / "temp"))
        import nodes
        import execution
        self.nodes, self.execution, self.folder_paths = nodes, execution, folder_paths
        logging.getLogger().setLevel(logging.WARNING)
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        link = base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(PACK_DIR, target_is_directory=True)
        self.pack_loaded = asyncio.run(nodes.load_custom_node(str(link), module_parent="custom_nodes"))
        self.test_nodes_loaded = asyncio.run(nodes.load_custom_node(str(TEST_NODES), module_parent="custom_nodes"))
        self.server = ServerStub()
        self.executor = make_executor(execution, self.server)

    def load_node_pack(self, path: Path) -> bool:
        """Load another custom node pack (a folder) or node file the way ComfyUI loads custom nodes, from
        where it lies (a read-only folder is fine: bytecode goes to the pycache prefix); True when it loaded."""
        return asyncio.run(self.nodes.load_custom_node(str(path), module_parent="custom_nodes"))

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    def validate(self, prompt: dict):
        """ComfyUI's validate_prompt: (ok, error, outputs, node_errors)."""
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt: dict, fresh_cache: bool = True) -> list[tuple[str, dict]]:
        """Validate and execute a prompt (API format); raise PromptFailed with ComfyUI's message."""
        ok, error, outputs, node_errors = self.validate(prompt)
        if not ok:
            raise PromptFailed(f"validation: {error}; {node_errors}")
        if fresh_cache:
            self.executor.reset()
        self.server.messages.clear()
        self.executor.execute(prompt, str(uuid.uuid4()), {}, outputs)
        if not self.executor.success:
            errors = [d for e, d in self.executor.status_messages if e in ("execution_error", "execution_interrupted")]
            raise PromptFailed(errors[0].get("exception_message", str(errors[0])) if errors else "failed")
        return self.executor.status_messages


@contextlib.contextmanager
def eager_weights():
    """ComfyUI's layers allocate their weights at once (with dynamic VRAM on, 0.33 leaves them to the
    state-dict load): for building random test checkpoints."""
    try:
        import comfy.memory_management as mm
    except ImportError:
        yield
        return
    enabled = getattr(mm, "aimdo_enabled", False)
    mm.aimdo_enabled = False
    try:
        yield
    finally:
        mm.aimdo_enabled = enabled


def random_wan_state_dict(seed: int = 0, dim: int = 128, num_layers: int = 2, in_dim: int = 16, out_dim: int = 16,
                          model_class: str = "WanModel", **extra) -> dict[str, torch.Tensor]:
    """A random-weight Wan DiT state dict built from ComfyUI's own classes (scaled for healthy signals)."""
    import comfy.ldm.wan.model as wan
    import comfy.ops
    cls = getattr(wan, model_class)
    kwargs = dict(dim=dim, num_heads=dim // 128, num_layers=num_layers, ffn_dim=2 * dim, in_dim=in_dim,
                  out_dim=out_dim, text_dim=4096, freq_dim=256, operations=comfy.ops.disable_weight_init)
    kwargs.update(extra)
    with eager_weights():
        model = cls(**kwargs)
    return random_weights(model, seed)


def random_weights(model, seed: int = 0, special=None) -> dict[str, torch.Tensor]:
    """A float32 state dict of ``model`` with random values scaled for healthy signals: norm weights 1, matrices
    N(0, 1 / fan_in), the rest N(0, 0.02^2); ``special(name, p, generator)`` may return another tensor for a
    weight that is not a norm's (None: the rule above). One generator seeded with ``seed``, in key order."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.state_dict().items():
        t = torch.ones(p.shape) if "norm" in name and name.endswith("weight") else None
        if t is None and special is not None:
            t = special(name, p, gen)
        if t is None:
            t = (torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5 if p.ndim >= 2
                 else 0.02 * torch.randn(p.shape, generator=gen))
        sd[name] = t.to(torch.float32).contiguous()
    return sd


def save_wan(runtime: ComfyRuntime, name: str, **kwargs) -> str:
    """Write a tiny random Wan checkpoint into models/diffusion_models; returns its file name."""
    from safetensors.torch import save_file
    path = runtime.models_dir / "diffusion_models" / name
    if not path.exists():
        save_file(random_wan_state_dict(**kwargs), str(path))
    return name


def placeholder(path: Path) -> None:
    """A stand-in for a model file that validation only looks up: empty, or for a torch pickle an empty but
    well-formed checkpoint (UltraGen Load Weights checks a pickle's structure when a prompt is queued)."""
    if path.exists() and path.stat().st_size:
        return
    if path.suffix.lower() in (".ckpt", ".pt", ".pth"):
        torch.save({}, path)
    else:
        path.touch()


@contextlib.contextmanager
def running_server(root: Path, base: Path, log_path: Path, timeout_s: float = 180.0, extra_args: tuple = ()):
    """ComfyUI's real server (main.py) on 127.0.0.1 with ``base`` as its base directory (models, custom
    nodes, outputs: nothing is written into the tree), and ``extra_args`` (e.g. --front-end-root); yields its
    URL once it answers, stops it after."""
    import json
    import socket
    import subprocess
    import time
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
             str(base), "--disable-api-nodes", "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
             *extra_args],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env_for_subprocess())
        try:
            deadline = time.time() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(url + "/system_stats", timeout=5) as r:
                        json.loads(r.read())
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError("ComfyUI server did not start:\n" + log_path.read_text()[-3000:])
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def shared_custom_node(name: str) -> Path:
    """Where an unmodified third-party pack lies for the tests: ``$ULTRAGEN_SHARED/custom_nodes/<name>``, by
    default ``../shared`` beside the pack (as .ci/run finds the ComfyUI trees). Read-only: never write there."""
    shared = Path(os.environ.get("ULTRAGEN_SHARED") or PACK_DIR.parent / "shared")
    return shared / "custom_nodes" / name


def env_for_subprocess() -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def captured() -> dict:
    """The CAPTURED dict of the test-node module that ComfyUI loaded."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(TEST_NODES) and hasattr(module, "CAPTURED"):
            return module.CAPTURED
    raise RuntimeError("the UltraGen test nodes were not loaded into ComfyUI")


def sampled_prompt(nodes: dict, unet_name: str, preset: str | None, key: str, cfg: float,
                   positive: str = "cond", negative: str = "cond") -> dict:
    """An API prompt: UNETLoader -> (UltraGen Attention Settings with ``preset`` -> UltraGen Apply; none when preset
    is None) -> KSampler (euler, 1 step, denoise 1) -> UltraGenTestCapture under ``key``. ``nodes`` holds the rest:
    the "latent" node and the conditioning nodes named by ``positive`` / ``negative``."""
    p = {"load": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}}, **nodes}
    model = ["load", 0]
    if preset is not None:
        p["settings"] = {"class_type": "UltraGenAttentionSettings", "inputs": {
            "window_t": 0, "window_h": 0, "window_w": 0, "shift": "auto", "global_branch": True,
            "global_compression": 0, "fusion": "band", "global_strength": 1.0, "full_attention_blocks": "",
            "start_percent": 0.0, "end_percent": 1.0, "preset": preset}}
        p["apply"] = {"class_type": "UltraGenApply", "inputs": {"model": model, "settings": ["settings", 0]}}
        model = ["apply", 0]
    p["sample"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 3, "steps": 1, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple",
        "positive": [positive, 0], "negative": [negative, 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": key}}
    return p


# --- tiny Wan VAEs (the tiled VAE decode tests) -------------------------------------------------------------

TINY_VAE_DIM = 8


@contextlib.contextmanager
def tiny_wan_vaes():
    """While active, comfy.sd.VAE builds Wan 2.1 / 2.2 VAEs with dim 8 (their real dims are hard-coded)."""
    import comfy.ldm.wan.vae as wan21
    import comfy.ldm.wan.vae2_2 as wan22
    real21, real22 = wan21.WanVAE, wan22.WanVAE
    wan21.WanVAE = lambda **kw: real21(**{**kw, "dim": TINY_VAE_DIM})
    wan22.WanVAE = lambda **kw: real22(**{**kw, "dim": TINY_VAE_DIM, "dec_dim": TINY_VAE_DIM})
    try:
        yield
    finally:
        wan21.WanVAE, wan22.WanVAE = real21, real22


def tiny_wan_vae_state_dict(version: str = "2.1", seed: int = 0, residual_scale: float = 0.1) -> dict[str, torch.Tensor]:
    """Random weights of a tiny Wan VAE ("2.1": 16 latent channels, 8x; "2.2": 48 channels, 16x).

    The decoder's residual branches (second conv of each block, attention output) are scaled by
    ``residual_scale``: plain random weights mix every pixel with the whole frame, trained VAEs act
    locally; 0.1 gives a decoder whose output depends mostly on nearby latents, like a trained one."""
    import comfy.ldm.wan.vae as wan21
    import comfy.ldm.wan.vae2_2 as wan22
    common = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])
    if version == "2.1":
        model = wan21.WanVAE(dim=TINY_VAE_DIM, z_dim=16, **common)
    else:
        model = wan22.WanVAE(dim=TINY_VAE_DIM, dec_dim=TINY_VAE_DIM, z_dim=48, **common)
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.state_dict().items():
        if "gamma" in name or ("norm" in name and name.endswith("weight")):
            t = torch.ones(p.shape)
        elif p.ndim >= 2:
            t = torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5
        else:
            t = 0.02 * torch.randn(p.shape, generator=gen)
        if name.startswith("decoder.") and (name.endswith("residual.6.weight") or name.endswith("proj.weight")):
            t = t * residual_scale
        sd[name] = t.contiguous()
    return sd


def save_tiny_wan_vae(runtime: ComfyRuntime, version: str = "2.1") -> str:
    """Write a tiny random Wan VAE into models/vae (load it inside tiny_wan_vaes()); returns its file name."""
    from safetensors.torch import save_file
    name = f"tiny_wan{version.replace('.', '')}_vae.safetensors"
    path = runtime.models_dir / "vae" / name
    if not path.exists():
        save_file(tiny_wan_vae_state_dict(version), str(path))
    return name


def pack_nodes(node_class_mappings: dict) -> dict:
    """The nodes the pack registers: those defined in its nodes/ folder. Test and bench nodes that tests load
    into the same runtime (UltraGenTest*, the fidelity bench's UltraGenFidelity*) are not the pack's."""
    import inspect

    def in_pack(cls) -> bool:
        try:
            return Path(inspect.getfile(cls)).resolve().is_relative_to(PACK_DIR / "nodes")
        except TypeError:
            return False
    return {name: cls for name, cls in node_class_mappings.items() if name.startswith("UltraGen") and in_pack(cls)}
