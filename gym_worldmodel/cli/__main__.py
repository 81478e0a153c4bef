"""``python -m gym_worldmodel.cli ...``: the ``gym-worldmodel`` command."""

from gym_worldmodel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
