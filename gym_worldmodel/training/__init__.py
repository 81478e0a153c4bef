"""Training: windows from recorded episodes, losses, a resumable trainer, recipes.

Imports the models, sampling and sources layers; never the envs.
"""
