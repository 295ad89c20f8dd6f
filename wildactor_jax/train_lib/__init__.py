"""The training program's pieces (`python -m wildactor_jax.train` is the entry point):
flow (rectified-flow math), step (jitted train/eval steps), state (train state, optimiser,
shardings), checkpoint (Orbax manager), metrics / writers (throughput, HBM, loss log, clu), distributed."""
