"""``python -m lyra_sdk.cli``."""

from . import main

main()
