"""Few-step identity-preserving generation: a WildActor run distilled into a step LoRA.

    python -m wildactor_jax.distill --config configs/X.py[:arg] --workdir W \
        --config.distill.teacher_workdir=T

dmd (the math) -> setup (settings, teacher, student config, train state) -> step (the jitted
critic and generator updates) -> run (the loop, on train_lib's checkpointing and rules);
`__main__` is the CLI. The method and its sources: docs/method.md, "Few-step sampling".
"""
