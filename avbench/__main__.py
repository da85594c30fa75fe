from avbench.cli import app

app(prog_name="avbench")
