"""Adapters to real simulators that record episodes for training and ground truth.

Simulators are optional extras (``pip install gym-worldmodel[simulators]``); nothing here is
needed by env users at run time. The on-disk format is in :mod:`gym_worldmodel.sources.episodes`.
"""
