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

from gym_worldmodel.envs.registration import register_envs  # noqa: E402

register_envs()
