"""``python -m segengine``: the command line."""

from .cli import main

main()
