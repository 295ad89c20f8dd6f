"""Restoring trained runs for inference, under the CLIs (`generate`, `bench`, the demo).

    from wildactor_jax.infer import load_run
    run = load_run("gs://bucket/runs/actor")       # or a checkpoint folder .../checkpoints/400
    run.model, run.config, run.step

`infer.encoders` builds the VAE and text encoder a config names.
"""
from wildactor_jax.infer.restore import Run, checkpoint_location, load_run, mesh_for  # noqa: F401
