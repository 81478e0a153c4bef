"""gym-worldmodel: generative video world models as Gymnasium environments.

Importing the package is cheap and touches no accelerator: submodules load on first use.

Row independence on CPU: MKL picks GEMM kernels by problem size, so by default a row's result can
differ in its last bits with the batch it sits in. Its conditional-numerical-reproducibility mode
(``MKL_CBWR=AUTO,STRICT``) removes that at no measured cost, but MKL reads it once, at its first
call. It is set here (unless the user set it), which works whenever ``gym_worldmodel`` is imported
before the first matrix product of the process; set it in the environment to be sure.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

import importlib  # noqa: E402
from typing import Any  # noqa: E402

from gym_worldmodel.envs import __all__ as _ENV_NAMES  # noqa: E402
from gym_worldmodel.envs.registration import register_envs  # noqa: E402

register_envs()

#: What a user reaches from the top (``from gym_worldmodel import WorldModelVectorEnv``), each
#: loaded on first use: the envs and their hooks, the model, and checkpoints on disk or the Hub.
_EXPORTS = {
    **dict.fromkeys(_ENV_NAMES, "gym_worldmodel.envs"),
    "WorldModel": "gym_worldmodel.models",
    "WorldModelConfig": "gym_worldmodel.models",
    "from_pretrained": "gym_worldmodel.hub",
    "save_pretrained": "gym_worldmodel.hub",
    "push_to_hub": "gym_worldmodel.hub",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
