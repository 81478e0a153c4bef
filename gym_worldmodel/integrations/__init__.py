"""Adapters from the native vector env to other RL libraries (optional dependencies).

* :mod:`gym_worldmodel.integrations.sb3`: ``WorldModelSB3VecEnv``, a Stable-Baselines3
  ``VecEnv`` over one batched :class:`~gym_worldmodel.envs.WorldModelVectorEnv`
  (``pip install gym-worldmodel[sb3]``).
* :mod:`gym_worldmodel.integrations.pettingzoo`: ``WorldModelParallelEnv``, a PettingZoo
  ``ParallelEnv`` whose agents are the rows of one batched vector env
  (``pip install gym-worldmodel[pettingzoo]``).

Import the submodule you need; this package imports neither library, so importing it is cheap
and works without them. The core (:mod:`gym_worldmodel.envs` and below) never imports this
package.
"""
