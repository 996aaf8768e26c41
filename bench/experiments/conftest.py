"""``python -m pytest bench/experiments``: the experiments import ultragen_core from the pack's folder."""
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
if str(PACK_DIR) not in sys.path:
    sys.path.insert(0, str(PACK_DIR))
