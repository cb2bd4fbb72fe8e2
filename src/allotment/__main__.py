"""`python -m allotment` is the `allotment` command."""

from allotment.cli import app

app(prog_name="allotment")
