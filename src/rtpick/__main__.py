"""`python -m rtpick` is the `rtpick` command."""

from rtpick.cli import main

main()
