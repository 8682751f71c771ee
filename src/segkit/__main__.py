"""``python -m segkit`` runs the command-line interface."""

from segkit.cli import main

if __name__ == "__main__":
    main()
