"""UltraGen checkpoint mode: the published weights (base Wan + hierarchical / global branches and gates).

keys: names and shapes as published; io: safe file loading; modules: the extras as nn.Modules;
forward: the published self-attention; loader: attach a file to a loaded model.
"""
from .forward import ultragen_attention
from .io import load_state_dict
from .keys import check_extras, split_checkpoint
from .loader import prepare_checkpoint
from .modules import UltraGenExtras

__all__ = ["ultragen_attention", "load_state_dict", "check_extras", "split_checkpoint", "prepare_checkpoint",
           "UltraGenExtras"]
