"""Training: windows from recorded episodes, losses, a resumable trainer, recipes.

Imports the models, sampling, memory and sources layers, and of the envs only the pose
kinematics and action-vector layout (``envs.pose``, ``envs.actions``), never the env classes
(docs/architecture.md's layer table).
"""
