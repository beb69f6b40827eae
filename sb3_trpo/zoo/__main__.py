"""``python -m sb3_trpo.zoo COMMAND [options]``: the same as the console script ``sb3-trpo-zoo``."""

from sb3_trpo.zoo.cli import main

main()
