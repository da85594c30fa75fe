from avbench.cli import entry

if __name__ == "__main__":  # media workers are spawned: they import this module without running it
    entry()
