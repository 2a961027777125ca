from resonator.resonator import cli

cli()
