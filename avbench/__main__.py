from avbench.cli import entry

entry()
