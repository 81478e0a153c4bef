"""Episodes for training and ground truth: from real simulators, or your own recordings.

Your own ``.npz`` recordings: :mod:`gym_worldmodel.sources.recordings`. Simulators are optional
extras (``pip install gym-worldmodel[simulators]``); nothing here is needed by env users at run
time. The on-disk format is in :mod:`gym_worldmodel.sources.episodes`.
"""
