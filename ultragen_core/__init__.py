"""UltraGen core: pure PyTorch + einops. Never imports ComfyUI (tests import it without ComfyUI)."""
__version__ = "0.1.0"
