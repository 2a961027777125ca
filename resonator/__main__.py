from resonator.resonator import run

run()
