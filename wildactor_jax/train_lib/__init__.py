"""The training program's pieces (`python -m wildactor_jax.train` is the entry point):
flow (rectified-flow math), step (jitted train/eval steps), state (train state, optimiser,
shardings), checkpoint (Orbax manager), data_spec / synthetic_source (batches), flops (model
FLOPs, peaks, MFU), metrics / writers (throughput, HBM, loss log, clu), distributed."""
