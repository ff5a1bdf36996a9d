"""The peers a benchmark compares against, checked before any work: a missing one stops at once, naming what to install."""

from __future__ import annotations

import importlib.util
import sys

# What each peer engine imports, and where its requirements are (the peers install without their declared extras).
PEERS = {
    "kronfluence": ["kronfluence", "einconv", "einops", "opt_einsum", "accelerate"],
    "bergson": ["bergson", "datasets", "jaxtyping", "ml_dtypes", "simple_parsing", "torchopt", "peft"],
}
INSTALL = "pip install -r requirements-test.txt && pip install --no-deps -r requirements-nodeps.txt"


def require(*peers: str) -> None:
    """Exit with one line per peer whose modules are missing (before a benchmark spends minutes on its own engine)."""
    missing = {peer: [m for m in PEERS[peer] if importlib.util.find_spec(m) is None] for peer in peers}
    missing = {peer: modules for peer, modules in missing.items() if modules}
    if missing:
        lines = [f"  {peer}: missing {', '.join(modules)}" for peer, modules in missing.items()]
        sys.exit(
            "This benchmark compares against peers that are not installed:\n"
            + "\n".join(lines)
            + f"\nInstall them: {INSTALL}"
        )
