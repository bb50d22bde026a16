"""`python -m chaos`: see `chaos.run`."""

from chaos.run import cli

cli(prog_name="python -m chaos")
